"""Spec tests for timm's NF-RegNets and NF-ResNets (`timm/nf_regnet_b0` ... `timm/nf_ecaresnet101`).

The golden outputs are timm 1.0.31's own (PyTorch, eval mode, float32) for the
state dicts and inputs `support.timm_golden` draws from each recipe
(`tests/fixtures/golden_timm_<model>.json`, written with the outputs by
`tools/make_timm_goldens.py`). Parameter counts, state-dict sizes and
evaluation settings are timm's, recorded where each table says. The layer
oracle is float64 numpy, written from PyTorch's definition. MACs:
tests/models/test_flops.py; folding: tests/models/test_folding.py.
"""

import keras
import numpy as np
import pytest
from support.golden import relative_error
from support.timm_golden import (
    GOLDEN_MODELS,
    GOLDEN_SIZES,
    golden_images,
    golden_model_outputs,
    golden_recipe,
    golden_state_dict,
    serve_on_a_file_hub,
    state_dict_from_shapes,
    write_safetensors,
)

import nfnet_keras
from nfnet_keras.models import NFModel, create_model, get_spec, model_names
from nfnet_keras.models.layers import GAMMAS, SymmetricMaxPool2D
from nfnet_keras.weights import loading, timm

TOLERANCE = 1e-4  # max |ours - timm| / max |timm|, float32 on CPU (measured 4e-7 ... 1.7e-6)

# timm 1.0.31 / torch 2.13: (len(model.state_dict()), sum(p.numel() for p in model.parameters())) of
# timm.create_model(name), printed by running timm (its results CSVs agree in millions: 8.76 ... 49.74).
TIMM_SIZES = {
    "nf_regnet_b0": (228, 8_764_288),
    "nf_regnet_b1": (280, 10_223_984),
    "nf_regnet_b2": (306, 14_314_608),
    "nf_regnet_b3": (345, 18_593_832),
    "nf_regnet_b4": (410, 30_210_816),
    "nf_regnet_b5": (514, 49_741_728),
    "nf_resnet26": (89, 15_995_176),
    "nf_resnet50": (161, 25_557_032),
    "nf_resnet101": (314, 44_549_160),
    "nf_seresnet26": (121, 17_395_976),
    "nf_seresnet50": (225, 28_088_024),
    "nf_seresnet101": (446, 49_326_872),
    "nf_ecaresnet26": (97, 15_995_220),
    "nf_ecaresnet50": (177, 25_557_118),
    "nf_ecaresnet101": (347, 44_549_331),
}
# timm 1.0.31's pretrained_cfg: input size, test size (else the input size), crop padding
# floor(test / crop_pct) - test (crop_pct .9, nf_resnet50 .94); all bicubic, crop_mode "center".
TIMM_EVAL = {
    "nf_regnet_b0": (192, 256, 28),
    "nf_regnet_b1": (256, 288, 32),
    "nf_regnet_b2": (240, 272, 30),
    "nf_regnet_b3": (288, 320, 35),
    "nf_regnet_b4": (320, 384, 42),
    "nf_regnet_b5": (384, 456, 50),
    "nf_resnet50": (256, 288, 18),
    **{name: (224, 224, 24) for name in TIMM_SIZES if "resnet" in name and name != "nf_resnet50"},
}
# timm.list_pretrained("nf_*") in timm 1.0.31.
PUBLISHED = {"nf_regnet_b1": "timm/nf_regnet_b1.ra2_in1k", "nf_resnet50": "timm/nf_resnet50.ra2_in1k"}


@pytest.fixture(scope="module")
def golden_models(tmp_path_factory):
    """`{model: NFModel}` with the golden state dict, loaded from timm's `model.safetensors` layout."""
    models = {}
    for name in GOLDEN_MODELS:
        path = write_safetensors(golden_state_dict(name), tmp_path_factory.mktemp(name) / "model.safetensors")
        models[name] = create_model(
            f"timm/{name}", weights=path, input_shape=(None, None, 3), classifier_activation=None
        )
    return models


def pooled_features(model):
    return keras.Model(model.input, model.get_layer("avg_pool").output)


def unbuilt(name, **kwargs):
    """The model's structure without initialising its variables (fast for the big ones)."""
    with keras.StatelessScope(initialize_variables=False):
        return create_model(f"timm/{name}", **kwargs)


# -- golden outputs -------------------------------------------------------------------


@pytest.mark.parametrize("size", GOLDEN_SIZES)
@pytest.mark.parametrize("name", GOLDEN_MODELS)
def test_golden_state_dict_gives_timm_logits_at_even_and_odd_sizes(golden_models, name, size):
    logits = golden_models[name](golden_images(name, size), training=False)
    assert relative_error(logits, golden_model_outputs(name)[f"logits_{size}"]) <= TOLERANCE


@pytest.mark.parametrize("size", GOLDEN_SIZES)
@pytest.mark.parametrize("name", GOLDEN_MODELS)
def test_golden_state_dict_gives_timm_pooled_features(golden_models, name, size):
    features = pooled_features(golden_models[name])(golden_images(name, size), training=False)
    assert relative_error(features, golden_model_outputs(name)[f"pool_{size}"]) <= TOLERANCE


@pytest.mark.parametrize("name", GOLDEN_MODELS)
def test_model_has_timms_state_dict_key_for_key_in_order(golden_models, name):
    assert list(timm.expected_state_dict(golden_models[name]).items()) == golden_recipe(name)["state_dict"]


def test_regnet_attention_weights_land_under_timms_attn_names(golden_models):
    state = golden_state_dict("nf_regnet_b0")
    weights = loading.model_weights(golden_models["nf_regnet_b0"])
    fc1 = keras.ops.convert_to_numpy(weights["stages_1_0/attn/linear/kernel"])
    np.testing.assert_array_equal(fc1, state["stages.1.0.attn.fc1.weight"][:, :, 0, 0].T)
    stem = keras.ops.convert_to_numpy(weights["stem_conv/kernel"])
    np.testing.assert_array_equal(stem, state["stem.conv.weight"].transpose(2, 3, 1, 0))


# -- sizes, settings, registry -------------------------------------------------------


@pytest.mark.parametrize("name", TIMM_SIZES)
def test_state_dict_size_and_parameter_count_equal_timms(name):
    model = unbuilt(name)
    assert (len(timm.expected_state_dict(model)), model.count_params()) == TIMM_SIZES[name]


@pytest.mark.parametrize("name", TIMM_SIZES)
def test_evaluation_settings_are_timms_default_cfg(name):
    config = get_spec(f"timm/{name}").config
    settings = (config["train_imsize"], config["test_imsize"], config["eval_padding"], config["eval_resize"])
    assert settings == (*TIMM_EVAL[name], "shorter_side")


def test_model_carries_timms_test_size_and_crop_padding():
    preprocessing = unbuilt("nf_regnet_b1").preprocessing
    assert (preprocessing.image_size, preprocessing.crop_padding, preprocessing.interpolation) == (288, 32, "bicubic")


def test_every_new_name_is_registered_with_the_timm_prefix_in_the_timm_nfnet_family():
    names = [f"timm/{name}" for name in TIMM_SIZES]
    assert set(names) <= set(model_names())
    assert {get_spec(name).family for name in names} == {"timm_nfnet"}


def test_only_the_names_timm_publishes_weights_for_have_imagenet_weights():
    pretrained = {name for name in TIMM_SIZES if get_spec(f"timm/{name}").pretrained}
    assert pretrained == set(PUBLISHED)
    assert {name: timm.IMAGENET_WEIGHTS[name].repo_id for name in PUBLISHED} == PUBLISHED


@pytest.mark.parametrize("name", ["nf_regnet_b0", "nf_seresnet50"])
def test_imagenet_weights_of_an_unpublished_name_are_refused_with_one_line(monkeypatch, name):
    monkeypatch.setattr(keras.utils, "get_file", None)  # refused before any download
    with pytest.raises(ValueError, match=rf"^weights='imagenet' is not available for timm/{name}: [^\n]*$"):
        create_model(f"timm/{name}", weights="imagenet")


def test_imagenet_weights_of_nf_regnet_b1_come_from_timms_hub_repository(tmp_path, monkeypatch):
    with keras.StatelessScope(initialize_variables=False):
        shapes = timm.expected_state_dict(create_model("timm/nf_regnet_b1"))
    state = state_dict_from_shapes(list(shapes.items()), seed=1)
    serve_on_a_file_hub(tmp_path, monkeypatch, PUBLISHED["nf_regnet_b1"], state)
    model = create_model("timm/nf_regnet_b1", weights="imagenet")
    final = keras.ops.convert_to_numpy(loading.model_weights(model)["final_conv/gain"])
    np.testing.assert_array_equal(final, state["final_conv.gain"].reshape(-1))


def test_application_functions_exist_for_the_published_names_only():
    assert {"TimmNFRegNetB1", "TimmNFResNet50"} <= set(nfnet_keras.__all__)
    with keras.StatelessScope(initialize_variables=False):
        model = nfnet_keras.TimmNFResNet50(include_top=False)
    assert (model.name, model.preprocessing.image_size, model.preprocessing.crop_padding) == ("nf_resnet50", 288, 18)


# -- structure ----------------------------------------------------------------------


def test_regnet_bottleneck_is_2_25_times_the_input_width_with_se_on_the_mid_channels():
    model = unbuilt("nf_regnet_b0")
    # Widths 40, 80, 160, 328 (0.75 x 48, 104, 208, 440, rounded to 8); groups of 8.
    first, second, third = (model.get_layer(name) for name in ("stages_0_0", "stages_1_0", "stages_1_1"))
    # The very first block expands 1.0x; then make_divisible(40 * 2.25) = 88, make_divisible(80 * 2.25) = 184.
    assert [(b.mid_channels, b.groups) for b in (first, second, third)] == [(40, 5), (88, 11), (184, 23)]
    assert (second.attn.channels, second.attn.hidden, second.attn_last) == (88, 48, None)


def test_regnet_stem_is_one_3x3_stride_2_conv_and_every_stage_halves_the_resolution():
    model = unbuilt("nf_regnet_b0")
    stem = model.get_layer("stem_conv")
    assert (stem.kernel_size, stem.strides, stem.filters, stem.gamma) == ((3, 3), (2, 2), 40, GAMMAS["silu"])
    assert [model.get_layer(f"stages_{s}_0").stride for s in range(4)] == [2, 2, 2, 2]
    assert model.get_layer("final_conv").filters == 960  # 0.75 * (1280 * 440 // 440)


def test_regnet_b2_final_conv_is_a_rounded_0_75_of_1280_times_the_last_width_over_440():
    # 1280 * 488 // 440 = 1419; 0.75 * 1419 = 1064.25 -> 1064.
    assert unbuilt("nf_regnet_b2", include_top=False).get_layer("final_conv").filters == 1064


def test_resnet_stem_is_a_7x7_stride_2_conv_and_a_max_pool_then_stage_0_keeps_the_resolution():
    model = unbuilt("nf_resnet26", input_shape=(64, 64, 3))
    stem = model.get_layer("stem_conv")
    assert (stem.kernel_size, stem.strides, stem.filters, stem.gamma) == ((7, 7), (2, 2), 64, GAMMAS["relu"])
    assert model.get_layer("stem_pool").output.shape[1:3] == (16, 16)
    assert [model.get_layer(f"stages_{s}_0").stride for s in range(4)] == [1, 2, 2, 2]
    assert model.get_layer("stages_0_0").downsample_pool is None  # 64 -> 256 channels, stride 1: conv only


def test_resnet_has_no_final_conv_and_activates_the_last_stage_with_plain_relu():
    model = unbuilt("nf_resnet26", include_top=False)
    assert "final_conv" not in [layer.name for layer in model.layers]
    assert (model.get_layer("final_act").activation, model.get_layer("final_act").gamma) == ("relu", 1.0)


def test_resnet_bottleneck_is_a_quarter_of_the_output_in_one_group_with_se_of_a_sixteenth():
    model = unbuilt("nf_seresnet50")
    blocks = [model.get_layer(f"stages_{s}_0") for s in range(4)]
    assert [(b.mid_channels, b.groups) for b in blocks] == [(64, 1), (128, 1), (256, 1), (512, 1)]
    assert [(b.attn_last.channels, b.attn_last.hidden, b.attn) for b in blocks][3] == (2048, 128, None)


def test_blocks_are_not_conv2b_blocks():
    assert unbuilt("nf_ecaresnet26").get_layer("stages_1_1").conv2b is None
    assert unbuilt("nf_regnet_b0").get_layer("stages_1_1").conv2b is None


@pytest.mark.parametrize("name", ["nf_regnet_b0", "nf_resnet26"])
def test_model_rebuilt_from_its_config_computes_the_same_function(golden_models, name):
    model = golden_models[name]
    rebuilt = NFModel.from_config(model.get_config())
    rebuilt.set_weights(model.get_weights())
    x = golden_images(name, 64)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(rebuilt(x)), keras.ops.convert_to_numpy(model(x)))


# -- the stem pool (float64 numpy oracle of PyTorch's MaxPool2d(3, 2, padding=1)) -----------


def torch_max_pool(x, size=3, stride=2, pad=1):
    """PyTorch's max pool: `pad` cells of -inf on every side, floor of the window count."""
    x = np.pad(np.asarray(x, np.float64), [(0, 0), (pad, pad), (pad, pad), (0, 0)], constant_values=-np.inf)
    out_h, out_w = (x.shape[1] - size) // stride + 1, (x.shape[2] - size) // stride + 1
    return np.stack(
        [
            np.stack(
                [
                    x[:, i * stride : i * stride + size, j * stride : j * stride + size].max(axis=(1, 2))
                    for j in range(out_w)
                ],
                1,
            )
            for i in range(out_h)
        ],
        1,
    )


@pytest.mark.parametrize("size", [8, 9])
def test_stem_pool_is_pytorchs_max_pool_padded_on_every_side(size):
    # All negative: a zero-padded (or bottom/right-padded "same") pool would differ at the borders.
    x = -1.0 - np.random.default_rng(4).random((2, size, size, 3)).astype("float32")
    out = keras.ops.convert_to_numpy(SymmetricMaxPool2D(3, strides=2, padding=1)(x))
    np.testing.assert_array_equal(out, torch_max_pool(x).astype(np.float32))


@pytest.mark.parametrize(("pool_size", "padding", "size"), [(3, 2, 9), (5, 2, 11), (5, 4, 10)])
def test_stem_pool_matches_pytorch_for_any_padding_below_the_window(pool_size, padding, size):
    x = -1.0 - np.random.default_rng(5).random((1, size, size, 2)).astype("float32")
    out = keras.ops.convert_to_numpy(SymmetricMaxPool2D(pool_size, strides=2, padding=padding)(x))
    np.testing.assert_array_equal(out, torch_max_pool(x, pool_size, 2, padding).astype(np.float32))


def test_stem_pool_gradient_reaches_each_windows_maximum_once():
    values = -1.0 - np.random.default_rng(6).random((1, 8, 8, 2)).astype("float32")
    x = keras.ops.convert_to_tensor(values)
    pool = SymmetricMaxPool2D(3, strides=2, padding=1)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf  # noqa: PLC0415

        with tf.GradientTape() as tape:
            tape.watch(x)
            total = keras.ops.sum(pool(x))
        grad = tape.gradient(total, x).numpy()
    else:
        import jax  # noqa: PLC0415

        grad = np.asarray(jax.grad(lambda v: keras.ops.sum(pool(v)))(x))
    # PyTorch's gradient: each output window sends 1 to the cell holding its maximum.
    padded = np.pad(values, [(0, 0), (1, 1), (1, 1), (0, 0)], constant_values=-np.inf)
    expected = np.zeros_like(padded)
    for i in range(4):
        for j in range(4):
            for c in range(2):
                window = padded[0, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3, c]
                r, q = np.unravel_index(np.argmax(window), window.shape)
                expected[0, 2 * i + r, 2 * j + q, c] += 1
    np.testing.assert_array_equal(grad, expected[:, 1:-1, 1:-1])
