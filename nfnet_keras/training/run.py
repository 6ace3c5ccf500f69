"""The training run behind `train.py`: data, model, optimizer, fit, checkpoints, results.

`run(settings)` takes the resolved command-line settings (a dict with the keys of
`train.py`'s flags). Import this module only after `KERAS_BACKEND` is set: the
Keras backend is fixed at import. The input pipeline is tf.data (TF-only) on every
backend; the model and the training step run on the chosen backend.

Resuming: every `chunk` steps (a Keras "epoch" here) the complete training state
(model weights and RNG states, optimizer slots, EMA, step) is written atomically to
`<model_dir>/checkpoint.npz`. A restarted run restores it and rebuilds the input
stream at that step (every augmentation draw is keyed by the example's position),
so it ends with the same weights as an uninterrupted run.
"""

import json
import math
import os
import time

import keras
import numpy as np
import tensorflow as tf

import nfnet_keras
from nfnet_keras.training import callbacks as nf_callbacks
from nfnet_keras.weights import formats
from nfnet_keras.data import augment, sources
from nfnet_keras.training import distribution
from nfnet_keras.data import pipeline as input_pipeline
from nfnet_keras.models import variants
from nfnet_keras.training.losses import NFNetCrossEntropy
from nfnet_keras.training.optimizers import NFNetSGD
from nfnet_keras.preprocessing import MEAN_RGB, STDDEV_RGB
from nfnet_keras.training.schedules import WarmupCosineDecay
from nfnet_keras.training.sam import NFNetTrainer

CHECKPOINT = "checkpoint.npz"
# Settings that define a run: a model_dir written with other values holds a different run.
RUN_KEYS = (
    "variant", "dataset", "global_batch_size", "epochs", "steps", "learning_rate", "warmup_epochs",
    "clipping", "weight_decay", "label_smoothing", "ema_decay", "sam_rho", "stochdepth_rate", "drop_rate",
    "mixed_precision", "seed", "train_image_size", "eval_image_size", "weights", "checkpoint_every",
    "randaugment", "mixup_cutmix", "crop_area_min",
)  # fmt: skip


class RunError(ValueError):
    """A problem that stops the run with a message (bad input, a different run, NaN loss)."""


def run(settings):
    """Trains, evaluates and saves; returns the results dict (also written as results.json)."""
    started = time.time()
    backend = keras.backend.backend()
    devices = None
    if backend == "jax":
        tf.config.set_visible_devices([], "GPU")  # tf.data only: leave the accelerators to JAX
    elif settings.get("cpu_devices"):
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * settings["cpu_devices"]
        )
        devices = [f"/cpu:{i}" for i in range(settings["cpu_devices"])]

    # ---- everything that can be wrong is checked before training starts -------------
    config = variants.get_config(settings["variant"])
    train_size = settings["train_image_size"] or config["train_imsize"]
    eval_size = settings["eval_image_size"] or config["test_imsize"]
    engine = distribution.get_distribution(backend=backend, tpu=settings["tpu"], devices=devices)
    engine.check_batch_size(settings["global_batch_size"])
    source = sources.load_source(
        settings["dataset"],
        data_dir=settings["data_dir"],
        manual_dir=settings["manual_dir"],
        skip_corrupt=settings["skip_corrupt"],
    )
    if source.skipped:
        print(f"Skipped {len(source.skipped)} undecodable images (--skip_corrupt).")
    num_train = source.num_examples("train")
    steps_per_epoch = num_train // settings["global_batch_size"]
    if steps_per_epoch < 1:
        raise RunError(f"{num_train} training images are fewer than one batch of {settings['global_batch_size']}")
    total_steps = settings["steps"] or settings["epochs"] * steps_per_epoch
    chunk = min(settings["checkpoint_every"] or min(steps_per_epoch, 1000), total_steps)
    num_chunks = math.ceil(total_steps / chunk)
    total_steps = num_chunks * chunk

    warmup_epochs = settings["warmup_epochs"]
    if warmup_epochs * steps_per_epoch >= total_steps:
        warmup_epochs = 0.5 * total_steps / steps_per_epoch
        print(f"Warmup shortened to {warmup_epochs:g} epochs: it must end before the last step.")

    model_dir = settings["model_dir"]
    run_config = {key: settings[key] for key in RUN_KEYS}
    run_config["dataset_examples"] = num_train
    start_step = prepare_model_dir(model_dir, run_config)

    if settings["mixed_precision"] != "none":
        keras.config.set_dtype_policy({"bf16": "mixed_bfloat16", "fp16": "mixed_float16"}[settings["mixed_precision"]])
    keras.utils.set_random_seed(settings["seed"])

    # ---- data -----------------------------------------------------------------------
    randaugment = config["randaugment"] if settings["randaugment"] else None
    translate_const, cutout_const = augment.scaled_randaugment_constants(train_size)
    def train_dataset(first_step):
        return input_pipeline.make_train_dataset(
            source,
            settings["global_batch_size"],
            train_size,
            randaugment=randaugment,
            seed=settings["seed"],
            num_hosts=engine.num_hosts,
            host_index=engine.process_index,
            mixup_cutmix=settings["mixup_cutmix"],
            crop_area_range=(settings["crop_area_min"], 1.0),
            translate_const=translate_const,
            cutout_const=cutout_const,
            start_step=first_step,
            verify=False,
        )

    # The stream is a pure function of (seed, step): a resumed run rebuilds it at start_step.
    train_ds = train_dataset(start_step)
    eval_ds = input_pipeline.make_eval_dataset(
        source,
        settings["eval_batch_size"] or settings["global_batch_size"],
        eval_size,
        num_hosts=engine.num_hosts,
        host_index=engine.process_index,
        crop_padding=config["eval_padding"],
        verify=False,
    )

    # ---- model, optimizer, trainer --------------------------------------------------
    with engine.scope():
        model = nfnet_keras.NFNet(
            settings["variant"],
            weights=settings["weights"],
            classes=source.num_classes,
            input_shape=(None, None, 3),
            classifier_activation=None,
            stochdepth_rate=settings["stochdepth_rate"],
            drop_rate=settings["drop_rate"],
            seed=settings["seed"],
        )
        schedule = WarmupCosineDecay(
            base_learning_rate=settings["learning_rate"],
            global_batch_size=settings["global_batch_size"],
            steps_per_epoch=steps_per_epoch,
            total_steps=total_steps,
            warmup_epochs=warmup_epochs,
        )
        optimizer = NFNetSGD(
            learning_rate=schedule,
            weight_decay=settings["weight_decay"],
            clipping=settings["clipping"] or None,
            ema_decay=settings["ema_decay"] or None,
        )
        trainer = NFNetTrainer(model, sam_rho=settings["sam_rho"])
        trainer.compile(
            optimizer=optimizer,
            loss=NFNetCrossEntropy(label_smoothing=settings["label_smoothing"]),
            metrics=["accuracy"],
        )
        trainer.optimizer.build(trainer.trainable_variables)
        if start_step:
            restore_state(trainer, os.path.join(model_dir, CHECKPOINT))
            print(f"Resumed from step {start_step} of {total_steps} ({os.path.join(model_dir, CHECKPOINT)}).")

    print(
        f"NFNet-{settings['variant']}: {model.count_params():,} parameters; {engine.num_replicas} replica(s) "
        f"({engine.kind}, {backend}); {num_train} training images, {source.num_classes} classes; "
        f"{train_size}/{eval_size} px; batch {settings['global_batch_size']}; peak lr {schedule.peak_value:g}; "
        f"{total_steps} steps, checkpoint every {chunk}."
    )
    if engine.is_chief and start_step == 0:
        log_augmented_images(train_dataset(0), os.path.join(model_dir, "tensorboard"))

    timer = Throughput(chunk * settings["global_batch_size"])
    callbacks = [keras.callbacks.TerminateOnNaN(), timer, LogOptimizer()]
    if settings["ema_decay"]:
        callbacks.append(nf_callbacks.EMAEvaluation(eval_ds))
    if engine.is_chief:
        callbacks += [
            Checkpoint(model_dir, chunk),
            keras.callbacks.CSVLogger(os.path.join(model_dir, "history.csv"), append=True),
            keras.callbacks.TensorBoard(os.path.join(model_dir, "tensorboard"), update_freq="epoch"),
        ]
    with engine.scope():
        trainer.fit(
            train_ds,
            epochs=num_chunks,
            initial_epoch=start_step // chunk,
            steps_per_epoch=chunk,
            validation_data=eval_ds,
            callbacks=callbacks,
            verbose=settings["verbose"],
        )
    if not all(np.isfinite(np.asarray(keras.ops.convert_to_numpy(v))).all() for v in model.trainable_variables):
        raise RunError(
            "The loss became NaN or inf and training stopped. The last good checkpoint is kept in "
            f"{os.path.join(model_dir, CHECKPOINT)}; lower --learning_rate or check --clipping."
        )

    # ---- final evaluation and artifacts ---------------------------------------------
    with engine.scope():
        raw = trainer.evaluate(eval_ds, verbose=0, return_dict=True)
        ema = None
        if settings["ema_decay"]:
            with nf_callbacks.ema_weights(trainer):
                ema = trainer.evaluate(eval_ds, verbose=0, return_dict=True)
    results = {
        "variant": settings["variant"],
        "dataset": settings["dataset"],
        "backend": backend,
        "replicas": engine.num_replicas,
        "steps": total_steps,
        "test_accuracy": float(raw["accuracy"]),
        "test_loss": float(raw["loss"]),
        "ema_test_accuracy": float(ema["accuracy"]) if ema else None,
        "train_images_per_second": timer.images_per_second(),
        "wall_time_seconds": time.time() - started,
    }
    if engine.is_chief:
        model.save(os.path.join(model_dir, "model.keras"))
        if settings["ema_decay"]:
            nf_callbacks.save_ema_weights(trainer, os.path.join(model_dir, "ema.weights.h5"), target=model)
        with open(os.path.join(model_dir, "results.json"), "w") as handle:
            json.dump(results, handle, indent=2)
    summary = f"\nTest accuracy {results['test_accuracy']:.4f}"
    if ema:
        summary += f" (EMA weights: {results['ema_test_accuracy']:.4f})"
    print(summary)
    written = "model.keras, " + ("ema.weights.h5, " if ema else "") + "results.json, history.csv and tensorboard/"
    print(
        f"Throughput {results['train_images_per_second']:.1f} training images/s; wall time "
        f"{results['wall_time_seconds']:.0f} s. Wrote {written} to {model_dir}."
    )
    return results


def prepare_model_dir(model_dir, run_config):
    """Creates `model_dir`, or checks that it holds this run; returns the step to resume from."""
    os.makedirs(model_dir, exist_ok=True)
    config_path = os.path.join(model_dir, "run_config.json")
    if os.path.exists(config_path):
        with open(config_path) as handle:
            previous = json.load(handle)
        differences = sorted(k for k in set(previous) | set(run_config) if previous.get(k) != run_config.get(k))
        if differences:
            details = "; ".join(f"{k}: {previous.get(k)!r} there, {run_config.get(k)!r} now" for k in differences)
            raise RunError(
                f"--model_dir {model_dir} holds a different run ({details}). "
                "Use another --model_dir, or the same flags to resume."
            )
    else:
        with open(config_path, "w") as handle:
            json.dump(run_config, handle, indent=2)
    path = os.path.join(model_dir, CHECKPOINT)
    if not os.path.exists(path):
        return 0
    return int(formats.read_npz(path)["step"])


def state_variables(trainer):
    """Everything a resumed run needs: weights, RNG states, optimizer slots, EMA, step."""
    return list(trainer.variables) + list(trainer.optimizer.variables)


def restore_state(trainer, path):
    arrays = formats.read_npz(path)
    variables = state_variables(trainer)
    paths = [v.path for v in variables]
    if len(variables) != int(arrays["count"]) or list(arrays["paths"]) != paths:
        raise RunError(
            f"{path} holds {int(arrays['count'])} variables, the model {len(variables)}, or their names differ: "
            "it belongs to a different run"
        )
    for i, variable in enumerate(variables):
        value = arrays[f"v{i}"]
        if tuple(value.shape) != tuple(variable.shape):
            raise RunError(f"{path}: variable {i} ({variable.path}) has shape {value.shape}, expected {variable.shape}")
        variable.assign(value)


def log_augmented_images(dataset, log_dir):
    """Writes 16 images of the first augmented batch to TensorBoard."""
    images, _ = next(iter(dataset.take(1)))
    pixels = tf.clip_by_value(images[:16] * STDDEV_RGB + MEAN_RGB, 0.0, 255.0) / 255.0
    with tf.summary.create_file_writer(os.path.join(log_dir, "train")).as_default():
        tf.summary.image("augmented_batch", pixels, step=0, max_outputs=16)


class Checkpoint(keras.callbacks.Callback):
    """Writes the whole training state atomically every chunk; never a NaN state."""

    def __init__(self, model_dir, chunk):
        super().__init__()
        self.path = os.path.join(model_dir, CHECKPOINT)
        self.chunk = chunk

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None or not np.isfinite(loss) or self.model.stop_training:
            return
        variables = state_variables(self.model)
        arrays = {f"v{i}": np.asarray(keras.ops.convert_to_numpy(v)) for i, v in enumerate(variables)}
        if not all(np.isfinite(a).all() for a in arrays.values() if a.dtype.kind == "f"):
            return  # the weights diverged during the chunk: keep the previous checkpoint
        arrays["count"] = np.asarray(len(variables))
        arrays["paths"] = np.asarray([v.path for v in variables])
        arrays["step"] = np.asarray((epoch + 1) * self.chunk)
        formats.write_npz_atomic(self.path, arrays)


class Throughput(keras.callbacks.Callback):
    """Training images per second over every chunk after the first (which compiles)."""

    def __init__(self, images_per_chunk):
        super().__init__()
        self.images_per_chunk = images_per_chunk
        self.seconds = []
        self.start = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.time()

    def on_test_begin(self, logs=None):  # the chunk's validation is not training time
        self.seconds.append(time.time() - self.start)

    def images_per_second(self):
        seconds = self.seconds[1:] or self.seconds
        return len(seconds) * self.images_per_chunk / sum(seconds) if seconds else float("nan")


class LogOptimizer(keras.callbacks.Callback):
    """Adds the learning rate and the AGC clip fraction to the epoch logs (TensorBoard, CSV)."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        optimizer = getattr(self.model.optimizer, "inner_optimizer", self.model.optimizer)
        lr = optimizer.learning_rate
        logs["learning_rate"] = float(keras.ops.convert_to_numpy(lr))
        fraction = getattr(optimizer, "clip_fraction", None)
        if fraction is not None:
            logs["clip_fraction"] = float(keras.ops.convert_to_numpy(fraction))
