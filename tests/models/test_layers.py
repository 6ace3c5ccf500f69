"""Spec tests for nfnet_keras.models.layers against float64 numpy re-implementations of
DeepMind's reference formulas (shared/reference/nfnet_reference.md, sections 1.2-1.8 and 8).

Every oracle below is written from the reference text, never from the package code.
"""

import math

import keras
import numpy as np
import pytest

import nfnet_keras
from nfnet_keras.keras_internals import nested_layers
from nfnet_keras.models.layers import ws_conv
from nfnet_keras.models.layers import (
    GAMMAS,
    NFBlock,
    ScaledActivation,
    SqueezeExcite,
    StochasticDepth,
    WSConv2D,
)

# --------------------------------------------------------------------------------------
# float64 numpy oracles (reference section 1)
# --------------------------------------------------------------------------------------

_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _softplus(x):
    return np.maximum(x, 0.0) + np.log1p(np.exp(-np.abs(x)))


def _gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def _log_softmax(x):
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _glu(x):
    a, b = np.split(x, 2, axis=-1)
    return a * _sigmoid(b)


REFERENCE_FUNCTIONS = {
    "gelu": _gelu_tanh,
    "relu": lambda x: np.maximum(x, 0.0),
    "silu": lambda x: x * _sigmoid(x),
    "relu6": lambda x: np.clip(x, 0.0, 6.0),
    "elu": lambda x: np.where(x > 0, x, np.expm1(x)),
    "celu": lambda x: np.maximum(x, 0.0) + np.minimum(0.0, np.expm1(x)),
    "leaky_relu": lambda x: np.where(x >= 0, x, 0.01 * x),
    "selu": lambda x: _SELU_SCALE * np.where(x > 0, x, _SELU_ALPHA * np.expm1(x)),
    "tanh": np.tanh,
    "sigmoid": _sigmoid,
    "softplus": _softplus,
    "soft_sign": lambda x: x / (1.0 + np.abs(x)),
    "log_sigmoid": lambda x: -_softplus(-x),
    "log_softmax": _log_softmax,
    "glu": _glu,
    "identity": lambda x: x,
}


def act_np(x):
    """NFNet's activation: tanh-gelu times its gamma."""
    return _gelu_tanh(x) * GAMMAS["gelu"]


def ws_np(w, gain, eps=1e-4):
    """Scaled weight standardisation, reference 1.3 / 8.4 (population var, floor eps)."""
    w = np.asarray(w, np.float64)
    fan_in = w.shape[0] * w.shape[1] * w.shape[2]
    mean = w.mean(axis=(0, 1, 2))
    var = w.var(axis=(0, 1, 2))  # ddof=0
    return (w - mean) * np.asarray(gain, np.float64) / np.sqrt(np.maximum(fan_in * var, eps))


def same_pads(size, kernel, stride):
    """TF SAME padding: (before, after) with the odd pixel after (bottom/right)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def conv_np(x, w, stride=1, groups=1):
    """float64 NHWC x HWIO grouped convolution with TF SAME padding."""
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    n, h, wd, c = x.shape
    kh, kw, cin_g, cout = w.shape
    assert cin_g * groups == c and cout % groups == 0
    oh, ow = -(-h // stride), -(-wd // stride)
    xp = np.pad(x, ((0, 0), same_pads(h, kh, stride), same_pads(wd, kw, stride), (0, 0)))
    out = np.zeros((n, oh, ow, cout))
    cout_g = cout // groups
    for g in range(groups):
        xg = xp[..., g * cin_g : (g + 1) * cin_g]
        wg = w[..., g * cout_g : (g + 1) * cout_g]
        for i in range(kh):
            for j in range(kw):
                patch = xg[:, i : i + stride * (oh - 1) + 1 : stride, j : j + stride * (ow - 1) + 1 : stride, :]
                out[..., g * cout_g : (g + 1) * cout_g] += np.einsum("nhwc,co->nhwo", patch, wg[i, j])
    return out


def avg_pool_2x2_same_np(x):
    """2x2 stride-2 SAME average pool that divides by the number of valid (unpadded) pixels."""
    n, h, w, c = x.shape
    oh, ow = -(-h // 2), -(-w // 2)
    out = np.zeros((n, oh, ow, c))
    (pt, _), (pl, _) = same_pads(h, 2, 2), same_pads(w, 2, 2)
    for i in range(oh):
        for j in range(ow):
            r0, c0 = max(i * 2 - pt, 0), max(j * 2 - pl, 0)
            r1, c1 = min(i * 2 - pt + 2, h), min(j * 2 - pl + 2, w)
            out[:, i, j, :] = x[:, r0:r1, c0:c1, :].mean(axis=(1, 2))
    return out


def se_np(x, w0, b0, w1, b1):
    """Squeeze-excite gate (N, 1, 1, C): sigmoid(relu(mean_hw(x) @ w0 + b0) @ w1 + b1), plain relu."""
    h = np.asarray(x, np.float64).mean(axis=(1, 2))
    gate = _sigmoid(np.maximum(h @ w0 + b0, 0.0) @ w1 + b1)
    return gate[:, None, None, :]


def to_np(x):
    return np.asarray(keras.ops.convert_to_numpy(x), dtype=np.float64)


def make_ws_conv(rng, filters, kernel_size, in_channels, strides=1, groups=1):
    """A built WSConv2D with random kernel, gain and bias; returns (layer, kernel, gain, bias)."""
    layer = WSConv2D(filters, kernel_size, strides=strides, groups=groups)
    layer.build((None, None, None, in_channels))
    kernel = rng.normal(0.3, 1.5, (kernel_size, kernel_size, in_channels // groups, filters))
    gain = rng.uniform(0.5, 2.0, filters)
    bias = rng.normal(0.0, 0.5, filters)
    layer.kernel.assign(kernel.astype("float32"))
    layer.gain.assign(gain.astype("float32"))
    layer.bias.assign(bias.astype("float32"))
    return layer, kernel.astype("float32"), gain.astype("float32"), bias.astype("float32")


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def float32_policy_restored():
    yield
    keras.config.set_dtype_policy("float32")


# --------------------------------------------------------------------------------------
# WSConv2D
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("groups", [1, 2])
def test_wsconv_standardized_kernel_matches_population_variance_formula(rng, groups):
    layer, kernel, gain, _ = make_ws_conv(rng, filters=4, kernel_size=3, in_channels=6, groups=groups)
    got = to_np(layer.standardized_kernel())
    assert got.shape == (3, 3, 6 // groups, 4)
    np.testing.assert_allclose(got, ws_np(kernel, gain), rtol=1e-5, atol=1e-6)


def test_wsconv_standardized_kernel_has_zero_mean_and_gain_scaled_unit_norm(rng):
    layer, _, gain, _ = make_ws_conv(rng, filters=5, kernel_size=3, in_channels=4)
    got = to_np(layer.standardized_kernel())
    np.testing.assert_allclose(got.mean(axis=(0, 1, 2)), 0.0, atol=1e-6)
    # sum of squares per output channel = gain^2 (fan_in * var normalised to 1)
    np.testing.assert_allclose((got**2).sum(axis=(0, 1, 2)), gain.astype(np.float64) ** 2, rtol=1e-5)


def test_wsconv_constant_kernel_standardizes_to_zero_without_nan(rng):
    layer, _, _, _ = make_ws_conv(rng, filters=3, kernel_size=3, in_channels=2)
    # 0.75: the float32 mean is exact, so W - mean is exactly 0 (and 0 * 1/sqrt(1e-4) stays 0).
    layer.kernel.assign(np.full((3, 3, 2, 3), 0.75, "float32"))
    got = to_np(layer.standardized_kernel())
    assert np.all(np.isfinite(got))
    np.testing.assert_array_equal(got, 0.0)
    # 0.7: only float32 rounding of the mean survives, amplified by at most gain / sqrt(1e-4) = 200.
    layer.kernel.assign(np.full((3, 3, 2, 3), 0.7, "float32"))
    got = to_np(layer.standardized_kernel())
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, 0.0, atol=200 * 0.7 * 2.0**-22)


def test_wsconv_eps_is_a_floor_on_fan_in_times_var_not_additive(rng):
    layer, _, _, _ = make_ws_conv(rng, filters=2, kernel_size=3, in_channels=2)
    fan_in = 18
    # channel 0: fan_in * var = 0.25e-4 (below the floor); channel 1: 4e-4 (above).
    noise = rng.standard_normal((3, 3, 2, 2))
    noise = (noise - noise.mean(axis=(0, 1, 2))) / noise.std(axis=(0, 1, 2))
    target_var = np.array([0.25e-4, 4e-4]) / fan_in
    kernel = 0.5 + noise * np.sqrt(target_var)
    gain = np.array([1.3, 0.8])
    layer.kernel.assign(kernel.astype("float32"))
    layer.gain.assign(gain.astype("float32"))
    got = to_np(layer.standardized_kernel())
    centred = kernel - kernel.mean(axis=(0, 1, 2))
    floor = centred * gain / np.sqrt(1e-4)  # channel 0 must use the floor
    exact = centred * gain / np.sqrt(fan_in * kernel.var(axis=(0, 1, 2)))  # channel 1 untouched by eps
    additive = centred * gain / np.sqrt(fan_in * kernel.var(axis=(0, 1, 2)) + 1e-4)
    np.testing.assert_allclose(got[..., 0], floor[..., 0], rtol=2e-3, atol=1e-6)
    np.testing.assert_allclose(got[..., 1], exact[..., 1], rtol=2e-3, atol=1e-6)
    # the additive form would be visibly different on both channels
    assert np.abs(got[..., 0] - additive[..., 0]).max() > 0.1 * np.abs(floor[..., 0]).max()
    assert np.abs(got[..., 1] - additive[..., 1]).max() > 0.05 * np.abs(exact[..., 1]).max()


def test_wsconv_standardization_is_recomputed_on_every_call(rng):
    layer, _, _, bias = make_ws_conv(rng, filters=3, kernel_size=1, in_channels=4)
    x = rng.standard_normal((1, 3, 3, 4)).astype("float32")
    layer(x)
    new_kernel = rng.normal(size=(1, 1, 4, 3)).astype("float32")
    layer.kernel.assign(new_kernel)
    expected = conv_np(x, ws_np(new_kernel, to_np(layer.gain))) + bias
    np.testing.assert_allclose(to_np(layer(x)), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("groups", [2, 3])
def test_wsconv_grouped_conv_equals_per_group_convs_of_standardized_kernel(rng, groups):
    layer, kernel, gain, bias = make_ws_conv(rng, filters=6, kernel_size=3, in_channels=6, groups=groups)
    x = rng.standard_normal((2, 5, 6, 6)).astype("float32")
    w_hat = ws_np(kernel, gain)
    cin_g, cout_g = 6 // groups, 6 // groups
    expected = np.concatenate(
        [
            conv_np(x[..., g * cin_g : (g + 1) * cin_g], w_hat[..., g * cout_g : (g + 1) * cout_g])
            for g in range(groups)
        ],
        axis=-1,
    ) + bias
    np.testing.assert_allclose(to_np(layer(x)), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("strides", [1, 2])
def test_wsconv_grouped_conv_split_and_native_modes_agree(rng, monkeypatch, strides):
    layer, _, _, _ = make_ws_conv(rng, filters=6, kernel_size=3, in_channels=6, groups=3, strides=strides)
    x = rng.standard_normal((2, 7, 6, 6)).astype("float32")
    monkeypatch.setenv("NFNET_GROUPED_CONV", "native")
    native = to_np(layer(x))
    monkeypatch.setenv("NFNET_GROUPED_CONV", "split")
    split = to_np(layer(x))
    np.testing.assert_allclose(split, native, rtol=1e-5, atol=1e-6)


def test_grouped_conv_mode_auto_splits_on_a_cpu_only_machine(monkeypatch):
    monkeypatch.delenv("NFNET_GROUPED_CONV", raising=False)
    assert ws_conv.grouped_conv_mode() == "split"


def test_unknown_grouped_conv_mode_raises_value_error(monkeypatch):
    monkeypatch.setenv("NFNET_GROUPED_CONV", "fast")
    with pytest.raises(ValueError, match="NFNET_GROUPED_CONV"):
        ws_conv.grouped_conv_mode()


def test_numpy_conv_oracle_agrees_with_tf_same_padding(rng):
    tf = pytest.importorskip("tensorflow")
    for size, stride in [(6, 2), (7, 2), (5, 1)]:
        x = rng.standard_normal((1, size, size + 1, 2))
        w = rng.standard_normal((3, 3, 2, 3))
        tf_out = tf.nn.conv2d(x, w, strides=stride, padding="SAME").numpy()
        np.testing.assert_allclose(conv_np(x, w, stride), tf_out, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("size", [6, 7])
def test_wsconv_stride2_output_is_ceil_half_and_matches_tf_same(rng, size):
    tf = pytest.importorskip("tensorflow")
    layer, kernel, gain, bias = make_ws_conv(rng, filters=3, kernel_size=3, in_channels=2, strides=2)
    x = rng.standard_normal((2, size, size, 2)).astype("float32")
    out = to_np(layer(x))
    assert out.shape == (2, math.ceil(size / 2), math.ceil(size / 2), 3)
    w_hat = ws_np(kernel, gain)
    tf_same = tf.nn.conv2d(x.astype("float64"), w_hat, strides=2, padding="SAME").numpy() + bias
    np.testing.assert_allclose(out, tf_same, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out, conv_np(x, w_hat, stride=2) + bias, rtol=1e-4, atol=1e-5)


def test_wsconv_stride2_even_input_pads_bottom_right_only(rng):
    tf = pytest.importorskip("tensorflow")
    layer, kernel, gain, bias = make_ws_conv(rng, filters=3, kernel_size=3, in_channels=2, strides=2)
    x = rng.standard_normal((1, 6, 6, 2)).astype("float32")
    w_hat = ws_np(kernel, gain)
    out = to_np(layer(x))
    bottom_right = [[0, 0], [0, 1], [0, 1], [0, 0]]
    top_left = [[0, 0], [1, 0], [1, 0], [0, 0]]
    ref_br = tf.nn.conv2d(x.astype("float64"), w_hat, strides=2, padding=bottom_right).numpy() + bias
    ref_tl = tf.nn.conv2d(x.astype("float64"), w_hat, strides=2, padding=top_left).numpy() + bias
    np.testing.assert_allclose(out, ref_br, rtol=1e-4, atol=1e-5)
    assert np.abs(out - ref_tl).max() > 1e-2  # PyTorch-style top/left padding differs


def test_wsconv_adds_bias(rng):
    layer, _, _, bias = make_ws_conv(rng, filters=4, kernel_size=3, in_channels=3)
    layer.gain.assign(np.zeros(4, "float32"))  # W_hat = 0: the output is the bias alone
    x = rng.standard_normal((2, 4, 5, 3)).astype("float32")
    out = to_np(layer(x))
    np.testing.assert_allclose(out, np.broadcast_to(bias, out.shape), rtol=1e-6)
    assert np.abs(bias).max() > 0


def test_wsconv_default_init_is_unit_gain_zero_bias_and_fan_in_normal():
    keras.utils.set_random_seed(0)
    layer = WSConv2D(64, 3)
    layer.build((None, None, None, 32))
    np.testing.assert_array_equal(to_np(layer.gain), 1.0)
    np.testing.assert_array_equal(to_np(layer.bias), 0.0)
    kernel = to_np(layer.kernel)
    assert kernel.shape == (3, 3, 32, 64)
    # plain (untruncated) normal with std 1/sqrt(fan_in) = 1/sqrt(288)
    assert abs(kernel.std() * math.sqrt(288) - 1.0) < 0.03
    assert np.abs(kernel).max() * math.sqrt(288) > 3.0  # a truncated normal stops at 2 std


def test_wsconv_mixed_bfloat16_keeps_float32_variables_and_standardization(rng, float32_policy_restored):
    keras.config.set_dtype_policy("mixed_bfloat16")
    layer = WSConv2D(4, 3)
    layer.build((None, None, None, 3))
    kernel = rng.normal(0.2, 1.0, (3, 3, 3, 4)).astype("float32")
    gain = rng.uniform(0.5, 2.0, 4).astype("float32")
    layer.kernel.assign(kernel)
    layer.gain.assign(gain)
    assert keras.backend.standardize_dtype(layer.kernel.dtype) == "float32"
    assert keras.backend.standardize_dtype(layer.gain.dtype) == "float32"
    w_hat = layer.standardized_kernel()
    assert keras.backend.standardize_dtype(w_hat.dtype) == "float32"
    np.testing.assert_allclose(to_np(w_hat), ws_np(kernel, gain), rtol=1e-5, atol=1e-6)
    x = rng.standard_normal((1, 5, 5, 3)).astype("float32")
    out = layer(x)
    assert keras.backend.standardize_dtype(out.dtype) == "bfloat16"
    np.testing.assert_allclose(to_np(out), conv_np(x, ws_np(kernel, gain)), rtol=0.05, atol=0.1)


def test_wsconv_config_round_trip_gives_identical_outputs(rng):
    layer, _, _, _ = make_ws_conv(rng, filters=6, kernel_size=3, in_channels=4, strides=2, groups=2)
    clone = WSConv2D.from_config(layer.get_config())
    assert (clone.filters, clone.kernel_size, clone.strides, clone.groups, clone.eps) == (6, (3, 3), (2, 2), 2, 1e-4)
    clone.build((None, None, None, 4))
    clone.set_weights(layer.get_weights())
    x = rng.standard_normal((2, 7, 6, 4)).astype("float32")
    np.testing.assert_array_equal(to_np(clone(x)), to_np(layer(x)))


@pytest.mark.parametrize("filters,groups", [(5, 2), (6, 0), (6, -1), (6, 4)])
def test_wsconv_filters_not_divisible_by_groups_raise_value_error(filters, groups):
    with pytest.raises(ValueError):
        WSConv2D(filters, 3, groups=groups)


def test_wsconv_input_channels_not_divisible_by_groups_raise_value_error():
    layer = WSConv2D(6, 3, groups=2)
    with pytest.raises(ValueError):
        layer.build((None, 8, 8, 3))


@pytest.mark.parametrize(
    "kwargs",
    [{"standardize": True}, {"standardize": False, "kernel_size": 1}, {"standardize": False, "strides": 2}],
    ids=["standardized", "1x1", "stride-2"],
)
def test_wsconv_winograd_form_refuses_what_is_not_a_folded_stride_1_3x3(kwargs):
    kwargs = {"kernel_size": 3, **kwargs}
    with pytest.raises(ValueError, match="winograd=True is a folded form"):
        WSConv2D(128, winograd=True, **kwargs)


def test_wsconv_winograd_form_refuses_groups_narrower_than_128_channels():
    layer = WSConv2D(128, 3, groups=2, standardize=False, winograd=True)
    with pytest.raises(ValueError, match="at least 128 input channels"):
        layer.build((None, 8, 8, 128))


def test_wsconv_winograd_form_stores_its_kernel_transformed_and_keeps_the_config():
    layer = WSConv2D(256, 3, groups=2, standardize=False, winograd=True)
    layer.build((None, 6, 6, 256))
    assert [v.path.split("/")[-1] for v in layer.weights] == ["winograd_kernel", "bias"]
    assert tuple(layer.winograd_kernel.shape) == (32, 128, 128)
    assert layer.fan_in == 9 * 128
    assert WSConv2D.from_config(layer.get_config()).winograd


@pytest.mark.parametrize("size, tile", [((8, 8), 4), ((16, 12), 4), ((6, 6), 2), ((None, None), 2)])
def test_wsconv_winograd_form_takes_the_tile_of_the_size_it_is_built_for(size, tile):
    layer = WSConv2D(256, 3, groups=2, standardize=False, winograd=True)
    layer.build((None, *size, 256))
    assert layer.winograd_tile == tile
    assert tuple(layer.winograd_kernel.shape) == ((tile + 2) ** 2 * 2, 128, 128)


# --------------------------------------------------------------------------------------
# ScaledActivation
# --------------------------------------------------------------------------------------


def test_gamma_makes_each_activation_of_a_unit_gaussian_unit_variance():
    """gamma = 1 / std(f(z)), z ~ N(0, 1): what the gammas are (to DeepMind's Monte Carlo precision)."""
    z, weights = np.polynomial.hermite_e.hermegauss(200)
    weights = weights / weights.sum()
    elementwise = sorted(set(REFERENCE_FUNCTIONS) - {"glu", "log_softmax"})
    for name in elementwise:
        y = REFERENCE_FUNCTIONS[name](z)
        variance = (weights * y * y).sum() - (weights * y).sum() ** 2
        assert GAMMAS[name] * math.sqrt(variance) == pytest.approx(1.0, abs=2e-3), name
    # glu(a, b) = a * sigmoid(b) with independent a, b: the variance is E[sigmoid(b)^2].
    variance = (weights * _sigmoid(z) ** 2).sum()
    assert GAMMAS["glu"] * math.sqrt(variance) == pytest.approx(1.0, abs=2e-3)
    assert set(GAMMAS) == set(REFERENCE_FUNCTIONS)


def test_reference_has_no_swish_key_and_unknown_names_raise_value_error():
    for name in ("swish", "GELU", "gelu_exact", ""):
        with pytest.raises(ValueError):
            ScaledActivation(name)


@pytest.mark.parametrize("name", sorted(REFERENCE_FUNCTIONS))
def test_scaled_activation_equals_reference_function_times_gamma(name, rng):
    x = np.concatenate([np.linspace(-8.0, 8.0, 48), rng.normal(0.0, 2.0, 48)]).reshape(2, 2, 4, 6)
    x = x.astype("float32")
    got = to_np(ScaledActivation(name)(x))
    expected = REFERENCE_FUNCTIONS[name](x.astype(np.float64)) * GAMMAS[name]
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=2e-5, atol=2e-5)


def test_scaled_gelu_is_the_tanh_approximation_not_erf():
    x = np.array([-3.0, -1.5, -0.7, 0.5, 1.2, 2.5], "float32")
    got = to_np(ScaledActivation("gelu")(x))
    erf = np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x.astype(np.float64)])
    np.testing.assert_allclose(got, _gelu_tanh(x.astype(np.float64)) * GAMMAS["gelu"], rtol=1e-6, atol=1e-7)
    assert np.abs(got - erf * GAMMAS["gelu"]).max() > 1e-4


@pytest.mark.parametrize("name,gamma", [("gelu", None), ("leaky_relu", None), ("relu", 1.0), ("silu", 0.5)])
def test_scaled_activation_serialisation_keeps_activation_and_gamma(name, gamma):
    layer = ScaledActivation(name, gamma=gamma, name="act")
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert isinstance(restored, ScaledActivation)
    assert restored.activation == name
    assert restored.gamma == (GAMMAS[name] if gamma is None else gamma)
    x = np.linspace(-2, 2, 12, dtype="float32").reshape(1, 12)
    np.testing.assert_array_equal(to_np(restored(x)), to_np(layer(x)))


# --------------------------------------------------------------------------------------
# SqueezeExcite
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("channels,ratio,hidden", [(6, 0.5, 3), (8, 0.25, 2), (6, 0.1, 1), (7, 0.5, 3)])
def test_squeeze_excite_equals_sigmoid_relu_mlp_of_spatial_mean(rng, channels, ratio, hidden):
    se = SqueezeExcite(channels, ratio)
    se.build((None, None, None, channels))
    w0 = rng.normal(0, 1.0, (channels, hidden))
    b0 = rng.normal(0, 0.5, hidden)
    w1 = rng.normal(0, 1.0, (hidden, channels))
    b1 = rng.normal(0, 0.5, channels)
    se.linear.kernel.assign(w0.astype("float32"))
    se.linear.bias.assign(b0.astype("float32"))
    se.linear_1.kernel.assign(w1.astype("float32"))
    se.linear_1.bias.assign(b1.astype("float32"))
    x = rng.normal(0.3, 1.0, (3, 4, 5, channels)).astype("float32")
    got = to_np(se(x))
    assert got.shape == (3, 1, 1, channels)
    np.testing.assert_allclose(got, se_np(x, w0, b0, w1, b1), rtol=1e-5, atol=1e-6)


def test_squeeze_excite_hidden_relu_is_plain_not_gamma_scaled(rng):
    channels = 4
    se = SqueezeExcite(channels, 0.5)
    se.build((None, None, None, channels))
    # identity-like first linear with positive bias: the hidden pre-activation is positive,
    # so a gamma-scaled relu (x1.714) would change the gate.
    se.linear.kernel.assign(np.zeros((4, 2), "float32"))
    se.linear.bias.assign(np.array([1.0, 2.0], "float32"))
    se.linear_1.kernel.assign(np.eye(2, 4, dtype="float32"))
    se.linear_1.bias.assign(np.zeros(4, "float32"))
    got = to_np(se(rng.standard_normal((1, 2, 2, channels)).astype("float32")))[0, 0, 0]
    np.testing.assert_allclose(got, _sigmoid(np.array([1.0, 2.0, 0.0, 0.0])), rtol=1e-6)


def test_squeeze_excite_init_matches_haiku_linear_default():
    keras.utils.set_random_seed(0)
    se = SqueezeExcite(512, 0.5)
    se.build((None, None, None, 512))
    for dense, fan_in in ((se.linear, 512), (se.linear_1, 256)):
        w = to_np(dense.kernel) * math.sqrt(fan_in)
        np.testing.assert_array_equal(to_np(dense.bias), 0.0)
        assert np.abs(w).max() <= 2.0 + 1e-6
        assert abs(w.std() - 0.87962566103423978) < 0.01


# --------------------------------------------------------------------------------------
# StochasticDepth
# --------------------------------------------------------------------------------------


def test_stochastic_depth_is_identity_when_not_training(rng):
    x = rng.standard_normal((8, 3, 3, 2)).astype("float32")
    layer = StochasticDepth(0.9, seed=0)
    np.testing.assert_array_equal(to_np(layer(x, training=False)), x)
    np.testing.assert_array_equal(to_np(layer(x)), x)


def test_stochastic_depth_training_keeps_examples_unscaled_or_zeroes_them(rng):
    x = rng.uniform(0.5, 1.5, (64, 3, 2, 2)).astype("float32")
    out = to_np(StochasticDepth(0.5, seed=1)(x, training=True))
    kept = np.all(out == x, axis=(1, 2, 3))
    dropped = np.all(out == 0.0, axis=(1, 2, 3))
    assert np.all(kept | dropped)  # whole examples, no 1/keep rescale
    assert kept.any() and dropped.any()


def test_stochastic_depth_scaled_by_keep_divides_kept_examples_as_timms_drop_path(rng):
    x = rng.uniform(0.5, 1.5, (64, 3, 2, 2)).astype("float32")
    out = to_np(StochasticDepth(0.25, seed=1, scale_by_keep=True)(x, training=True))
    kept = np.all(np.isclose(out, x / 0.75, rtol=1e-6), axis=(1, 2, 3))
    dropped = np.all(out == 0.0, axis=(1, 2, 3))
    assert np.all(kept | dropped) and kept.any() and dropped.any()


def _stochastic_depth_rescaling(model):
    """The `scale_by_keep` values of the model's active stochastic-depth layers."""
    return {layer.scale_by_keep for layer in nested_layers(model) if isinstance(layer, StochasticDepth) and layer.rate}


def test_timm_blocks_rescale_their_stochastic_depth_and_deepminds_do_not():
    timm_model = nfnet_keras.create_model("timm/nf_resnet26", input_shape=(32, 32, 3), stochdepth_rate=0.2)
    deepmind_model = nfnet_keras.create_model("nano", stochdepth_rate=0.2)
    assert _stochastic_depth_rescaling(timm_model) == {True}
    assert _stochastic_depth_rescaling(deepmind_model) == {False}


def test_stochastic_depth_keep_fraction_is_one_minus_rate():
    layer = StochasticDepth(0.3, seed=2)
    x = np.ones((2000, 1, 1, 1), "float32")
    kept = np.concatenate([to_np(layer(x, training=True)).ravel() for _ in range(3)])
    assert set(np.unique(kept)) <= {0.0, 1.0}
    # 6000 Bernoulli(0.7) draws: std 0.006
    assert abs(kept.mean() - 0.7) < 0.03


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5])
def test_stochastic_depth_rate_outside_zero_one_raises_value_error(rate):
    with pytest.raises(ValueError):
        StochasticDepth(rate)


def test_stochastic_depth_rate_zero_is_identity_in_training(rng):
    x = rng.standard_normal((4, 2, 2, 1)).astype("float32")
    np.testing.assert_array_equal(to_np(StochasticDepth(0.0)(x, training=True)), x)


# --------------------------------------------------------------------------------------
# NFBlock
# --------------------------------------------------------------------------------------


def _block_param_shapes(in_ch, out_ch, mid, groups, use_projection):
    """Parameter shapes of a block by reference name (HWIO kernels with I = in/groups)."""
    shapes = {}
    for conv, (kh, cin, cout) in {
        "conv0": (1, in_ch, mid),
        "conv1": (3, mid // groups, mid),
        "conv1b": (3, mid // groups, mid),
        "conv2": (1, mid, out_ch),
        **({"conv_shortcut": (1, in_ch, out_ch)} if use_projection else {}),
    }.items():
        shapes[f"{conv}/kernel"] = (kh, kh, cin, cout)
        shapes[f"{conv}/gain"] = (cout,)
        shapes[f"{conv}/bias"] = (cout,)
    hidden = max(1, int(out_ch * 0.5))
    shapes.update(
        {
            "squeeze_excite/linear/kernel": (out_ch, hidden),
            "squeeze_excite/linear/bias": (hidden,),
            "squeeze_excite/linear_1/kernel": (hidden, out_ch),
            "squeeze_excite/linear_1/bias": (out_ch,),
            "skip_gain": (),
        }
    )
    return shapes


def _random_block_params(rng, shapes):
    params = {}
    for key, shape in shapes.items():
        if key.endswith("/kernel"):
            params[key] = rng.normal(0.0, 1.0, shape)
        elif key.endswith("/gain"):
            params[key] = rng.uniform(0.5, 1.5, shape)
        elif key.endswith("/bias"):
            params[key] = rng.normal(0.0, 0.3, shape)
        else:  # skip_gain
            params[key] = np.array(0.7)
    return {k: v.astype("float32") for k, v in params.items()}


def _assign_by_path(block, params):
    paths = {v.path.split("/", 1)[1]: v for v in block.weights}
    assert set(paths) == set(params)
    for key, value in params.items():
        assert tuple(paths[key].shape) == value.shape, key
        paths[key].assign(value)


def block_np(x, p, stride, beta, alpha, groups, shortcut):
    """The reference NFBlock forward (section 1.6), eval mode, float64."""

    def conv(name, v, s=1, g=1):
        return conv_np(v, ws_np(p[f"{name}/kernel"], p[f"{name}/gain"]), s, g) + p[f"{name}/bias"]

    x = np.asarray(x, np.float64)
    out = act_np(x) * beta
    if shortcut == "pool":
        sc = conv("conv_shortcut", avg_pool_2x2_same_np(out))
    elif shortcut == "projection":
        sc = conv("conv_shortcut", out)
    else:
        sc = x
    out = conv("conv0", out)
    out = conv("conv1", act_np(out), stride, groups)
    out = conv("conv1b", act_np(out), 1, groups)
    out = conv("conv2", act_np(out))
    se = se_np(
        out,
        p["squeeze_excite/linear/kernel"],
        p["squeeze_excite/linear/bias"],
        p["squeeze_excite/linear_1/kernel"],
        p["squeeze_excite/linear_1/bias"],
    )
    out = (se * 2.0) * out
    out = out * p["skip_gain"]
    return out * alpha + sc


@pytest.mark.parametrize(
    "shortcut,in_ch,out_ch,stride,hw,mid,groups",
    [
        ("identity", 8, 8, 1, (5, 6), 4, 2),
        ("projection", 6, 8, 1, (5, 6), 4, 2),
        ("pool", 8, 12, 2, (5, 7), 6, 3),
    ],
)
def test_nfblock_forward_equals_reference_order(rng, shortcut, in_ch, out_ch, stride, hw, mid, groups):
    beta, alpha = 0.8, 0.3
    block = NFBlock(in_ch, out_ch, group_width=2, stride=stride, beta=beta, alpha=alpha, use_two_convs=True)
    assert (block.mid_channels, block.groups) == (mid, groups)
    x = rng.normal(0.0, 1.0, (2, *hw, in_ch)).astype("float32")
    block(x)  # build
    params = _random_block_params(rng, _block_param_shapes(in_ch, out_ch, mid, groups, shortcut != "identity"))
    _assign_by_path(block, params)
    got = to_np(block(x, training=False))
    expected = block_np(x, params, stride, beta, alpha, groups, shortcut)
    assert got.shape == (2, -(-hw[0] // stride), -(-hw[1] // stride), out_ch)
    scale = np.abs(expected).max()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5 * scale)


def test_nfblock_skip_gain_is_a_zero_initialised_scalar_weight():
    block = NFBlock(8, 8, group_width=2, name="nf_block_5")
    block.build((None, None, None, 8))
    skip = [v for v in block.weights if v.path == "nf_block_5/skip_gain"]
    assert len(skip) == 1
    assert tuple(skip[0].shape) == ()
    assert to_np(skip[0]) == 0.0


def test_fresh_identity_block_returns_its_input_exactly(rng):
    block = NFBlock(8, 8, group_width=2, beta=0.9)
    x = rng.standard_normal((2, 4, 5, 8)).astype("float32")
    np.testing.assert_array_equal(to_np(block(x)), x)


def test_nfblock_training_with_stochastic_depth_drops_whole_examples_of_the_branch(rng):
    block = NFBlock(8, 8, group_width=2, stochdepth_rate=0.5, seed=3)
    x = rng.standard_normal((32, 3, 3, 8)).astype("float32")
    block(x)
    block.skip_gain.assign(1.0)
    full = to_np(block(x, training=False))
    trained = to_np(block(x, training=True))
    dropped = np.all(trained == x, axis=(1, 2, 3))  # branch zeroed: identity shortcut only
    kept = np.all(np.isclose(trained, full, rtol=1e-6, atol=1e-6), axis=(1, 2, 3))
    assert np.all(dropped | kept)
    assert dropped.any() and kept.any()
    assert not np.allclose(full, x)  # the branch is not trivially zero
