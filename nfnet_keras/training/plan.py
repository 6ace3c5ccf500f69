"""What a `train.py` run does, worked out from its settings before anything is built.

`check_settings(settings)` checks the integer flags; `make_plan(settings,
spec, num_train)` resolves the image sizes, the step count, the checkpoint
interval and the warmup into a `RunPlan`. Training is cut into chunks of
`chunk` steps (a Keras "epoch" each); a checkpoint is written at the end of
every chunk. `--steps N` trains exactly N steps: when N is not a multiple of
the chunk the last chunk is shorter, and `RunPlan.fit_calls` trains it with a
second `fit` call.

`run_config(settings, num_train, class_names)` identifies a run: its
`TRAINING_KEYS` and the identity of its training data (the number of examples
and the class names, not the data's location). `config_differences` compares
two, so that a run directory resumes only under the same training, while the
`OTHER_KEYS` (devices, logging, the checkpoint interval, paths) may change.

Pure Python; imports without TensorFlow.
"""

import dataclasses
import math
import typing

from nfnet_keras.checks import check_integer
from nfnet_keras.models import registry

__all__ = [
    "OTHER_KEYS",
    "TRAINING_KEYS",
    "FitCall",
    "RunError",
    "RunPlan",
    "check_settings",
    "config_differences",
    "make_plan",
    "run_config",
]

# Flags that change the training: a model_dir trained with other values holds a different run.
TRAINING_KEYS = (
    "variant", "global_batch_size", "epochs", "steps", "learning_rate", "final_learning_rate", "warmup_epochs", "clipping",
    "weight_decay", "label_smoothing", "ema_decay", "sam_rho", "stochdepth_rate", "drop_rate",
    "mixed_precision", "seed", "train_image_size", "eval_image_size", "weights", "randaugment",
    "mixup_cutmix", "crop_area_min", "validation_fraction",
)  # fmt: skip

# Flags that may change between a run and its resume. The backend is one: a checkpoint written on
# TensorFlow restores on JAX and back (tests/training/test_checkpoint.py), although the two draw
# dropout and stochastic-depth masks differently. The data's location is one too: the run config
# holds the data's identity instead (`run_config`).
OTHER_KEYS = (
    "cpu_devices", "checkpoint_every", "verbose", "eval_batch_size", "backend", "tpu", "dataset",
    "data_dir", "manual_dir", "skip_corrupt", "model_dir", "preset", "jit_compile",
)  # fmt: skip

# The training data's identity in a run config: not flags, so named in words in a refusal.
_DATA_KEYS = {"dataset_examples": "training examples", "class_names": "class names"}

# Training keys that a run_config.json written before they existed lacks, with the value that
# means what those runs did: evaluate on the dataset's own split, hold nothing out of training.
_IMPLIED_BY_OLDER_RUNS = {"validation_fraction": None}

# Integer flags: (name, smallest value, None allowed).
_INTEGER_SETTINGS = (
    ("global_batch_size", 1, False),
    ("epochs", 1, False),
    ("steps", 1, True),
    ("checkpoint_every", 1, True),
    ("eval_batch_size", 1, True),
    ("train_image_size", 1, True),
    ("eval_image_size", 1, True),
    ("cpu_devices", 1, True),
    ("seed", 0, False),
    ("verbose", 0, False),
)

# Default checkpoint interval: one epoch, but at least every this many steps.
MAX_DEFAULT_CHUNK = 1000


class RunError(ValueError):
    """A problem that stops the run with a message (bad input, a different run, NaN loss)."""


class FitCall(typing.NamedTuple):
    """The arguments of one `fit` call: chunks `initial_epoch` .. `epochs - 1` of `steps_per_epoch` steps."""

    initial_epoch: int
    epochs: int
    steps_per_epoch: int
    first_step: int


@dataclasses.dataclass(frozen=True)
class RunPlan:
    """The resolved shape of a run.

    Attributes:
        spec: the registry entry of `--variant`.
        train_size: training image side.
        eval_size: evaluation image side.
        steps_per_epoch: full batches in one pass over the training split.
        total_steps: optimizer steps of the whole run (`--steps`, else `--epochs` epochs).
        chunk: steps between checkpoints (the last chunk may be shorter).
        warmup_epochs: the warmup, shortened when it would not end before the last step.
        warmup_shortened: whether it was shortened.
    """

    spec: registry.ModelSpec
    train_size: int
    eval_size: int
    steps_per_epoch: int
    total_steps: int
    chunk: int
    warmup_epochs: float
    warmup_shortened: bool

    @property
    def num_chunks(self):
        """Chunks in the run, the shorter last one included."""
        return math.ceil(self.total_steps / self.chunk)

    def chunk_end(self, index):
        """The step reached at the end of chunk `index` (0-based)."""
        return min((index + 1) * self.chunk, self.total_steps)

    def fit_calls(self, start_step):
        """The `fit` calls that train from `start_step` (any step, e.g. after a preemption) to `total_steps`.

        One call finishes a chunk begun before a stop, one trains the full
        chunks left, one more a shorter last chunk (Keras gives every epoch
        of a call the same length).
        """
        calls = []
        step = start_step
        if step % self.chunk and step < self.total_steps:
            index = step // self.chunk
            calls.append(FitCall(index, index + 1, self.chunk_end(index) - step, step))
            step = self.chunk_end(index)
        full_chunks = self.total_steps // self.chunk
        if step < full_chunks * self.chunk:
            calls.append(FitCall(step // self.chunk, full_chunks, self.chunk, step))
            step = full_chunks * self.chunk
        if step < self.total_steps:
            calls.append(FitCall(full_chunks, full_chunks + 1, self.total_steps - step, step))
        return calls


def check_settings(settings):
    """Checks the integer settings of `train.py`.

    Raises:
        RunError: naming the first flag that is not an integer in its range.
    """
    for name, minimum, allow_none in _INTEGER_SETTINGS:
        check_integer(settings[name], f"--{name}", minimum=minimum, error=RunError, allow_none=allow_none)


def make_plan(settings, spec, num_train):
    """The `RunPlan` of `settings` (the flags of `train.py`) on `num_train` training images.

    Args:
        settings: the resolved flags of `train.py`.
        spec: the `ModelSpec` of `settings["variant"]` (`nfnet_keras.models.get_spec`).
        num_train: images in the training split.

    Raises:
        RunError: for a bad integer setting or fewer images than one batch.
    """
    check_settings(settings)
    batch = settings["global_batch_size"]
    steps_per_epoch = num_train // batch
    if steps_per_epoch < 1:
        raise RunError(f"{num_train} training images are fewer than one batch of {batch}")
    total_steps = settings["steps"] or settings["epochs"] * steps_per_epoch
    chunk = min(settings["checkpoint_every"] or min(steps_per_epoch, MAX_DEFAULT_CHUNK), total_steps)
    warmup_epochs = settings["warmup_epochs"]
    shortened = warmup_epochs * steps_per_epoch >= total_steps
    if shortened:
        warmup_epochs = 0.5 * total_steps / steps_per_epoch
    return RunPlan(
        spec=spec,
        train_size=settings["train_image_size"] or spec.config["train_imsize"],
        eval_size=settings["eval_image_size"] or spec.config["test_imsize"],
        steps_per_epoch=steps_per_epoch,
        total_steps=total_steps,
        chunk=chunk,
        warmup_epochs=warmup_epochs,
        warmup_shortened=shortened,
    )


def run_config(settings, num_train, class_names):
    """The values that identify a run (stored in its run directory as `run_config.json`).

    Args:
        settings: the resolved flags of `train.py`; only the `TRAINING_KEYS` are kept.
        num_train: examples in the training split.
        class_names: the training data's class names, in label order.

    Returns:
        A flat, JSON-serialisable dict: the training flags, `dataset_examples` and `class_names`.
    """
    config = {key: settings[key] for key in TRAINING_KEYS}
    config["dataset_examples"] = int(num_train)
    config["class_names"] = [str(name) for name in class_names]
    return config


def config_differences(stored, config):
    """How the run config `stored` (read from a run directory) differs from `config`.

    Only keys that both hold are compared, so that a config written by an earlier
    version (which also held `dataset` and `checkpoint_every`, and lacked
    `class_names`) still matches a run with the same training; a training key that
    the earlier version lacked must hold the value that means what it did.

    Returns:
        One phrase per difference, e.g. `--steps 5 there, 6 now`, in `config`'s key order.
    """
    differences = []
    for key, value in config.items():
        if key in stored:
            if stored[key] != value:
                differences.append(_difference(key, stored[key], value))
        elif key in _IMPLIED_BY_OLDER_RUNS and value != _IMPLIED_BY_OLDER_RUNS[key]:
            differences.append(f"--{key} {_IMPLIED_BY_OLDER_RUNS[key]!r} there (not recorded), {value!r} now")
    return differences


def _difference(key, before, now):
    if key == "class_names" and isinstance(before, list):
        return f"class names: {_first_difference(before, now)}"
    return f"{_DATA_KEYS.get(key, f'--{key}')} {before!r} there, {now!r} now"


def _first_difference(before, now):
    """Where two lists of class names part (a thousand names would not fit in one line)."""
    index = next((i for i, (a, b) in enumerate(zip(before, now)) if a != b), min(len(before), len(now)))
    at = [repr(names[index]) if index < len(names) else "none" for names in (before, now)]
    return f"{len(before)} there, {len(now)} now, first different at {index}: {at[0]} there, {at[1]} now"
