"""Spec tests for timm's light NFNets (`nfnet_keras.models.timm_nfnet`, `nfnet_keras.weights.timm`).

The golden outputs are timm 1.0.31's `eca_nfnet_l0` (PyTorch, eval mode) for the
state dict `support.timm_golden.timm_state_dict()` rebuilds; parameter counts are
timm's (the spec's `params`, and timm's results CSVs in millions). The layer
oracles are float64 numpy, written from timm's formulas (shared/reference/peers.md
section 1.1; timm/layers/eca.py, padding.py), not from the package code.
"""

import math

import keras
import numpy as np
import pytest
from support.golden import golden_outputs, golden_params, relative_error, write_golden_checkpoint
from support.subprocesses import run_script
from support.timm_golden import (
    serve_on_a_file_hub,
    timm_golden_outputs,
    timm_spec,
    timm_state_dict,
    write_safetensors,
)

import nfnet_keras
from nfnet_keras.models import NFModel, create_model, get_spec, model_names
from nfnet_keras.models.layers.activations import GAMMAS
from nfnet_keras.models.layers.eca import EfficientChannelAttention, eca_kernel_size
from nfnet_keras.models.layers.std_conv_timm import ScaledStdConv2D
from nfnet_keras.models.timm_nfnet import TimmNFNet
from nfnet_keras.weights import loading, timm

L0 = "timm/eca_nfnet_l0"
TOLERANCE = 1e-5  # max |ours - timm| / max |timm|, float32 on CPU (measured about 1e-6)
# A small eca_nfnet_l0 (8-channel bottlenecks) for the tests that need a fresh model.
SMALL = {"channels": (32, 64, 96, 128), "stem_chs": 32, "group_size": 8, "depths": (1, 1, 1, 1)}


@pytest.fixture(scope="module")
def state_dict():
    return timm_state_dict()


@pytest.fixture(scope="module")
def golden_file(state_dict, tmp_path_factory):
    """The golden state dict as timm publishes weights: `model.safetensors`."""
    return write_safetensors(state_dict, tmp_path_factory.mktemp("timm") / "model.safetensors")


@pytest.fixture(scope="module")
def golden_model(golden_file):
    return create_model(L0, weights=golden_file, input_shape=(None, None, 3), classifier_activation=None)


def small(**kwargs):
    return TimmNFNet(**{"input_shape": (64, 64, 3), "classes": 10, "classifier_activation": None, **SMALL, **kwargs})


def without(state, key):
    return {k: v for k, v in state.items() if k != key}


def variable(model, keras_key):
    return keras.ops.convert_to_numpy(loading.model_weights(model)[keras_key])


# -- golden outputs (the "must show") ---------------------------------------


def test_golden_state_dict_gives_timm_logits_at_224_px(golden_model):
    ref = timm_golden_outputs()
    assert relative_error(golden_model(ref["x"], training=False), ref["logits"]) <= TOLERANCE


def test_golden_state_dict_gives_timm_logits_at_odd_227_px(golden_model):
    ref = timm_golden_outputs()
    assert relative_error(golden_model(ref["x_odd"], training=False), ref["logits_odd"]) <= TOLERANCE


def test_golden_state_dict_gives_timm_pooled_features(golden_model):
    features = keras.Model(golden_model.input, golden_model.get_layer("avg_pool").output)
    ref = timm_golden_outputs()
    assert relative_error(features(ref["x"], training=False), ref["pool"]) <= TOLERANCE


def test_golden_outputs_on_jax_backend(golden_file):
    result = run_script("timm_golden.py", [golden_file], "jax", timeout=600)
    assert result["backend"] == "jax"
    assert set(result["errors"]) == {"logits", "logits_odd", "pool"}
    assert all(error <= TOLERANCE for error in result["errors"].values()), result["errors"]


# -- timm state dicts ----------------------------------------------------------------


def test_model_has_timms_eca_nfnet_l0_state_dict_key_for_key_in_order(golden_model):
    assert list(timm.expected_state_dict(golden_model).items()) == timm_spec()["state_dict"]


def test_safetensors_tensors_land_in_keras_layouts(golden_model, state_dict):
    conv = state_dict["stages.2.0.conv2.weight"]  # OIHW, grouped
    assert np.array_equal(variable(golden_model, "stages_2_0/conv2/kernel"), conv.transpose(2, 3, 1, 0))
    gain = state_dict["stages.3.0.downsample.conv.gain"]
    assert np.array_equal(variable(golden_model, "stages_3_0/downsample_conv/gain"), gain.reshape(-1))
    eca = state_dict["stages.1.1.attn_last.conv.weight"]  # (1, 1, k)
    assert np.array_equal(variable(golden_model, "stages_1_1/attn_last/kernel"), eca.reshape(-1, 1, 1))
    assert np.array_equal(variable(golden_model, "predictions/kernel"), state_dict["head.fc.weight"].T)


def test_missing_tensor_is_refused_naming_it(golden_model, state_dict):
    with pytest.raises(ValueError, match=r"^[^\n]*missing \(1\): stages\.2\.3\.conv2b\.gain[^\n]*$"):
        timm.load_state_dict(golden_model, without(state_dict, "stages.2.3.conv2b.gain"))


def test_mis_shaped_tensor_is_refused_naming_it_and_both_shapes(golden_model, state_dict):
    state = dict(state_dict, **{"stages.1.0.conv1.weight": np.zeros((128, 256, 3, 3), np.float32)})
    shapes = r"\(file shape \(128, 256, 3, 3\), model shape \(128, 256, 1, 1\)\)"
    pattern = r"^[^\n]*mismatched \(1\): stages\.1\.0\.conv1\.weight " + shapes + r"[^\n]*$"
    with pytest.raises(ValueError, match=pattern):
        timm.load_state_dict(golden_model, state)


def test_unexpected_tensor_is_refused_naming_it(golden_model, state_dict):
    state = dict(state_dict, **{"stages.0.0.skipinit_gain": np.zeros((), np.float32)})
    with pytest.raises(ValueError, match=r"^[^\n]*not in the model \(1\): stages\.0\.0\.skipinit_gain[^\n]*$"):
        timm.load_state_dict(golden_model, state)


def test_refused_state_dict_assigns_nothing(state_dict):
    model = TimmNFNet(input_shape=(64, 64, 3))
    before = variable(model, "stem_conv1/kernel")
    with pytest.raises(ValueError):
        timm.load_state_dict(model, without(state_dict, "final_conv.bias"))
    assert np.array_equal(variable(model, "stem_conv1/kernel"), before)


def test_other_class_count_loads_everything_but_the_classifier(golden_file, state_dict):
    model = create_model(L0, weights=golden_file, input_shape=(64, 64, 3), classes=10)
    assert np.array_equal(variable(model, "final_conv/bias"), state_dict["final_conv.bias"])
    assert variable(model, "predictions/kernel").shape == (2304, 10)


def test_keras_weights_file_loads_by_our_names(tmp_path):
    model = small()
    for v in model.weights:  # off their inits, so that a partial load would show
        v.assign(np.random.default_rng(4).normal(0.0, 0.1, tuple(v.shape)).astype("float32"))
    path = str(tmp_path / "small.weights.h5")
    model.save_weights(path)
    x = np.random.default_rng(5).standard_normal((1, 64, 64, 3)).astype("float32")
    loaded = small(weights=path)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(loaded(x)), keras.ops.convert_to_numpy(model(x)))


# -- sizes ------------------------------------------------------------------------


def test_parameter_count_equals_timm(golden_model):
    assert golden_model.count_params() == timm_spec()["params"] == 24_143_924


def test_nfnet_l0_parameter_count_equals_timm():
    # timm's CSV: 35.07 M. Exactly: eca_nfnet_l0's count without its 12 ECA kernels of 5,
    # plus per block an SE of C/4 hidden channels with biases (2 C C/4 + C/4 + C).
    se = sum(n * (2 * c * (c // 4) + c // 4 + c) for n, c in ((1, 256), (2, 512), (6, 1536), (3, 1536)))
    assert create_model("timm/nfnet_l0").count_params() == 24_143_924 - 12 * 5 + se == 35_074_488


@pytest.mark.parametrize(
    "variant, millions", [("eca_nfnet_l1", 41.41), ("eca_nfnet_l2", 56.72), ("eca_nfnet_l3", 72.04)]
)
def test_larger_variants_parameter_counts_equal_timms_csv(variant, millions):
    assert round(create_model(f"timm/{variant}").count_params() / 1e6, 2) == millions


# -- layers (float64 numpy oracles from timm's formulas) ------------------------------


def numpy_conv(x, kernel, stride, pad):
    """Cross-correlation of NHWC `x` with an HWIO kernel, `pad` zeros on every side."""
    x = np.pad(np.asarray(x, np.float64), [(0, 0), (pad, pad), (pad, pad), (0, 0)])
    kh, kw = kernel.shape[:2]
    out_h, out_w = (x.shape[1] - kh) // stride + 1, (x.shape[2] - kw) // stride + 1
    out = np.zeros((x.shape[0], out_h, out_w, kernel.shape[3]))
    for i in range(out_h):
        for j in range(out_w):
            patch = x[:, i * stride : i * stride + kh, j * stride : j * stride + kw, :]
            out[:, i, j] = np.tensordot(patch, kernel, axes=([1, 2, 3], [0, 1, 2]))
    return out


def test_std_conv_adds_eps_inside_the_square_root_and_folds_gamma():
    conv = ScaledStdConv2D(4, 3, gamma=GAMMAS["silu"], eps=1e-5)
    conv.build((None, None, None, 2))
    rng = np.random.default_rng(0)
    # A variance near eps, where adding it and flooring fan_in * var at it differ.
    kernel = 1e-3 * rng.standard_normal((3, 3, 2, 4))
    gain = 1.0 + 0.2 * rng.standard_normal(4)
    conv.kernel.assign(kernel)
    conv.gain.assign(gain)
    centred = kernel - kernel.mean(axis=(0, 1, 2))
    expected = centred / np.sqrt(kernel.var(axis=(0, 1, 2)) + 1e-5) * gain * GAMMAS["silu"] / math.sqrt(18)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(conv.standardized_kernel()), expected, rtol=1e-5)


@pytest.mark.parametrize("size", [8, 9])
def test_stride_2_conv_pads_one_pixel_on_every_side_like_pytorch(size):
    conv = ScaledStdConv2D(3, 3, strides=2)
    x = np.random.default_rng(1).standard_normal((1, size, size, 2)).astype("float32")
    out = keras.ops.convert_to_numpy(conv(x))
    kernel = keras.ops.convert_to_numpy(conv.standardized_kernel()).astype(np.float64)
    np.testing.assert_allclose(out, numpy_conv(x, kernel, 2, 1), atol=1e-5)


@pytest.mark.parametrize("channels, size", [(64, 3), (256, 5), (512, 5), (1536, 5), (2048, 7)])
def test_eca_kernel_size_grows_with_log2_of_the_channels(channels, size):
    assert eca_kernel_size(channels) == size


def test_eca_gate_is_sigmoid_of_a_zero_padded_convolution_over_pooled_channels():
    layer = EfficientChannelAttention(16)  # kernel size 3
    x = np.random.default_rng(2).standard_normal((2, 4, 5, 16)).astype("float32")
    layer.build(x.shape)
    taps = np.array([0.5, -1.0, 2.0])
    layer.kernel.assign(taps.reshape(3, 1, 1))
    pooled = np.pad(x.astype(np.float64).mean(axis=(1, 2)), [(0, 0), (1, 1)])
    conv = taps[0] * pooled[:, :-2] + taps[1] * pooled[:, 1:-1] + taps[2] * pooled[:, 2:]
    expected = 1.0 / (1.0 + np.exp(-conv))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x))[:, 0, 0], expected, rtol=1e-5)


# -- structure --------------------------------------------------------------------


def test_fresh_blocks_start_with_zero_conv3_gains_and_have_no_skip_gain():
    model = small()
    keys = loading.model_weights(model)
    assert not any(key.endswith("skip_gain") for key in keys)
    assert all(not variable(model, key).any() for key in keys if key.endswith("/conv3/gain"))


def test_activations_are_plain_silu_with_gamma_in_every_conv():
    model = small()
    assert model.get_layer("final_act").gamma == 1.0
    assert model.get_layer("stem_act2").gamma == 1.0
    assert model.get_layer("stem_conv1").gamma == GAMMAS["silu"]
    block = model.get_layer("stages_1_0")
    assert all(conv.gamma == GAMMAS["silu"] for conv in (block.conv1, block.conv2, block.conv3, block.downsample_conv))


def test_light_bottleneck_is_a_quarter_of_the_output_in_groups_of_64(golden_model):
    blocks = [golden_model.get_layer(f"stages_{s}_0") for s in range(4)]
    assert [(b.mid_channels, b.groups) for b in blocks] == [(64, 1), (128, 2), (384, 6), (384, 6)]
    assert [b.stride for b in blocks] == [1, 2, 2, 2]
    assert [b.downsample_pool is not None for b in blocks] == [False, True, True, True]


def test_nfnet_l0_gates_with_a_quarter_width_squeeze_excite():
    model = create_model("timm/nfnet_l0", include_top=False)
    gates = [model.get_layer(f"stages_{s}_0").attn_last for s in range(4)]
    assert [(g.channels, g.hidden) for g in gates] == [(256, 64), (512, 128), (1536, 384), (1536, 384)]


def test_final_conv_is_one_and_a_half_times_the_last_width_for_l0_and_twice_for_l1():
    assert create_model(L0, include_top=False).get_layer("final_conv").filters == 2304
    assert create_model("timm/eca_nfnet_l1", include_top=False).get_layer("final_conv").filters == 3072


def test_model_rebuilt_from_its_config_computes_the_same_function():
    model = small()
    rebuilt = NFModel.from_config(model.get_config())
    rebuilt.set_weights(model.get_weights())
    x = np.random.default_rng(3).standard_normal((2, 64, 64, 3)).astype("float32")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(rebuilt(x)), keras.ops.convert_to_numpy(model(x)))


# -- the model's settings, arguments, registry --------------------------------------


def test_model_carries_timms_test_size_full_crop_preprocessing_and_imagenet_class_names():
    model = create_model(L0)
    assert (model.preprocessing.image_size, model.preprocessing.crop_padding) == (288, 0)
    assert model.preprocessing.interpolation == "bicubic"
    assert len(model.class_names) == 1000 and model.class_names[0] == "tench"


def test_timm_names_are_registered_beside_the_existing_ones():
    names = ["timm/eca_nfnet_l0", "timm/eca_nfnet_l1", "timm/eca_nfnet_l2", "timm/eca_nfnet_l3", "timm/nfnet_l0"]
    names += [f"timm/nf_regnet_b{i}" for i in range(6)]
    names += [f"timm/nf_{kind}resnet{depth}" for kind in ("", "se", "eca") for depth in (26, 50, 101)]
    names += [f"timm/dm_nfnet_f{i}" for i in range(7)]
    assert [n for n in model_names() if n.startswith("timm/")] == names
    assert {"nfnet_f0", "nf_regnet_b0", "nf_resnet50"} <= set(model_names())
    assert get_spec("timm/ECA_NFNet_L2").config["test_imsize"] == 384
    exported = {"TimmNFNet", "ECANFNetL0", "ECANFNetL1", "ECANFNetL2", "ECANFNetL3", "NFNetL0"}
    assert exported <= set(nfnet_keras.__all__)


def test_imagenet_weights_of_eca_nfnet_l3_which_timm_did_not_publish_are_refused_with_one_line(monkeypatch):
    monkeypatch.setattr(keras.utils, "get_file", None)  # refused before any download
    with pytest.raises(ValueError, match=r"^weights='imagenet' is not available for timm/eca_nfnet_l3: [^\n]*$"):
        create_model("timm/eca_nfnet_l3", weights="imagenet")


def test_every_light_nfnet_but_eca_nfnet_l3_has_imagenet_weights():
    light = [f"timm/{n}" for n in ("eca_nfnet_l0", "eca_nfnet_l1", "eca_nfnet_l2", "eca_nfnet_l3", "nfnet_l0")]
    assert [n for n in light if get_spec(n).pretrained] == light[:3] + light[4:]


# -- timm's dm_nfnet_f0 ... f6: our NFNet-F (DeepMind's numerics) with timm's weights -------------

DM_F0 = "timm/dm_nfnet_f0"
DM_F0_REPO = "timm/dm_nfnet_f0.dm_in1k"
# timm's default_cfgs: test size, and crop padding floor(size / crop_pct) - size (crop_pct .9 ... .956).
DM_EVAL = {0: (256, 28), 1: (320, 31), 2: (352, 30), 3: (416, 26), 4: (512, 26), 5: (544, 26), 6: (576, 26)}
# shared/reference/peers.md 1.4: tensors of timm's state dict, parameters.
DM_SIZES = {
    0: (233, 71_489_284),
    1: (437, 132_634_256),
    2: (641, 193_779_228),
    3: (845, 254_924_200),
    4: (1049, 316_069_172),
    5: (1253, 377_214_144),
    6: (1457, 438_359_116),
}


def haiku_to_timm(tree, depths):
    """Test oracle, written from shared/reference/peers.md 1.5: DeepMind's Haiku tree -> timm's dm_nfnet state dict.

    stem_convN -> stem.conv{N+1}; nf_block[_k] (global) -> stages.S.B; conv0/conv1/conv1b/conv2 ->
    conv1/conv2/conv2b/conv3; conv_shortcut -> downsample.conv; squeeze_excite/linear{,_1} ->
    attn_last.fc1/fc2; skip_gain -> skipinit_gain; linear -> head.fc. Conv w HWIO -> OIHW, gain
    (O,) -> (O,1,1,1), SE w (in,out) -> (out,in,1,1), head w (in,out) -> (out,in).
    """
    stage_block = [(s, b) for s, depth in enumerate(depths) for b in range(depth)]
    convs = {"conv0": "conv1", "conv1": "conv2", "conv1b": "conv2b", "conv2": "conv3", "conv_shortcut": "downsample.conv"}
    state = {}
    for module, params in tree.items():
        path = module.split("/~/")[1:]
        if path == ["linear"]:
            state["head.fc.weight"], state["head.fc.bias"] = params["w"].T, params["b"]
            continue
        if path[0].startswith("stem_conv"):
            prefix = f"stem.conv{int(path[0][len('stem_conv'):]) + 1}"
        elif path[0] == "final_conv":
            prefix = "final_conv"
        else:
            s, b = stage_block[int(path[0][len("nf_block_") :] or 0)]
            if len(path) == 1:
                state[f"stages.{s}.{b}.skipinit_gain"] = params["skip_gain"]
                continue
            if path[1] == "squeeze_excite":
                fc = {"linear": "fc1", "linear_1": "fc2"}[path[2]]
                state[f"stages.{s}.{b}.attn_last.{fc}.weight"] = params["w"].T[:, :, None, None]
                state[f"stages.{s}.{b}.attn_last.{fc}.bias"] = params["b"]
                continue
            prefix = f"stages.{s}.{b}.{convs[path[1]]}"
        state[f"{prefix}.weight"] = params["w"].transpose(3, 2, 0, 1)
        state[f"{prefix}.bias"] = params["bias"]
        state[f"{prefix}.gain"] = params["gain"].reshape(-1, 1, 1, 1)
    return {key: np.array(value, order="C") for key, value in state.items()}


@pytest.fixture(scope="module")
def dm_golden_state():
    return haiku_to_timm(golden_params(), depths=(1, 2, 6, 3))


@pytest.fixture(scope="module")
def deepmind_loaded_f0(tmp_path_factory):
    checkpoint = write_golden_checkpoint(tmp_path_factory.mktemp("dm") / "F0_golden.npz")
    return nfnet_keras.NFNetF0(weights=str(checkpoint), classifier_activation=None)


def test_dm_nfnet_f0_with_timms_weights_computes_exactly_the_deepmind_loaded_logits(
    tmp_path, monkeypatch, dm_golden_state, deepmind_loaded_f0
):
    serve_on_a_file_hub(tmp_path, monkeypatch, DM_F0_REPO, dm_golden_state)
    model = create_model(DM_F0, weights="imagenet", classifier_activation=None)
    x = golden_outputs()["x"]
    expected = keras.ops.convert_to_numpy(deepmind_loaded_f0(x, training=False))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model(x, training=False)), expected)


def test_dm_nfnet_wrong_tensor_shape_is_one_line_naming_the_tensor(tmp_path, monkeypatch, dm_golden_state):
    state = dict(dm_golden_state, **{"stages.1.0.conv1.weight": np.zeros((256, 256, 3, 3), np.float32)})
    serve_on_a_file_hub(tmp_path, monkeypatch, DM_F0_REPO, state)
    # timm's stages.1.0.conv1 is DeepMind's nf_block_1/conv0, the name the model knows it by.
    pattern = (
        r"^Weights from [^\n]* do not fit model 'dm_nfnet_f0': mismatched \(1\): nf_block_1/conv0/kernel "
        r"\(file shape \(3, 3, 256, 256\), model shape \(1, 1, 256, 256\)\)$"
    )
    with pytest.raises(loading.WeightsMismatchError, match=pattern):
        create_model(DM_F0, weights="imagenet")


@pytest.mark.parametrize("index", range(7))
def test_dm_nfnet_has_timms_state_dict_size(index):
    tensors, params = DM_SIZES[index]
    with keras.StatelessScope(initialize_variables=False):
        model = create_model(f"timm/dm_nfnet_f{index}")
        assert (len(loading.model_weights(model)), model.count_params()) == (tensors, params)


@pytest.mark.parametrize("index", range(7))
def test_dm_nfnet_is_evaluated_at_timms_test_size_and_crop_pct(index):
    spec = get_spec(f"timm/dm_nfnet_f{index}")
    assert (spec.family, spec.pretrained) == ("timm_dm_nfnet", True)
    assert (spec.config["test_imsize"], spec.config["eval_padding"]) == DM_EVAL[index]


def test_dm_nfnet_model_carries_timms_preprocessing_and_its_name():
    model = create_model(DM_F0, include_top=False)
    assert (model.preprocessing.image_size, model.preprocessing.crop_padding) == (256, 28)
    assert model.preprocessing.interpolation == "bicubic"
    assert model.name == "dm_nfnet_f0"


def test_dm_nfnet_imagenet_with_another_classifier_activation_fails_before_download(monkeypatch):
    monkeypatch.setattr(keras.utils, "get_file", None)
    with pytest.raises(ValueError, match="Only `None` and `softmax` activations are allowed"):
        create_model(DM_F0, weights="imagenet", classifier_activation="sigmoid")
