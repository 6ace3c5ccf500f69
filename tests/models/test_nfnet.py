"""Spec tests for nfnet_keras.NFNet: sizes, structure, weight names, the keras.applications
argument rules, saving, training, and the JAX backend.

Expected numbers come from shared/reference/nfnet_reference.md (sections 1.4-1.10) and
the weight-name layout in README ("Extract features"). Full-size models are built inside
`keras.StatelessScope(initialize_variables=False)` (see `deferred_variables`) so that no
variable memory is allocated.
"""

import contextlib
import math
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import nfnet_keras
from nfnet_keras import NFNet

from support import REPO_ROOT as REPO

# Reference section 1.10 (1000 classes).
PARAMS = {
    "F0": 71_489_284,
    "F1": 132_634_256,
    "F2": 193_779_228,
    "F3": 254_924_200,
    "F4": 316_069_172,
    "F5": 377_214_144,
    "F6": 438_359_116,
    "F7": 499_504_088,
    "F0+": 118_824_516,
    "F1+": 220_357_008,
    "F2+": 321_889_500,
    "F3+": 423_421_992,
    "F4+": 524_954_484,
    "F5+": 626_486_976,
    "F6+": 728_019_468,
    "F7+": 829_551_960,
}
# MACs at the test resolution, in G (round(x / 1e9, 2)).
TEST_MACS = {
    "F0": (256, 12.38),
    "F1": (320, 35.54),
    "F2": (352, 62.59),
    "F3": (416, 114.76),
    "F4": (512, 215.24),
    "F5": (544, 289.76),
    "F6": (576, 377.28),
    "F7": (608, 478.78),
    "F0+": (256, 19.52),
    "F1+": (320, 55.45),
    "F2+": (352, 97.28),
    "F3+": (416, 177.99),
    "F4+": (512, 333.39),
    "F5+": (544, 448.43),
    "F6+": (576, 583.52),
    "F7+": (608, 740.16),
}
FAST = ("F0", "F1", "F0+")


@contextlib.contextmanager
def deferred_variables():
    """Builds models without allocating or initialising their variables.

    A plain `keras.StatelessScope()` defers initialisation only until the scope exits,
    where it initialises every pending variable (gigabytes for F7+). With
    `initialize_variables=False` the pending variables are left on a global list that
    the next scope exit anywhere would initialise, so the list is restored afterwards.
    Only shapes, names and layer attributes of such models may be read.
    """
    from keras.src.backend.common import global_state  # noqa: PLC0415

    pending = list(global_state.get_global_attribute("uninitialized_variables", None) or [])
    try:
        with keras.StatelessScope(initialize_variables=False):
            yield
    finally:
        global_state.set_global_attribute("uninitialized_variables", pending)


def stateless_model(variant, **kwargs):
    with deferred_variables():
        return NFNet(variant, **kwargs)


def to_np(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def nano(**kwargs):
    kwargs = {"classes": 10, "input_shape": (32, 32, 3), "classifier_activation": None, **kwargs}
    return NFNet("nano", **kwargs)


def perturb_all_weights(model, seed=0):
    """Random values for every variable (skip gains included), so no block is an identity."""
    rng = np.random.default_rng(seed)
    for v in model.weights:
        shape = tuple(v.shape)
        if v.path.endswith("gain"):  # skip_gain and conv gains
            value = rng.uniform(0.5, 1.5, shape)
        elif v.path.endswith("/bias"):
            value = rng.normal(0.0, 0.1, shape)
        else:
            value = rng.normal(0.0, 1.0 / math.sqrt(max(1, int(np.prod(shape[:-1])))), shape)
        v.assign(np.asarray(value, "float32"))


@pytest.fixture
def no_download(monkeypatch):
    """Fails the test if anything tries to fetch or load pretrained weights."""
    from nfnet_keras.weights import loading

    def forbidden(*args, **kwargs):
        raise AssertionError("attempted to load/download pretrained weights")

    monkeypatch.setattr(loading, "load_pretrained", forbidden)
    monkeypatch.setattr(loading, "imagenet_weights", forbidden)
    monkeypatch.setattr(keras.utils, "get_file", forbidden)


@pytest.fixture
def float32_policy_restored():
    yield
    keras.config.set_dtype_policy("float32")


@pytest.fixture(scope="module")
def f0():
    return stateless_model("F0", stochdepth_rate=0.25)


# --------------------------------------------------------------------------------------
# Sizes
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", FAST)
def test_parameter_count_equals_reference(variant):
    assert stateless_model(variant).count_params() == PARAMS[variant]


@pytest.mark.slow
@pytest.mark.parametrize("variant", [v for v in PARAMS if v not in FAST])
def test_parameter_count_equals_reference_large_variants(variant):
    assert stateless_model(variant).count_params() == PARAMS[variant]


@pytest.mark.parametrize("variant", FAST)
def test_count_macs_at_test_resolution_equals_reference(variant):
    size, gmacs = TEST_MACS[variant]
    assert round(nfnet_keras.models.count_macs(stateless_model(variant), size) / 1e9, 2) == gmacs


def test_count_macs_f0_at_train_resolution_equals_reference(f0):
    assert round(nfnet_keras.models.count_macs(f0, 192) / 1e9, 2) == 6.98


@pytest.mark.slow
@pytest.mark.parametrize("variant", [v for v in TEST_MACS if v not in FAST])
def test_count_macs_at_test_resolution_equals_reference_large_variants(variant):
    size, gmacs = TEST_MACS[variant]
    assert round(nfnet_keras.models.count_macs(stateless_model(variant), size) / 1e9, 2) == gmacs


# --------------------------------------------------------------------------------------
# Structure (F0, reference 1.4-1.5 and 1.9)
# --------------------------------------------------------------------------------------

F0_STRIDES = [1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1, 1]
F0_GROUPS = [1, 2, 2, 6, 6, 6, 6, 6, 6, 6, 6, 6]
F0_MIDS = [128, 256, 256, 768, 768, 768, 768, 768, 768, 768, 768, 768]
F0_IN_OUT = [(128, 256), (256, 512), (512, 512), (512, 1536)] + [(1536, 1536)] * 8
F0_BETAS = [
    1.0, 0.980581, 0.980581, 0.962250, 0.980581, 0.962250,
    0.944911, 0.928477, 0.912871, 0.898027, 0.980581, 0.962250,
]  # fmt: skip


def test_f0_layer_names_follow_reference_structure(f0):
    names = [layer.name for layer in f0.layers]
    stem = [f"stem_conv{i}" for i in range(4)]
    blocks = [f"nf_block_{i}" for i in range(12)]
    for name in stem + blocks + ["final_conv", "predictions", "stage1", "stage2", "stage3", "stage4"]:
        assert name in names, name
    assert not any(n.startswith("nf_block_") and n not in blocks for n in names)
    order = [names.index(n) for n in stem + blocks + ["final_conv", "predictions"]]
    assert order == sorted(order)


def test_f0_stem_channels_and_strides(f0):
    convs = [f0.get_layer(f"stem_conv{i}") for i in range(4)]
    assert [c.filters for c in convs] == [16, 32, 64, 128]
    assert [c.strides for c in convs] == [(2, 2), (1, 1), (1, 1), (2, 2)]
    assert all(c.kernel_size == (3, 3) for c in convs)


def test_f0_has_no_activation_after_stem_conv3(f0):
    stem_conv3 = f0.get_layer("stem_conv3")
    block0 = f0.get_layer("nf_block_0")
    assert block0.input is stem_conv3.output


def test_f0_conv_shortcut_only_in_blocks_0_1_3_9(f0):
    with_shortcut = [i for i in range(12) if f0.get_layer(f"nf_block_{i}").conv_shortcut is not None]
    assert with_shortcut == [0, 1, 3, 9]


def test_f0_block_strides_groups_widths(f0):
    blocks = [f0.get_layer(f"nf_block_{i}") for i in range(12)]
    assert [b.stride for b in blocks] == F0_STRIDES
    assert [b.groups for b in blocks] == F0_GROUPS
    assert [b.mid_channels for b in blocks] == F0_MIDS
    assert [(b.in_channels, b.out_channels) for b in blocks] == F0_IN_OUT
    assert [b.conv1.groups for b in blocks] == F0_GROUPS
    assert [b.conv1.strides for b in blocks] == [(s, s) for s in F0_STRIDES]
    assert all(b.conv1b is not None and b.conv1b.strides == (1, 1) for b in blocks)
    assert all(b.alpha == 0.2 for b in blocks)


def test_f0_block_betas_follow_expected_std_recursion(f0):
    betas = [f0.get_layer(f"nf_block_{i}").beta for i in range(12)]
    np.testing.assert_allclose(betas, F0_BETAS, atol=1e-6)


def test_f0_stochastic_depth_rates_are_index_times_rate_over_num_blocks(f0):
    blocks = [f0.get_layer(f"nf_block_{i}") for i in range(12)]
    np.testing.assert_allclose([b.stochdepth_rate for b in blocks], [i * 0.25 / 12 for i in range(12)], atol=1e-12)
    assert blocks[0].stochastic_depth is None  # block 0 gets no StochDepth module
    assert all(b.stochastic_depth is not None for b in blocks[1:])
    np.testing.assert_allclose(blocks[11].stochastic_depth.rate, 0.25 * 11 / 12)


def test_f0_final_conv_has_3072_channels_and_classifier_1000(f0):
    assert f0.get_layer("final_conv").filters == 3072
    assert f0.get_layer("final_conv").kernel_size == (1, 1)
    assert tuple(f0.get_layer("predictions").kernel.shape) == (3072, 1000)
    assert f0.get_layer("predictions").dtype_policy.name == "float32"


def test_f0_head_dropout_uses_the_variant_drop_rate(f0):
    assert f0.get_layer("top_dropout").rate == 0.2
    with deferred_variables():
        f4 = NFNet("F4")
    assert f4.get_layer("top_dropout").rate == 0.5


def test_classifier_init_is_normal_std_0_01_and_zero_bias():
    keras.utils.set_random_seed(0)
    m = NFNet("nano", classes=1000)
    kernel = to_np(m.get_layer("predictions").kernel)  # (256, 1000)
    np.testing.assert_array_equal(to_np(m.get_layer("predictions").bias), 0.0)
    assert abs(kernel.std() / 0.01 - 1.0) < 0.01
    assert abs(kernel.mean()) < 1e-4
    assert np.abs(kernel).max() > 0.04  # untruncated: 256k draws reach beyond 4 std


def test_f0_stage_outputs_give_a_stride_4_8_16_32_backbone(f0):
    backbone = keras.Model(f0.input, [f0.get_layer(f"stage{k}").output for k in range(1, 5)])
    shapes = [tuple(s) for s in backbone.output_shape]
    assert shapes == [(None, 64, 64, 256), (None, 32, 32, 512), (None, 16, 16, 1536), (None, 8, 8, 1536)]


def test_nano_multiscale_backbone_runs_at_strides_4_8_16_32():
    m = NFNet("nano", include_top=False, input_shape=(64, 64, 3))
    backbone = keras.Model(m.input, [m.get_layer(f"stage{k}").output for k in range(1, 5)])
    outs = backbone(np.zeros((1, 64, 64, 3), "float32"))
    assert [tuple(o.shape) for o in outs] == [(1, 16, 16, 32), (1, 8, 8, 64), (1, 4, 4, 96), (1, 2, 2, 128)]


# --------------------------------------------------------------------------------------
# Weight paths (the weight-name layout in README ("Extract features"))
# --------------------------------------------------------------------------------------


def expected_f0_paths():
    conv = ("kernel", "gain", "bias")
    paths = {f"stem_conv{i}/{p}" for i in range(4) for p in conv}
    for i in range(12):
        paths.add(f"nf_block_{i}/skip_gain")
        convs = ["conv0", "conv1", "conv1b", "conv2"] + (["conv_shortcut"] if i in (0, 1, 3, 9) else [])
        paths |= {f"nf_block_{i}/{c}/{p}" for c in convs for p in conv}
        paths |= {f"nf_block_{i}/squeeze_excite/{lin}/{p}" for lin in ("linear", "linear_1") for p in ("kernel", "bias")}
    paths |= {f"final_conv/{p}" for p in conv}
    paths |= {"predictions/kernel", "predictions/bias"}
    return paths


def test_f0_weight_paths_are_exactly_the_contract_names(f0):
    paths = [v.path for v in f0.weights]
    assert len(paths) == len(set(paths))
    assert set(paths) == expected_f0_paths()


def test_f0_weight_shapes_follow_reference_layouts(f0):
    shapes = {v.path: tuple(v.shape) for v in f0.weights}
    assert shapes["nf_block_0/skip_gain"] == ()
    assert all(shapes[f"nf_block_{i}/skip_gain"] == () for i in range(12))
    assert shapes["nf_block_3/squeeze_excite/linear/kernel"] == (1536, 768)
    assert shapes["nf_block_3/squeeze_excite/linear_1/kernel"] == (768, 1536)
    assert shapes["nf_block_3/squeeze_excite/linear_1/bias"] == (1536,)
    # HWIO with I = in / groups = 128 for every grouped 3x3 conv
    assert shapes["nf_block_3/conv1/kernel"] == (3, 3, 128, 768)
    assert shapes["nf_block_1/conv1b/kernel"] == (3, 3, 128, 256)
    assert shapes["nf_block_3/conv_shortcut/kernel"] == (1, 1, 512, 1536)
    assert shapes["stem_conv0/kernel"] == (3, 3, 3, 16)
    assert shapes["final_conv/gain"] == (3072,)


def test_fresh_model_skip_gains_are_zero():
    m = nano()
    for v in m.weights:
        if v.path.endswith("skip_gain"):
            assert to_np(v) == 0.0


# --------------------------------------------------------------------------------------
# keras.applications argument rules
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["F8", "G0", "resnet50", "F0++"])
def test_unknown_variant_raises_value_error(variant):
    with pytest.raises(ValueError):
        NFNet(variant)


@pytest.mark.parametrize("weights", ["does/not/exist.weights.h5", "ImageNet-21k", 3])
def test_invalid_weights_argument_raises_value_error(weights, no_download):
    with pytest.raises(ValueError, match="weights"):
        NFNet("nano", weights=weights)


@pytest.mark.parametrize("variant", ["F7", "F0+", "F3+"])
def test_imagenet_weights_for_unpublished_variant_fail_before_download(variant, no_download):
    with pytest.raises(ValueError, match="(?i)no imagenet weights are published"):
        NFNet(variant, weights="imagenet")


def test_application_function_for_unpublished_variant_rejects_imagenet(no_download):
    with pytest.raises(ValueError, match="(?i)no imagenet weights"):
        nfnet_keras.NFNetF7(weights="imagenet")


@pytest.mark.parametrize("pooling", ["sum", "AVG", "mean", 1])
def test_invalid_pooling_raises_value_error(pooling):
    with pytest.raises(ValueError, match="pooling"):
        NFNet("nano", include_top=False, pooling=pooling)


def test_non_softmax_classifier_activation_with_imagenet_weights_fails_before_download(no_download):
    with pytest.raises(ValueError, match="classifier_activation"):
        NFNet("F0", weights="imagenet", classifier_activation="relu")


def test_two_channel_input_with_imagenet_weights_fails_before_download(no_download):
    with pytest.raises(ValueError, match="3 channels"):
        NFNet("F0", weights="imagenet", input_shape=(64, 64, 2))


@pytest.fixture(scope="module")
def nano_weights_file(tmp_path_factory):
    """A local pretrained-weights file: a perturbed nano (1000 classes) and its outputs."""
    keras.utils.set_random_seed(1)
    m = NFNet("nano", input_shape=(32, 32, 3))
    perturb_all_weights(m, seed=1)
    path = str(tmp_path_factory.mktemp("nano_weights") / "nano.weights.h5")
    m.save_weights(path)
    x = np.random.default_rng(1).standard_normal((2, 32, 32, 3)).astype("float32")
    return path, x, to_np(m(x))


def test_non_softmax_classifier_activation_with_weights_file_raises_value_error(nano_weights_file):
    path, _, _ = nano_weights_file
    with pytest.raises(ValueError, match="classifier_activation"):
        NFNet("nano", weights=path, classifier_activation="relu")


def test_two_channel_input_with_weights_file_raises_value_error(nano_weights_file):
    path, _, _ = nano_weights_file
    with pytest.raises(ValueError):
        NFNet("nano", weights=path, input_shape=(32, 32, 2))


def test_weights_file_path_loads_pretrained_weights(nano_weights_file):
    path, x, expected = nano_weights_file
    m = NFNet("nano", weights=path, input_shape=(32, 32, 3))
    np.testing.assert_allclose(to_np(m(x)), expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("shape", [(31, 64, 3), (64, 16, 3), (8, 8, 3)])
def test_input_smaller_than_32_raises_value_error(shape):
    with pytest.raises(ValueError, match="32"):
        NFNet("nano", input_shape=shape)


def test_input_of_exactly_32_is_accepted():
    assert nano(input_shape=(32, 32, 3)).output_shape == (None, 10)


@pytest.mark.parametrize("variant,size", [("F0", 256), ("F1", 320), ("nano", 32)])
def test_default_input_shape_is_the_variant_test_size_with_top(variant, size):
    assert stateless_model(variant).input_shape == (None, size, size, 3)


def test_default_input_shape_without_top_is_dynamic():
    assert stateless_model("F0", include_top=False).input_shape == (None, None, None, 3)


def test_input_tensor_is_used_as_the_model_input():
    inp = keras.Input((40, 48, 3))
    m = NFNet("nano", input_tensor=inp, classes=5)
    assert m.inputs[0] is inp
    out = to_np(m(np.zeros((2, 40, 48, 3), "float32")))
    assert out.shape == (2, 5)
    np.testing.assert_allclose(out.sum(axis=-1), 1.0, rtol=1e-5)  # default softmax


def test_input_tensor_behind_other_layers_keeps_the_source_input():
    inp = keras.Input((36, 36, 3))
    scaled = keras.layers.Rescaling(1.0 / 255.0)(inp)
    m = NFNet("nano", input_tensor=scaled, classes=4, classifier_activation=None)
    assert m.inputs[0] is inp
    assert tuple(m(np.zeros((1, 36, 36, 3), "float32")).shape) == (1, 4)


def test_include_top_false_pooling_none_avg_max():
    x = np.random.default_rng(2).standard_normal((2, 64, 64, 3)).astype("float32")
    features = NFNet("nano", include_top=False, input_shape=(64, 64, 3))
    perturb_all_weights(features, seed=2)
    pooled = {}
    for pooling in ("avg", "max"):
        m = NFNet("nano", include_top=False, pooling=pooling, input_shape=(64, 64, 3))
        m.set_weights(features.get_weights())
        pooled[pooling] = to_np(m(x))
    fmap = to_np(features(x))
    assert fmap.shape == (2, 2, 2, 256)  # 4-D, final_conv width 2 * 128
    assert pooled["avg"].shape == pooled["max"].shape == (2, 256)
    np.testing.assert_allclose(pooled["avg"], fmap.astype(np.float64).mean(axis=(1, 2)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pooled["max"], fmap.max(axis=(1, 2)), rtol=1e-6)


def test_f0_without_top_pooled_features_have_3072_channels():
    assert stateless_model("F0", include_top=False, pooling="avg").output_shape == (None, 3072)


def test_dynamic_spatial_size_runs_on_square_and_odd_inputs():
    m = NFNet("nano", input_shape=(None, None, 3), classes=7, classifier_activation=None)
    for h, w in [(32, 32), (45, 37)]:
        out = to_np(m(np.random.default_rng(h).standard_normal((2, h, w, 3)).astype("float32")))
        assert out.shape == (2, 7)
        assert np.all(np.isfinite(out))


# --------------------------------------------------------------------------------------
# Saving
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def perturbed_nano():
    keras.utils.set_random_seed(3)
    m = nano()
    perturb_all_weights(m, seed=3)
    x = np.random.default_rng(3).standard_normal((3, 32, 32, 3)).astype("float32")
    return m, x


def test_perturbed_model_has_non_zero_skip_gains(perturbed_nano):
    m, _ = perturbed_nano
    skip_gains = [to_np(v) for v in m.weights if v.path.endswith("/skip_gain")]
    assert len(skip_gains) == 4  # nano: one block per stage
    assert all(g != 0.0 for g in skip_gains)


def test_keras_file_save_and_load_model_round_trip(perturbed_nano, tmp_path):
    m, x = perturbed_nano
    path = str(tmp_path / "m.keras")
    m.save(path)
    restored = keras.saving.load_model(path)
    np.testing.assert_array_equal(to_np(restored(x)), to_np(m(x)))
    assert [v.path for v in restored.weights] == [v.path for v in m.weights]
    for a, b in zip(restored.weights, m.weights):
        np.testing.assert_array_equal(to_np(a), to_np(b))


def test_save_weights_load_weights_round_trip(perturbed_nano, tmp_path):
    m, x = perturbed_nano
    path = str(tmp_path / "m.weights.h5")
    m.save_weights(path)
    fresh = nano()
    fresh.load_weights(path)
    np.testing.assert_array_equal(to_np(fresh(x)), to_np(m(x)))


# --------------------------------------------------------------------------------------
# Training and precision
# --------------------------------------------------------------------------------------


def test_nano_model_trains_loss_decreases():
    keras.utils.set_random_seed(4)
    m = nano()
    rng = np.random.default_rng(4)
    x = rng.standard_normal((16, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, 16)
    m.compile(optimizer=keras.optimizers.SGD(0.05), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    # one batch per epoch: epoch k logs the loss before the k-th update
    losses = m.fit(x, y, epochs=4, batch_size=16, verbose=0).history["loss"]
    assert np.all(np.isfinite(losses))
    assert losses[-1] < losses[0] - 1e-3


def test_mixed_bfloat16_nano_has_float32_variables_and_float32_output(float32_policy_restored):
    keras.config.set_dtype_policy("mixed_bfloat16")
    m = nano()
    assert all(keras.backend.standardize_dtype(v.dtype) == "float32" for v in m.weights)
    assert keras.backend.standardize_dtype(m.output.dtype) == "float32"
    assert m.get_layer("nf_block_1").compute_dtype == "bfloat16"
    out = m(np.random.default_rng(5).standard_normal((2, 32, 32, 3)).astype("float32"))
    assert keras.backend.standardize_dtype(out.dtype) == "float32"
    assert np.all(np.isfinite(to_np(out)))


JAX_SCRIPT = textwrap.dedent(
    """
    import os, sys
    import numpy as np
    import keras
    assert keras.backend.backend() == "jax", keras.backend.backend()
    import nfnet_keras

    tmp, tf_weights, tf_io = sys.argv[1], sys.argv[2], sys.argv[3]
    keras.utils.set_random_seed(0)

    def nano():
        m = nfnet_keras.NFNet("nano", classes=10, input_shape=(32, 32, 3), classifier_activation=None)
        # compiled: predict and fit run as one XLA program (uncompiled JAX predict runs op by op)
        m.compile(optimizer=keras.optimizers.SGD(0.05),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        return m

    # 1. forward pass: the weights of the TF run give the TF logits
    m = nano()
    m.load_weights(tf_weights)
    with np.load(tf_io) as io:
        x, tf_out = io["x"], io["out"]
    out = np.asarray(m.predict(x, verbose=0))
    assert out.shape == (3, 10), out.shape
    np.testing.assert_allclose(out, tf_out, rtol=1e-4, atol=1e-4)

    # 2. .keras save / load round trip
    path = os.path.join(tmp, "jax.keras")
    m.save(path)
    restored = keras.saving.load_model(path)
    for a, b in zip(restored.weights, m.weights):
        assert a.path == b.path
        np.testing.assert_array_equal(np.asarray(a.value), np.asarray(b.value))
    np.testing.assert_allclose(np.asarray(restored.predict(x, verbose=0)), out, rtol=1e-6, atol=1e-6)

    # 3. a few fit steps of a fresh model reduce the loss (one batch per epoch:
    #    epoch k logs the loss before the k-th update)
    fresh = nano()
    rng = np.random.default_rng(4)
    xt = rng.standard_normal((16, 32, 32, 3)).astype("float32")
    yt = rng.integers(0, 10, 16)
    losses = fresh.fit(xt, yt, epochs=4, batch_size=16, verbose=0).history["loss"]
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0] - 1e-3, losses
    print("JAX_OK", losses)
    """
)


def test_jax_backend_forward_fit_and_save_load(perturbed_nano, tmp_path):
    pytest.importorskip("jax")
    m, x = perturbed_nano
    weights = str(tmp_path / "tf.weights.h5")
    m.save_weights(weights)
    io = str(tmp_path / "tf_io.npz")
    np.savez(io, x=x, out=to_np(m(x)))
    script = tmp_path / "jax_check.py"
    script.write_text(JAX_SCRIPT)
    env = {
        **os.environ,
        "KERAS_BACKEND": "jax",
        "JAX_PLATFORMS": "cpu",
        "PYTHONPATH": REPO,
        # Building a model on JAX compiles every initializer op by op; cheap XLA
        # compilation makes that ~2.5x faster on CPU without changing the numerics tested.
        "XLA_FLAGS": "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true",
    }
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path), weights, io],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=str(tmp_path),
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "JAX_OK" in proc.stdout


def _nano_gradients(remat):
    import tensorflow as tf

    keras.utils.set_random_seed(1)
    m = NFNet("nano", input_shape=(32, 32, 3), classes=10, stochdepth_rate=0.5, seed=3, remat=remat,
              classifier_activation=None)
    rng = np.random.default_rng(0)
    for w in m.weights:  # non-zero skip gains, so every branch reaches the loss
        w.assign(rng.normal(size=w.shape).astype("float32") * 0.1 + (1.0 if "gain" in w.path else 0.0))
    x = rng.normal(size=(4, 32, 32, 3)).astype("float32")
    y = np.eye(10, dtype="float32")[[1, 2, 3, 4]]

    @tf.function
    def grads():
        with tf.GradientTape() as tape:
            loss = keras.losses.categorical_crossentropy(y, m(x, training=True), from_logits=True)
        return tape.gradient(loss, m.trainable_variables)

    return [np.asarray(g) for g in grads()]


def test_remat_gives_the_same_gradients_with_stochastic_depth_active():
    plain, remat = _nano_gradients(False), _nano_gradients(True)
    assert len(plain) == len(remat)
    for a, b in zip(plain, remat):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5 * float(np.max(np.abs(a))))


def test_remat_is_kept_in_the_block_config():
    m = NFNet("nano", input_shape=(32, 32, 3), classes=10, remat=True)
    blocks = [layer for layer in m.layers if layer.name.startswith("nf_block_")]
    assert blocks and all(b.get_config()["remat"] for b in blocks)
    clone = keras.Model.from_config(m.get_config())
    assert all(clone.get_layer(b.name).remat for b in blocks)
