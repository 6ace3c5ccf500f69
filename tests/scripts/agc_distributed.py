"""Runs training steps of the nano NFNet with 1 and 2 data-parallel replicas.

Helper for tests/training/test_agc_distributed.py, run in a subprocess because the
device setup must happen before the first TensorFlow op / JAX call:

    KERAS_BACKEND=tensorflow python tests/scripts/agc_distributed.py OUT.npz
    KERAS_BACKEND=jax XLA_FLAGS=--xla_force_host_platform_device_count=2 \
        python tests/scripts/agc_distributed.py OUT.npz

TensorFlow: two logical CPUs, `MirroredStrategy` over 1 and over 2 of them,
`model.train_on_batch` on the same global batch.  Runs:
  - `tf1`: NFNetSGD, 1 replica;
  - `tf2`: NFNetSGD, 2 replicas (AGC in `update_step`, after the all-reduce);
  - `tf_local1` / `tf_local2`: the same update rule but AGC moved to
    `_clip_gradients`, i.e. applied to each replica's local gradient before
    the all-reduce (the wrong place), on 1 and 2 replicas.
JAX: `jax1` without distribution, `jax2` with
`keras.distribution.DataParallel` over two host devices.

For every run and step it stores the weights, the EMA, the clip fraction and,
for mirrored variables, the largest difference between replica copies.
"""

import json
import os
import re
import sys

BACKEND = os.environ.get("KERAS_BACKEND", "tensorflow")
if BACKEND == "tensorflow":
    import tensorflow as tf

    _cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        _cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
    )

import keras  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from support import agc_models  # noqa: E402

from nfnet_keras import keras_internals  # noqa: E402
from nfnet_keras.training.agc import agc_clip  # noqa: E402
from nfnet_keras.training.losses import NFNetCrossEntropy  # noqa: E402
from nfnet_keras.training.optimizers import NFNetSGD  # noqa: E402

STEPS = 2
LEARNING_RATE = 0.1
EMA_DECAY = 0.999
# Learning-rate-free gradient multiplier so that AGC rescales most units.
LOSS_MULTIPLIER = 1000.0


class MultipliedLoss(NFNetCrossEntropy):
    """NFNetCrossEntropy times a constant (still a Keras Loss: replica scaling applies)."""

    def call(self, y_true, y_pred):
        return super().call(y_true, y_pred) * LOSS_MULTIPLIER


class LocalAGCSGD(NFNetSGD):
    """NFNetSGD with AGC in `_clip_gradients`: per replica, before the all-reduce on TF."""

    def __init__(self, **kwargs):
        super().__init__(clipping=None, **kwargs)

    def _clip_gradients(self, grads):
        out = []
        for g, v in zip(grads, keras_internals.built_variables(self)):
            if g is None or re.search("predictions/kernel", v.path):
                out.append(g)
            else:
                out.append(agc_clip(g, v, 0.01, 1e-3)[0])
        return out


def _replica_spread(variables):
    """Largest |difference| between the replica copies of mirrored variables."""
    spread = 0.0
    for v in variables:
        value = getattr(v, "value", v)
        components = getattr(value, "values", None)
        if components is None or len(components) < 2:
            continue
        first = components[0].numpy()
        for c in components[1:]:
            spread = max(spread, float(np.max(np.abs(c.numpy() - first))))
    return spread


def _components(variable):
    """Numpy values of every replica copy of a (possibly mirrored) variable."""
    value = getattr(variable, "value", variable)
    components = getattr(value, "values", None)
    if components is None:
        return [keras.ops.convert_to_numpy(variable)]
    return [c.numpy() for c in components]


def _check_swap(model, optimizer):
    """swap_average_weights under the strategy: swapped on every replica, then restored."""
    weights = [keras.ops.convert_to_numpy(v) for v in model.trainable_variables]
    averages = [keras.ops.convert_to_numpy(a) for a in optimizer.average_variables]
    optimizer.swap_average_weights(model.trainable_variables)
    swapped = max(
        float(np.max(np.abs(c - a)))
        for v, a in zip(model.trainable_variables, averages)
        for c in _components(v)
    )
    swapped_back = max(
        float(np.max(np.abs(c - w)))
        for a, w in zip(optimizer.average_variables, weights)
        for c in _components(a)
    )
    optimizer.swap_average_weights(model.trainable_variables)
    restored = max(
        float(np.max(np.abs(c - w)))
        for v, w in zip(model.trainable_variables, weights)
        for c in _components(v)
    )
    differs = max(float(np.max(np.abs(w - a))) for w, a in zip(weights, averages))
    return {
        "swap_model_vs_average": swapped,
        "swap_average_vs_model": swapped_back,
        "swap_twice_vs_original": restored,
        "model_vs_average": differs,
    }


def _num_replicas(value):
    components = getattr(getattr(value, "value", value), "values", None)
    return 1 if components is None else len(components)


def train(run, optimizer_factory, init_weights, x, y, strategy=None, distribution=None):
    results = {}
    meta = {}
    if BACKEND == "jax":
        keras.distribution.set_distribution(distribution)
    scope = strategy.scope() if strategy is not None else _null()
    with scope:
        model = agc_models.build_model()
        model.set_weights(init_weights)
        optimizer = optimizer_factory()
        model.compile(optimizer=optimizer, loss=MultipliedLoss())
    for step in range(STEPS):
        loss = model.train_on_batch(x, y)
        for i, v in enumerate(model.trainable_variables):
            results[f"{run}/step{step}/w{i}"] = keras.ops.convert_to_numpy(v)
        if optimizer.ema_decay is not None:
            for i, a in enumerate(optimizer.average_variables):
                results[f"{run}/step{step}/ema{i}"] = keras.ops.convert_to_numpy(a)
        meta[f"step{step}"] = {
            "loss": float(loss),
            "clip_fraction": float(keras.ops.convert_to_numpy(optimizer.clip_fraction)),
            "iterations": int(keras.ops.convert_to_numpy(optimizer.iterations)),
        }
    if optimizer.ema_decay is not None:
        meta.update(_check_swap(model, optimizer))
    meta["replicas"] = _num_replicas(model.trainable_variables[0])
    meta["param_replica_spread"] = _replica_spread(model.trainable_variables)
    meta["optimizer_replica_spread"] = _replica_spread(optimizer.variables)
    if BACKEND == "jax":
        kernel = model.trainable_variables[0].value
        meta["kernel_devices"] = len(kernel.sharding.device_set)
        meta["kernel_sharding"] = str(kernel.sharding)
        keras.distribution.set_distribution(None)
    return results, meta


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *args):
        return False


def main(out_path):
    x, y = agc_models.fixed_batch(batch_size=16)
    reference = agc_models.build_model()
    init_weights = reference.get_weights()
    arrays = {"x": x, "y": y}
    for i, v in enumerate(reference.trainable_variables):
        arrays[f"init/w{i}"] = keras.ops.convert_to_numpy(v)
    meta = {"backend": BACKEND, "steps": STEPS, "learning_rate": LEARNING_RATE, "ema_decay": EMA_DECAY}

    def nfnet_sgd():
        return NFNetSGD(learning_rate=LEARNING_RATE, ema_decay=EMA_DECAY)

    def local_agc():
        return LocalAGCSGD(learning_rate=LEARNING_RATE)

    if BACKEND == "tensorflow":
        one = lambda: tf.distribute.MirroredStrategy(["/cpu:0"])  # noqa: E731
        two = lambda: tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])  # noqa: E731
        runs = [
            ("tf1", nfnet_sgd, one),
            ("tf2", nfnet_sgd, two),
            ("tf_local1", local_agc, one),
            ("tf_local2", local_agc, two),
        ]
        for run, factory, strategy in runs:
            res, m = train(run, factory, init_weights, x, y, strategy=strategy())
            arrays.update(res)
            meta[run] = m
    else:
        import jax

        devices = jax.devices()
        meta["jax_devices"] = len(devices)
        res, m = train("jax1", nfnet_sgd, init_weights, x, y, distribution=None)
        arrays.update(res)
        meta["jax1"] = m
        dp = keras.distribution.DataParallel(devices=devices[:2])
        res, m = train("jax2", nfnet_sgd, init_weights, x, y, distribution=dp)
        arrays.update(res)
        meta["jax2"] = m
    meta["paths"] = [v.path for v in reference.trainable_variables]
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(out_path, **arrays)


if __name__ == "__main__":
    main(sys.argv[1])
