"""What a `train.py` run does, worked out from its settings before anything is built.

`check_settings(settings)` checks the integer flags; `make_plan(settings,
spec, num_train)` resolves the image sizes, the step count, the checkpoint
interval and the warmup into a `RunPlan`. Training is cut into
chunks of `chunk` steps (a Keras "epoch" each); a checkpoint is written at
the end of every chunk. `--steps N` trains exactly N steps: when N is not a
multiple of the chunk the last chunk is shorter, and `RunPlan.fit_calls`
trains it with a second `fit` call.

Pure Python; imports without TensorFlow.
"""

import dataclasses
import math
import typing

from nfnet_keras.checks import check_integer
from nfnet_keras.models import registry

__all__ = ["RUN_KEYS", "FitCall", "RunError", "RunPlan", "check_settings", "make_plan", "run_config"]

# Settings that define a run: a model_dir written with other values holds a different run.
RUN_KEYS = (
    "variant", "dataset", "global_batch_size", "epochs", "steps", "learning_rate", "warmup_epochs",
    "clipping", "weight_decay", "label_smoothing", "ema_decay", "sam_rho", "stochdepth_rate", "drop_rate",
    "mixed_precision", "seed", "train_image_size", "eval_image_size", "weights", "checkpoint_every",
    "randaugment", "mixup_cutmix", "crop_area_min",
)  # fmt: skip

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
        """The `fit` calls that train from `start_step` (a chunk end, or 0) to `total_steps`.

        One call for the full chunks left, one more for a shorter last chunk
        (Keras gives every epoch of a call the same length).
        """
        full_chunks = self.total_steps // self.chunk
        calls = []
        if start_step < full_chunks * self.chunk:
            calls.append(FitCall(start_step // self.chunk, full_chunks, self.chunk, start_step))
        last = self.total_steps - full_chunks * self.chunk
        if last and start_step < self.total_steps:
            calls.append(FitCall(full_chunks, full_chunks + 1, last, full_chunks * self.chunk))
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


def run_config(settings, num_train):
    """The values that identify a run (stored in its run directory)."""
    config = {key: settings[key] for key in RUN_KEYS}
    config["dataset_examples"] = num_train
    return config
