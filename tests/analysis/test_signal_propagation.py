"""Signal-propagation statistics and plots (`nfnet_keras.analysis.signal_metrics`).

The golden check compares with the metrics DeepMind's Haiku NFNet-F0 returns
(`return_metrics=True`) for the deterministic golden parameters
(`tests/fixtures/golden_F0_seed0.npz`, keys `signal/*` for the two-image batch and
`signal_photo/*` for the photo alone). The other tests use the tiny `nano`
configuration or small `keras.applications` ResNets, with independent oracles
(sub-models and numpy float64 statistics).
"""

import sys

import keras
import numpy as np
import pytest
from support.golden import golden_outputs, golden_params

import nfnet_keras
from nfnet_keras.weights import loading
from nfnet_keras.models.layers import NFBlock, ScaledActivation
from nfnet_keras.analysis.signal_metrics import (
    SignalPropagation,
    plot_signal_propagation,
    set_activation_gamma,
    set_skip_gains,
    signal_propagation,
)

TOLERANCE = 1e-4  # relative error per block and metric, float32 on CPU


def _relative(actual, expected):
    return abs(float(actual) - float(expected)) / abs(float(expected))


def _stats(x):
    """numpy float64 oracle: (average channel squared mean, average channel variance)."""
    x = np.asarray(x, np.float64).reshape(-1, np.shape(x)[-1])
    return float(np.mean(x.mean(axis=0) ** 2)), float(np.mean(x.var(axis=0)))


def _nano(**overrides):
    keras.utils.set_random_seed(1)
    return nfnet_keras.NFNet("nano", input_shape=(32, 32, 3), classes=10, **overrides)


def _images(n=3, size=32, seed=0):
    rng = np.random.default_rng(seed)
    # Spatially smooth, photo-like inputs: upsampled noise plus a per-image offset.
    coarse = rng.standard_normal((n, size // 4, size // 4, 3))
    return (np.repeat(np.repeat(coarse, 4, axis=1), 4, axis=2) + 0.3 * rng.standard_normal((n, 1, 1, 3))).astype(
        np.float32
    )


# -- golden: DeepMind's own metrics ------------------------------------------------


@pytest.fixture(scope="module")
def golden_model():
    model = nfnet_keras.NFNetF0(weights=None, input_shape=(None, None, 3), classifier_activation=None)
    loading.assign_weights(model, loading.dm_to_keras(golden_params()), "golden parameters")
    return model


@pytest.mark.parametrize("prefix, batch", [("signal", slice(None)), ("signal_photo", slice(0, 1))])
def test_golden_f0_signal_metrics_match_deepmind_per_block(golden_model, prefix, batch):
    ref = golden_outputs()
    result = signal_propagation(golden_model, ref["x"][batch])
    metrics = result.as_dict()
    expected_keys = {key.split("/", 1)[1] for key in ref if key.startswith(prefix + "/")}
    assert set(metrics) == expected_keys  # 13 + 13 + 12 metrics
    errors = {key: _relative(metrics[key], ref[f"{prefix}/{key}"]) for key in metrics}
    worst = max(errors, key=errors.get)
    assert errors[worst] <= TOLERANCE, f"{prefix}/{worst}: relative error {errors[worst]:.2e}"
    assert result.names[0] == "stem" and result.names[1:] == tuple(f"nf_block_{i}" for i in range(12))
    assert result.transition.tolist() == [True, True, False, True] + [False] * 5 + [True, False, False]


# -- NFNets: independent oracles on nano ---------------------------------------------


def test_nfnet_block_statistics_match_sub_model_outputs_and_numpy():
    model = _nano()
    set_skip_gains(model, 0.7)
    x = _images()
    result = signal_propagation(model, x)
    blocks = [layer for layer in model.layers if isinstance(layer, NFBlock)]
    probe = keras.Model(model.inputs[0], [blocks[0].input] + [b.output for b in blocks])
    tensors = [keras.ops.convert_to_numpy(t) for t in probe(x)]
    for k, tensor in enumerate(tensors):
        sq_mean, var = _stats(tensor)
        assert result.avg_sq_mean[k] == pytest.approx(sq_mean, rel=1e-5)
        assert result.avg_var[k] == pytest.approx(var, rel=1e-5)


def test_nfnet_residual_variance_is_the_branch_before_skip_gain_and_alpha():
    """Oracle: changing only block j's skip gain from 0 to s changes its output by alpha * s * branch."""
    model = _nano()
    x = _images()
    result = signal_propagation(model, x)
    blocks = [layer for layer in model.layers if isinstance(layer, NFBlock)]
    for j, block in enumerate(blocks):
        probe = keras.Model(model.inputs[0], block.output)
        block.skip_gain.assign(0.0)
        base = keras.ops.convert_to_numpy(probe(x)).astype(np.float64)
        block.skip_gain.assign(0.5)
        moved = keras.ops.convert_to_numpy(probe(x)).astype(np.float64)
        block.skip_gain.assign(0.0)
        branch = (moved - base) / (0.5 * block.alpha)
        assert result.res_avg_var[j] == pytest.approx(_stats(branch)[1], rel=1e-3)


def test_chunked_evaluation_gives_the_same_statistics():
    model = _nano()
    set_skip_gains(model, 1.0)
    x = _images(n=5)
    whole = signal_propagation(model, x)
    chunked = signal_propagation(model, x, batch_size=2)
    assert chunked.num_images == whole.num_images == 5
    for key in ("avg_sq_mean", "avg_var", "res_avg_var"):
        np.testing.assert_allclose(getattr(chunked, key), getattr(whole, key), rtol=1e-5)


def test_backend_tensor_images_give_the_same_statistics_as_numpy():
    model = _nano()
    x = _images()
    from_numpy = signal_propagation(model, x)
    from_tensor = signal_propagation(model, keras.ops.convert_to_tensor(x))
    np.testing.assert_array_equal(from_tensor.avg_var, from_numpy.avg_var)
    np.testing.assert_array_equal(from_tensor.res_avg_var, from_numpy.res_avg_var)


def test_zero_skip_gains_make_identity_blocks_leave_the_statistics_unchanged():
    model = _nano(depths=(1, 2, 1, 1))  # nf_block_2 is the one non-transition block
    x = _images()
    zero = signal_propagation(model, x)
    assert zero.transition.tolist() == [True, True, False, True, True]
    assert zero.avg_var[3] == zero.avg_var[2] and zero.avg_sq_mean[3] == zero.avg_sq_mean[2]
    set_skip_gains(model, 1.0)
    one = signal_propagation(model, x)
    assert one.avg_var[3] != one.avg_var[2]
    # Skip gains scale the branch after it is measured: the residual statistics do not move
    # for block 0 (same input in both runs).
    assert one.res_avg_var[0] == pytest.approx(zero.res_avg_var[0], rel=1e-6)


def test_set_activation_gamma_one_removes_the_gamma_scaling_everywhere():
    model = _nano()
    x = _images()
    scaled = signal_propagation(model, x)
    count = set_activation_gamma(model, 1.0)
    acts = [layer for layer in model._flatten_layers() if isinstance(layer, ScaledActivation)]  # noqa: SLF001
    assert count == len(acts) == 3 + 4 + 1  # stem, one shared per block, final
    t = keras.ops.convert_to_tensor(np.linspace(-3, 3, 13, dtype=np.float32))
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(model.get_layer("stem_act0")(t)),
        keras.ops.convert_to_numpy(keras.ops.gelu(t, approximate=True)),
        rtol=1e-6,
    )
    unscaled = signal_propagation(model, x)
    # Without gamma (1.7015) the stem's three activations shrink its output variance.
    assert unscaled.avg_var[0] < 0.5 * scaled.avg_var[0]


@pytest.mark.parametrize("gamma", [0.0, -1.0, float("nan")])
def test_set_activation_gamma_rejects_non_positive_values(gamma):
    with pytest.raises(ValueError, match="gamma"):
        set_activation_gamma(_nano(), gamma)


def test_set_skip_gains_needs_an_nfnet():
    plain = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3)])
    with pytest.raises(ValueError, match="no NFBlock"):
        set_skip_gains(plain, 1.0)


# -- BatchNorm ResNets from keras.applications ---------------------------------------


@pytest.fixture(scope="module")
def resnet50():
    keras.utils.set_random_seed(0)
    return keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3), classes=10)


def test_resnet50_blocks_are_its_out_layers_with_pool1_as_stem(resnet50):
    x = _images(n=4, size=64)
    result = signal_propagation(resnet50, x, training=True)
    expected = [f"conv{s}_block{b}_out" for s, n in zip((2, 3, 4, 5), (3, 4, 6, 3)) for b in range(1, n + 1)]
    assert list(result.names) == ["stem"] + expected
    # Projection shortcuts open every stage.
    assert np.flatnonzero(result.transition).tolist() == [0, 3, 7, 13]
    probe = keras.Model(
        resnet50.inputs[0], [resnet50.get_layer("pool1_pool").output, resnet50.get_layer("conv4_block2_out").output]
    )
    stem, block = (keras.ops.convert_to_numpy(t) for t in probe(x, training=True))
    assert result.avg_var[0] == pytest.approx(_stats(stem)[1], rel=1e-4)
    assert result.avg_sq_mean[9] == pytest.approx(_stats(block)[0], rel=1e-4)
    # The residual branch ends in BatchNorm (`*_3_bn`), which in training mode normalises over
    # N, H, W: unit variance per channel (up to its epsilon), in every block.
    np.testing.assert_allclose(result.res_avg_var, 1.0, atol=2e-3)


def test_training_mode_restores_the_batchnorm_moving_statistics(resnet50):
    before = [keras.ops.convert_to_numpy(v).copy() for v in resnet50.non_trainable_variables]
    signal_propagation(resnet50, _images(n=2, size=64), training=True)
    after = [keras.ops.convert_to_numpy(v) for v in resnet50.non_trainable_variables]
    assert all(np.array_equal(a, b) for a, b in zip(before, after))


def test_resnet50v2_preactivation_blocks_are_found():
    keras.utils.set_random_seed(0)
    model = keras.applications.ResNet50V2(weights=None, input_shape=(64, 64, 3), classes=10)
    result = signal_propagation(model, _images(n=2, size=64), training=True)
    assert result.num_blocks == 16
    assert result.names[1] == "conv2_block1_out" and result.names[-1] == "conv5_block3_out"
    assert np.all(np.isfinite(result.avg_var)) and np.all(result.res_avg_var > 0)


# -- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "images, match",
    [
        (np.zeros((32, 32, 3), np.float32), "batch of shape"),
        (np.zeros((0, 32, 32, 3), np.float32), "empty batch"),
        (np.zeros((2, 32, 32, 4), np.float32), "do not fit"),
        (np.full((1, 32, 32, 3), np.nan, np.float32), "NaN"),
    ],
)
def test_bad_images_are_refused(images, match):
    with pytest.raises(ValueError, match=match):
        signal_propagation(_nano(), images)


@pytest.mark.parametrize("batch_size", [0, -2, 1.5, True])
def test_bad_batch_size_is_refused(batch_size):
    with pytest.raises(ValueError, match="batch_size"):
        signal_propagation(_nano(), _images(n=2), batch_size=batch_size)


def test_model_without_residual_blocks_is_refused():
    plain = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3), keras.layers.ReLU()])
    with pytest.raises(ValueError, match="no residual blocks"):
        signal_propagation(plain, np.zeros((1, 8, 8, 3), np.float32))


# -- plot ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_results():
    model = _nano()
    x = _images()
    zero = signal_propagation(model, x)
    set_skip_gains(model, 1.0)
    return {"skip gains 0": zero, "skip gains 1": signal_propagation(model, x)}


def test_plot_returns_a_figure_with_three_panels_and_one_line_per_model(two_results):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    from matplotlib import pyplot

    fig = plot_signal_propagation(two_results, log_scale=True, title="nano")
    try:
        assert len(fig.axes) == 3
        first = fig.axes[0]
        assert [t.get_text() for t in first.get_legend().get_texts()] == list(two_results)
        assert first.get_yscale() == "log"
        drawn = first.lines[0].get_ydata()
        np.testing.assert_allclose(drawn, two_results["skip gains 0"].avg_sq_mean)
        residual = fig.axes[2].lines[0]
        np.testing.assert_array_equal(residual.get_xdata(), np.arange(1, 5))  # residual of block j at depth j + 1
    finally:
        pyplot.close(fig)


def test_plot_rejects_empty_or_mismatched_input(two_results):
    pytest.importorskip("matplotlib")
    with pytest.raises(ValueError, match="empty"):
        plot_signal_propagation([])
    with pytest.raises(ValueError, match="2 labels for 1 results"):
        plot_signal_propagation([two_results["skip gains 0"]], labels=["a", "b"])
    with pytest.raises(TypeError, match="SignalPropagation"):
        plot_signal_propagation({"a": {"avg_var": [1.0]}})


def test_plot_without_matplotlib_names_the_plots_extra(two_results, monkeypatch):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"nfnet-keras\[plots\]"):
        plot_signal_propagation(two_results)


def test_as_dict_uses_deepmind_metric_names(two_results):
    result = two_results["skip gains 1"]
    assert isinstance(result, SignalPropagation)
    metrics = result.as_dict()
    assert len(metrics) == 2 * 5 + 4  # nano: stem + 4 blocks, 4 residual branches
    assert metrics["avg_var_4"] == result.avg_var[4] and metrics["res_avg_var_3"] == result.res_avg_var[3]
