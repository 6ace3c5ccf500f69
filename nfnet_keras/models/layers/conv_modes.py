"""How the convolutions are computed: the grouped form and the 3x3 algorithm.

Both are read from the environment when a function is traced (set them before
building or compiling), and both compute the same function: they differ in
speed only, which depends on the machine and on whether XLA compiles the
graph (measurements in each function's docstring and `benchmarks/RESULTS.md`).

- `NFNET_GROUPED_CONV` (`auto`, `native`, `split`): `grouped_conv_mode`.
- `NFNET_CONV3X3` (`direct`, `winograd`): `conv3x3_mode`.

`grouped_conv_override` and `conv3x3_override` set them for a block, for
artifacts traced on one machine and run on another (`export.py`).
"""

import contextlib
import functools
import os

import keras

__all__ = [
    "CONV3X3_MODES",
    "GROUPED_CONV_MODES",
    "conv3x3_mode",
    "conv3x3_override",
    "grouped_conv_mode",
    "grouped_conv_override",
]

GROUPED_CONV_MODES = ("auto", "native", "split")
CONV3X3_MODES = ("direct", "winograd")


def grouped_conv_mode():
    """How grouped convolutions run: "native" (one grouped op) or "split".

    "split" runs one plain convolution per group and concatenates.  On CPUs
    that is the fast form: XLA:CPU's gradient of a grouped convolution is
    10-20x slower than the per-group convolutions' (F0's strided stage-3
    3x3, batch 8: 0.98 s vs 0.09 s forward+backward, `benchmarks/conv_groups.py`),
    and TensorFlow's oneDNN path is no faster grouped than split.  On GPUs
    and TPUs the grouped op is the fast one.  The environment variable
    `NFNET_GROUPED_CONV` (`auto`, `native` or `split`) overrides the choice;
    `auto` (the default) picks "split" when the default device is a CPU.
    """
    mode = _environment_choice("NFNET_GROUPED_CONV", GROUPED_CONV_MODES)
    if mode == "auto":
        return "split" if _default_device_is_cpu() else "native"
    return mode


def conv3x3_mode():
    """How 3x3 stride-1 float32 convolutions run: "direct" or "winograd".

    "winograd" computes them by F(2x2, 3x3) (`winograd.winograd_conv3x3`):
    2.25x fewer multiply-accumulates, worth it on a CPU under XLA (F0's 3x3
    layers 1.3-1.6x faster at batch 1), 3x slower in a plain TensorFlow
    graph. "direct" (the default) is the backend's convolution. Set by
    `NFNET_CONV3X3`; `export.py --jit_compile` traces with "winograd".
    """
    return _environment_choice("NFNET_CONV3X3", CONV3X3_MODES)


@contextlib.contextmanager
def grouped_conv_override(mode):
    """Within the block, models traced use `mode` ("native" or "split") whatever the machine.

    A SavedModel for a GPU server exported on a CPU host wants "native"
    grouped convolutions. Restores `NFNET_GROUPED_CONV` afterwards. `None`
    changes nothing.
    """
    with _environment_override("NFNET_GROUPED_CONV", mode, GROUPED_CONV_MODES[1:]):
        yield


@contextlib.contextmanager
def conv3x3_override(mode):
    """Within the block, models traced compute 3x3 convolutions by `mode` ("direct" or "winograd").

    Restores `NFNET_CONV3X3` afterwards. `None` changes nothing.
    """
    with _environment_override("NFNET_CONV3X3", mode, CONV3X3_MODES):
        yield


def _environment_choice(variable, choices):
    """`os.environ[variable]` (default: the first choice); a ValueError naming the variable otherwise."""
    value = os.environ.get(variable, choices[0])
    if value not in choices:
        raise ValueError(f"{variable}={value!r}: choose one of {choices}")
    return value


@contextlib.contextmanager
def _environment_override(variable, value, choices):
    if value is None:
        yield
        return
    if value not in choices:
        raise ValueError(f"{variable} {value!r}: choose one of {choices}")
    previous = os.environ.get(variable)
    os.environ[variable] = value
    try:
        yield
    finally:
        if previous is None:
            del os.environ[variable]
        else:
            os.environ[variable] = previous


@functools.cache
def _default_device_is_cpu():
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return not tf.config.list_logical_devices("GPU") and not tf.config.list_logical_devices("TPU")
    if backend == "jax":
        import jax

        return jax.default_backend() == "cpu"
    if backend == "torch":
        import torch

        return not torch.cuda.is_available()
    return True
