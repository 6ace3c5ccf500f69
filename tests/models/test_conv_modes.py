"""How convolutions are computed (`conv_modes`): read from the environment, same outputs in every mode."""

import numpy as np
import pytest
from keras import ops

from nfnet_keras.models.layers import WSConv2D, conv_modes, ws_conv


def _ws_conv(in_channels, filters, strides=1, groups=1, seed=0):
    layer = WSConv2D(filters, 3, strides=strides, groups=groups)
    layer.build((None, None, None, in_channels))
    rng = np.random.default_rng(seed)
    layer.kernel.assign(rng.standard_normal(layer.kernel.shape).astype("float32"))
    layer.gain.assign(rng.uniform(0.5, 2.0, filters).astype("float32"))
    return layer


def test_grouped_conv_mode_auto_splits_on_a_cpu_only_machine(monkeypatch):
    monkeypatch.delenv("NFNET_GROUPED_CONV", raising=False)
    assert conv_modes.grouped_conv_mode() == "split"


def test_unknown_grouped_conv_mode_raises_value_error(monkeypatch):
    monkeypatch.setenv("NFNET_GROUPED_CONV", "fast")
    with pytest.raises(ValueError, match="NFNET_GROUPED_CONV"):
        conv_modes.grouped_conv_mode()


def test_conv3x3_mode_is_direct_by_default(monkeypatch):
    monkeypatch.delenv("NFNET_CONV3X3", raising=False)
    assert conv_modes.conv3x3_mode() == "direct"


def test_unknown_conv3x3_mode_raises_value_error(monkeypatch):
    monkeypatch.setenv("NFNET_CONV3X3", "fft")
    with pytest.raises(ValueError, match="NFNET_CONV3X3"):
        conv_modes.conv3x3_mode()


def test_conv3x3_override_holds_within_the_block_and_restores_the_environment(monkeypatch):
    monkeypatch.setenv("NFNET_CONV3X3", "direct")
    with conv_modes.conv3x3_override("winograd"):
        assert conv_modes.conv3x3_mode() == "winograd"
    assert conv_modes.conv3x3_mode() == "direct"
    with conv_modes.conv3x3_override(None):
        assert conv_modes.conv3x3_mode() == "direct"


def test_winograd_mode_gives_a_wide_grouped_3x3_conv_the_direct_modes_outputs(monkeypatch):
    layer = _ws_conv(in_channels=256, filters=256, groups=2)  # 128-channel groups
    x = np.random.default_rng(1).standard_normal((2, 6, 5, 256)).astype("float32")
    monkeypatch.setenv("NFNET_CONV3X3", "direct")
    direct = ops.convert_to_numpy(layer(x))
    monkeypatch.setenv("NFNET_CONV3X3", "winograd")
    winograd = ops.convert_to_numpy(layer(x))
    np.testing.assert_allclose(winograd, direct, atol=2e-6 * np.abs(direct).max())


@pytest.mark.parametrize(
    "in_channels, strides, groups, dtype",
    [(256, 1, 2, "float32"), (128, 2, 1, "float32"), (128, 1, 2, "float32"), (128, 1, 1, "float16")],
    ids=["wide", "strided", "narrow groups", "float16"],
)
def test_winograd_mode_takes_only_wide_stride_1_float32_convs(monkeypatch, in_channels, strides, groups, dtype):
    calls = []
    monkeypatch.setattr(ws_conv, "winograd_conv3x3", lambda *args: calls.append(args) or ops.zeros((1, 1, 1, 1)))
    monkeypatch.setenv("NFNET_CONV3X3", "winograd")
    inputs = ops.zeros((1, 6, 6, in_channels), dtype=dtype)
    ws_conv.grouped_conv(inputs, ops.zeros((3, 3, in_channels // groups, 8), dtype=dtype), (strides, strides), groups, "same")
    assert len(calls) == (in_channels == 256)
