"""Train an NFNet with the paper's recipe.

With no flags: trains the small `micro` NFNet on the CIFAR-10 sample bundled with the
package (offline, a few minutes on a 2-core CPU), evaluates the raw and the EMA
weights, and writes the model, EMA weights, results.json, history.csv and TensorBoard
logs to runs/default/. The defaults suit that short run (20 epochs, lr 0.4 per 256
images, 1 warmup epoch, no MixUp/CutMix); `--preset paper` gives the paper's values.

    python train.py
    python train.py --preset paper --manual_dir ~/imagenet            # ImageNet, F0, the paper's values
    python train.py --variant F0 --weights imagenet --dataset folder:/data/flowers \
        --train_image_size 192 --eval_image_size 256 --epochs 10 --learning_rate 0.01

Stopping and resuming: SIGTERM (a preemption notice) or Ctrl-C finish the current
step, write the checkpoint at that step and exit with status 75; running the same
command again resumes from it and ends with the same weights as an uninterrupted
run. After a SIGKILL or a crash the rerun resumes from the last periodic
checkpoint (--checkpoint_every). Flags that do not change the training
(--cpu_devices, --checkpoint_every, --verbose, --eval_batch_size, the data's
location) may differ on the rerun.

An error is one line on stderr and exit status 1; set NFNET_KERAS_TRACEBACK=1 for the traceback.
"""

import os
import sys

from absl import app, flags, logging

FLAGS = flags.FLAGS
_NAMES = []


def _define(kind, name, default, help_text, enum_values=None):
    if kind == "enum":
        flags.DEFINE_enum(name, default, enum_values, help_text)
    else:
        getattr(flags, f"DEFINE_{kind}")(name, default, help_text)
    _NAMES.append(name)


_define(
    "string",
    "variant",
    "micro",
    "A model name of nfnet_keras.model_names() (nfnet_f0, nfnet_micro) "
    "or a variant spelling (F0, F0+, micro, nano).",
)
_define(
    "string",
    "dataset",
    "cifar10_sample",
    "cifar10_sample (bundled), tfds:NAME (e.g. tfds:imagenet2012 with --manual_dir), "
    "folder:PATH (class/*.jpg, or train/ and val/ subfolders), or an .npz of JPEG bytes.",
)
_define(
    "float",
    "validation_fraction",
    None,
    "Hold out this fraction of the training images (stratified, seeded by --seed) and evaluate on it "
    "(default: the dataset's own evaluation split, or 0.1 when it has none, e.g. a flat class-folder dataset).",
)
_define("string", "data_dir", None, "TFDS data directory.")
_define("string", "manual_dir", None, "TFDS manual_dir (imagenet2012: the ILSVRC2012 tar files).")
_define("integer", "global_batch_size", 64, "Batch size summed over all devices and hosts.")
_define("integer", "epochs", 20, "Training epochs (ignored when --steps is set).")
_define("integer", "steps", None, "Training steps, exactly (overrides --epochs).")
_define("float", "learning_rate", 0.4, "Learning rate per 256 images: peak lr = this * global_batch_size / 256 (paper: 0.1).")
_define("float", "final_learning_rate", 0.0, "Learning rate the cosine decay ends at (absolute, not scaled by batch).")
_define("float", "warmup_epochs", 1.0, "Linear warmup from 0 over this many epochs, then cosine decay to 0 (paper: 5).")
_define("float", "clipping", 0.01, "Adaptive gradient clipping threshold (0 disables AGC).")
_define("float", "weight_decay", 2e-5, "Coupled L2 weight decay (none on gains, biases and skip gains).")
_define("float", "label_smoothing", 0.1, "Label smoothing, applied after MixUp/CutMix.")
_define("float", "ema_decay", 0.99999, "Weight EMA decay (with the warm-up min(decay, (1+t)/(10+t))); 0: no EMA.")
_define("float", "sam_rho", 0.0, "Sharpness-aware minimisation radius (0: off; the paper used SAM for F6).")
_define("float", "stochdepth_rate", 0.25, "Stochastic-depth rate of the last block (block i of N: rate*i/N).")
_define("float", "drop_rate", None, "Dropout before the classifier (default: the variant's).")
_define("enum", "mixed_precision", "none", "Mixed precision: none, bf16 or fp16 (GPU).", enum_values=["none", "bf16", "fp16"])
_define(
    "enum",
    "jit_compile",
    "auto",
    "XLA for the training step: auto (Keras' choice; on a TensorFlow CPU: no XLA), true or false. "
    "With TensorFlow on a CPU, true made NFNet-F0's paper step 1.2x faster (benchmarks/RESULTS.md).",
    enum_values=["auto", "true", "false"],
)
_define("enum", "backend", None, "Keras backend (default: $KERAS_BACKEND or tensorflow).", enum_values=["tensorflow", "jax"])
_define("integer", "cpu_devices", None, "Split the CPU into N devices (data parallel over them; for tests and demos).")
_define("string", "tpu", None, "TPU name or address for TPUStrategy (TF backend; untested, see README).")
_define("string", "model_dir", "runs/default", "Where checkpoints, logs and the final model go.")
_define("integer", "seed", 0, "Seed for initialisation, data order and augmentation.")
_define("integer", "train_image_size", None, "Training resolution (default: the variant's train size).")
_define("integer", "eval_image_size", None, "Evaluation resolution (default: the variant's test size).")
_define(
    "enum",
    "preset",
    None,
    "paper: the paper's ImageNet recipe of the --variant's family (default variant F0) for every flag not given "
    "(nfnet_keras.training.presets).",
    enum_values=["paper"],
)
_define("string", "weights", None, "Initial weights, 'imagenet' or a path, for fine-tuning (the classifier is new).")
_define(
    "integer",
    "checkpoint_every",
    None,
    "Steps between checkpoints (default: one epoch, at most 1000); the last interval may be shorter.",
)
_define("integer", "eval_batch_size", None, "Evaluation batch size (default: --global_batch_size).")
_define("float", "crop_area_min", 0.08, "Smallest area fraction of the Inception-style random crop (paper: 0.08).")
_define("boolean", "randaugment", True, "RandAugment with the variant's (layers, magnitude).")
_define("boolean", "mixup_cutmix", False, "MixUp on half of each batch and CutMix on the other half (paper: on).")
_define("boolean", "skip_corrupt", False, "Skip undecodable images (and report the count) instead of failing.")
_define("integer", "verbose", 1, "Keras progress output: 0 silent, 1 progress bar, 2 one line per checkpoint.")

def resolve_settings():
    """Explicit flags, then the preset's values, then the flag defaults.

    Imports Keras: call it after `KERAS_BACKEND` is set.
    """
    from nfnet_keras.models import registry  # noqa: PLC0415  (after KERAS_BACKEND is set)
    from nfnet_keras.training import presets  # noqa: PLC0415

    settings = {name: FLAGS[name].value for name in _NAMES}
    if settings["preset"] == "paper":
        if not FLAGS["variant"].present:
            settings["variant"] = "F0"
        for key, value in presets.paper_preset(registry.get_spec(settings["variant"])).items():
            if not FLAGS[key].present:
                settings[key] = value
    return settings


def prepare_process_environment():
    """Puts into the environment what Keras, TensorFlow and JAX read when they start.

    `--backend` and `--cpu_devices` (neither has a preset value) and two
    TensorFlow settings the user's environment may override: its start-up INFO
    lines off, and its pooling CPU allocator on. Without the pool, malloc hands
    the step's large freed activations back to the operating system, and they
    page-fault anew on every step (NFNet-F0 paper step +7 % img/s with the pool,
    benchmarks/RESULTS.md).
    """
    if FLAGS.backend:
        os.environ["KERAS_BACKEND"] = FLAGS.backend
    if FLAGS.cpu_devices and os.environ.get("KERAS_BACKEND") == "jax":
        flag = f"--xla_force_host_platform_device_count={FLAGS.cpu_devices}"
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flag).strip()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    prepare_process_environment()
    logging.set_verbosity(logging.WARNING)  # JAX's INFO lines (distributed service, absent TPU)
    # After KERAS_BACKEND is set: importing nfnet_keras imports Keras.
    from nfnet_keras import cli  # noqa: PLC0415
    from nfnet_keras.training import distribution, preemption  # noqa: PLC0415
    from nfnet_keras.training import run as training_run  # noqa: PLC0415

    def train():
        try:
            training_run.run(resolve_settings())
        except preemption.Stopped as stop:
            print(stop, file=sys.stderr)
            return preemption.STOPPED_EXIT_CODE
        return 0

    status = cli.run_main(train)
    if status and distribution.process_count() > 1:
        # JAX's exit handler waits for every host, and after an error some may be gone: leave now.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    return status


if __name__ == "__main__":
    app.run(lambda argv: sys.exit(main(argv)))
