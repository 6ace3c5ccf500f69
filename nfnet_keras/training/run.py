"""The training run behind `train.py`: data, model, optimizer, fit, checkpoints, results.

`run(settings)` takes the resolved command-line settings (a dict with the keys of
`train.py`'s flags). Import this module only after `KERAS_BACKEND` is set: the
Keras backend is fixed at import. TensorFlow is required: the input pipeline is
tf.data on every backend; the model and the training step run on the chosen backend.

The parts: `nfnet_keras.training.plan` (sizes, steps, checkpoint chunks),
`nfnet_keras.training.checkpoint` (the resumable state and the run
directory's identity), `nfnet_keras.training.callbacks` (checkpoint,
throughput and optimizer logging) and `nfnet_keras.training.ema` (evaluating
and saving the EMA weights). Every file name of the run directory comes from
`nfnet_keras.weights.run_directory`.

Resuming: every chunk of steps (a Keras "epoch" here) the complete training state
(model weights and RNG states, optimizer slots, EMA, step) is written atomically to
the run directory's checkpoint. A restarted run restores it and rebuilds the input
stream at that step (every augmentation draw is keyed by the example's position),
so it ends with the same weights as an uninterrupted run.
"""

import contextlib
import json
import os
import time

import keras
import numpy as np
import tensorflow as tf

from nfnet_keras.data import augment, sources
from nfnet_keras.data import pipeline as input_pipeline
from nfnet_keras.models import registry
from nfnet_keras.training import checkpoint, distribution, ema, preemption, plan as run_plan
from nfnet_keras.training.callbacks import Checkpoint, LogOptimizer, Throughput
from nfnet_keras.training.losses import NFNetCrossEntropy
from nfnet_keras.training.optimizers import NFNetSGD
from nfnet_keras.training.plan import RunError
from nfnet_keras.training.sam import NFNetTrainer
from nfnet_keras.training.schedules import WarmupCosineDecay
from nfnet_keras.weights.run_directory import (
    EMA_WEIGHTS_FILE,
    HISTORY_FILE,
    MODEL_FILE,
    RESULTS_FILE,
    TENSORBOARD_DIR,
    RunDirectory,
)

__all__ = ["RunError", "run"]

# Held out for evaluation when the dataset has no evaluation split and --validation_fraction is not given.
DEFAULT_VALIDATION_FRACTION = 0.1

_PRECISION_POLICIES = {"bf16": "mixed_bfloat16", "fp16": "mixed_float16"}


def run(settings):
    """Trains, evaluates and saves; returns the results dict (also written to the run directory)."""
    started = time.time()
    backend = keras.backend.backend()

    # ---- everything that can be wrong is checked before training starts -------------
    run_plan.check_settings(settings)
    spec = registry.get_spec(settings["variant"])
    engine = distribution.get_distribution(
        backend=backend,
        tpu=settings["tpu"],
        devices=_configure_devices(backend, settings["cpu_devices"]),
        auto_shard_dataset=False,  # every host builds the dataset of its own part of the batch
    )
    engine.check_batch_size(settings["global_batch_size"])
    source = sources.load_source(
        settings["dataset"],
        data_dir=settings["data_dir"],
        manual_dir=settings["manual_dir"],
        skip_corrupt=settings["skip_corrupt"],
    )
    if source.skipped:
        print(f"Skipped {len(source.skipped)} undecodable images (--skip_corrupt).")
    fraction = settings["validation_fraction"]
    if fraction is not None or not source.has_split("eval"):
        fraction = DEFAULT_VALIDATION_FRACTION if fraction is None else fraction
        source = sources.hold_out(source, fraction, settings["seed"])
        print(f"Evaluating on {fraction:g} of the training images, held out (--validation_fraction).")
    num_train = source.num_examples("train")
    plan = run_plan.make_plan(settings, spec, num_train)
    if plan.warmup_shortened:
        print(f"Warmup shortened to {plan.warmup_epochs:g} epochs: it must end before the last step.")
    run_dir = RunDirectory(settings["model_dir"])
    config = run_plan.run_config(settings, num_train, source.class_names)
    start_step = checkpoint.prepare_model_dir(run_dir, config)
    starts = distribution.gather_across_hosts(start_step, engine.num_hosts)
    if len(set(starts)) > 1:
        raise RunError(
            f"The hosts see different checkpoints in --model_dir {run_dir.path} (steps {starts} by process): "
            "it must be one directory that every host reads, e.g. on shared storage."
        )
    finished = checkpoint.finished_results(run_dir)
    if finished is not None:
        print(
            f"{run_dir.path} holds a finished run ({finished['steps']} steps, test accuracy "
            f"{finished['test_accuracy']:.4f}); nothing to do. Use another --model_dir to train again."
        )
        return finished

    if settings["mixed_precision"] != "none":
        keras.config.set_dtype_policy(_PRECISION_POLICIES[settings["mixed_precision"]])
    keras.utils.set_random_seed(settings["seed"])


    # ---- model, optimizer, trainer, evaluation data ---------------------------------
    with engine.scope():
        model, trainer, schedule = _build(settings, plan, source)
        if start_step:
            checkpoint.restore_state(trainer, run_dir.checkpoint)
            print(f"Resumed from step {start_step} of {plan.total_steps} ({run_dir.checkpoint}).")

    def train_dataset(first_step):
        return _train_dataset(settings, plan, source, engine, model.preprocessing, first_step)
    eval_ds = input_pipeline.make_eval_dataset(
        source,
        settings["eval_batch_size"] or settings["global_batch_size"],
        model.preprocessing,
        num_hosts=engine.num_hosts,
        host_index=engine.process_index,
        devices_per_host=engine.devices_per_host,
        verify=False,
    )
    evaluated = input_pipeline.evaluated_examples(
        source.num_examples("eval"), engine.num_hosts, engine.devices_per_host or 1
    )
    if evaluated < source.num_examples("eval"):
        print(f"Evaluating on {evaluated} of {source.num_examples('eval')} images: an equal share for each device.")

    print(
        f"{spec.name}: {model.count_params():,} parameters; {engine.num_replicas} replica(s) "
        f"({engine.kind}, {backend}); {num_train} training images, {source.num_classes} classes; "
        f"{plan.train_size}/{plan.eval_size} px; batch {settings['global_batch_size']}; "
        f"peak lr {schedule.peak_value:g}; {plan.total_steps} steps, checkpoint every {plan.chunk}."
    )
    if engine.is_chief and start_step == 0:
        log_augmented_images(train_dataset(0), run_dir.tensorboard, model.preprocessing)

    # ---- training: one fit call per run of equal chunks --------------------------------
    if engine.is_chief:
        checkpoint.record_run(run_dir, config)  # only now: a failed start leaves nothing that blocks a retry
    timer = Throughput(settings["global_batch_size"])
    with preemption.StopSignals() as signals, _lost_hosts_as_run_error(engine):
        # First in the list: a stopped chunk is neither logged nor checkpointed twice.
        stopper = preemption.StopOnSignal(signals, run_dir.checkpoint, engine.num_hosts, engine.is_chief)
        callbacks = [stopper, *_callbacks(settings, engine, plan, run_dir, eval_ds, timer)]
        for call in plan.fit_calls(start_step):
            # The stream is a pure function of (seed, step): each call (and a resumed run) rebuilds it at its first step.
            train_ds = train_dataset(call.first_step)
            with engine.scope():
                trainer.fit(
                    train_ds,
                    epochs=call.epochs,
                    initial_epoch=call.initial_epoch,
                    steps_per_epoch=call.steps_per_epoch,
                    validation_data=eval_ds,
                    callbacks=callbacks,
                    verbose=settings["verbose"],
                    shuffle=False,  # the stream is shuffled, and keyed by step, before it gets here
                )
            if trainer.stop_training:
                break
        if not all(np.isfinite(np.asarray(keras.ops.convert_to_numpy(v))).all() for v in model.trainable_variables):
            raise RunError(
                "The loss became NaN or inf and training stopped. The last good checkpoint is kept in "
                f"{run_dir.checkpoint}; lower --learning_rate or check --clipping."
            )

        # ---- final evaluation and artifacts -----------------------------------------
        with engine.scope():
            raw, ema_metrics = _evaluate(trainer, eval_ds, with_ema=bool(settings["ema_decay"]), callbacks=[stopper])
        if stopper.stopping:  # the checkpoint at the last step is written: the rerun only evaluates
            raise stopper.stopped(plan.total_steps)
    results = {
        "variant": settings["variant"],
        "dataset": settings["dataset"],
        "backend": backend,
        "replicas": engine.num_replicas,
        "steps": plan.total_steps,
        "test_accuracy": float(raw["accuracy"]),
        "test_loss": float(raw["loss"]),
        "ema_test_accuracy": float(ema_metrics["accuracy"]) if ema_metrics else None,
        "train_images_per_second": timer.images_per_second(),
        "wall_time_seconds": time.time() - started,
    }
    if engine.is_chief:
        _write_artifacts(run_dir, model, trainer, results, with_ema=ema_metrics is not None)
    _print_summary(results, run_dir if engine.is_chief else None)
    return results


@contextlib.contextmanager
def _lost_hosts_as_run_error(engine):
    """On several hosts, a collective that fails means another host is gone: one clear error instead."""
    try:
        yield
    except (RunError, preemption.Stopped):
        raise
    except Exception as error:
        if engine.num_hosts == 1:
            raise
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise RunError(
            f"Training stopped on process {engine.process_index} of {engine.num_hosts} ({first_line}): another "
            "host has probably stopped. Start every host again with the same command to resume from the last "
            "checkpoint."
        ) from error


def _configure_devices(backend, cpu_devices):
    """Sets up the devices before any TensorFlow op; returns the devices to train on (None: the default)."""
    if backend == "jax":
        tf.config.set_visible_devices([], "GPU")  # tf.data only: leave the accelerators to JAX
        return None
    if not cpu_devices:
        return None
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * cpu_devices)
    return [f"/cpu:{i}" for i in range(cpu_devices)]


def _train_dataset(settings, plan, source, engine, preprocessing, first_step):
    """The training stream from `first_step` on, normalised as the model's `preprocessing` says."""
    randaugment = plan.spec.config["randaugment"] if settings["randaugment"] else None
    translate_const, cutout_const = augment.scaled_randaugment_constants(plan.train_size)
    return input_pipeline.make_train_dataset(
        source,
        settings["global_batch_size"],
        plan.train_size,
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
        mean=preprocessing.mean,
        std=preprocessing.std,
    )


def _build(settings, plan, source):
    """The model (with the run's evaluation size and class names), the compiled trainer and the schedule."""
    model = registry.create_model(
        settings["variant"],
        weights=settings["weights"],
        classes=source.num_classes,
        input_shape=(None, None, 3),
        classifier_activation=None,
        stochdepth_rate=settings["stochdepth_rate"],
        drop_rate=settings["drop_rate"],
        seed=settings["seed"],
    )
    # Saved with the model: predict, export and prepare_images read them from model.keras.
    model.preprocessing = model.preprocessing.replace(image_size=plan.eval_size)
    if source.class_names:
        model.class_names = source.class_names
    schedule = WarmupCosineDecay(
        base_learning_rate=settings["learning_rate"],
        global_batch_size=settings["global_batch_size"],
        steps_per_epoch=plan.steps_per_epoch,
        total_steps=plan.total_steps,
        warmup_epochs=plan.warmup_epochs,
        min_value=settings["final_learning_rate"],
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
        jit_compile={"auto": "auto", "true": True, "false": False}[settings["jit_compile"]],
    )
    trainer.optimizer.build(trainer.trainable_variables)
    return model, trainer, schedule


def _callbacks(settings, engine, plan, run_dir, eval_ds, timer):
    """The fit callbacks; only the chief process writes files."""
    callbacks = [keras.callbacks.TerminateOnNaN(), timer, LogOptimizer()]
    if settings["ema_decay"]:
        callbacks.append(ema.EMAEvaluation(eval_ds))
    if engine.is_chief:
        callbacks += [
            Checkpoint(run_dir.checkpoint, plan),
            keras.callbacks.CSVLogger(run_dir.history, append=True),
            keras.callbacks.TensorBoard(run_dir.tensorboard, update_freq="epoch"),
        ]
    return callbacks


def _evaluate(trainer, eval_ds, with_ema, callbacks):
    """The metrics of the raw weights, and of the EMA weights (None without EMA)."""
    raw = trainer.evaluate(eval_ds, verbose=0, return_dict=True, callbacks=callbacks)
    if not with_ema:
        return raw, None
    with ema.ema_weights(trainer):
        return raw, trainer.evaluate(eval_ds, verbose=0, return_dict=True, callbacks=callbacks)


def _write_artifacts(run_dir, model, trainer, results, with_ema):
    """The trained model, the EMA weights and the results, into the run directory."""
    model.save(run_dir.model)
    if with_ema:
        ema.save_ema_weights(trainer, run_dir.ema_weights, target=model)
    with open(run_dir.results, "w") as handle:
        json.dump(results, handle, indent=2)


def _print_summary(results, run_dir):
    """Prints the accuracies, the speed and (with `run_dir`, on the chief) the files written."""
    summary = f"\nTest accuracy {results['test_accuracy']:.4f}"
    if results["ema_test_accuracy"] is not None:
        summary += f" (EMA weights: {results['ema_test_accuracy']:.4f})"
    print(summary)
    speed = (
        f"Throughput {results['train_images_per_second']:.1f} training images/s; wall time "
        f"{results['wall_time_seconds']:.0f} s."
    )
    if run_dir is None:
        print(speed)
        return
    written = [MODEL_FILE, *([EMA_WEIGHTS_FILE] if results["ema_test_accuracy"] is not None else [])]
    written += [RESULTS_FILE, HISTORY_FILE]
    print(f"{speed} Wrote {', '.join(written)} and {TENSORBOARD_DIR}/ to {run_dir.path}.")


def log_augmented_images(dataset, log_dir, preprocessing):
    """Writes 16 images of the first augmented batch to TensorBoard (un-normalised with `preprocessing`)."""
    images, _ = next(iter(dataset.take(1)))
    pixels = tf.clip_by_value(images[:16] * preprocessing.std + preprocessing.mean, 0.0, 255.0) / 255.0
    with tf.summary.create_file_writer(os.path.join(log_dir, "train")).as_default():
        tf.summary.image("augmented_batch", pixels, step=0, max_outputs=16)
