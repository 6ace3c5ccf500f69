"""Pretrained weights: DeepMind checkpoints, timm safetensors, Keras files, `weights="imagenet"`."""

import hashlib
import os
import pickle
import subprocess
import sys

import dill
import keras
import numpy as np
import pytest
from support import TESTS_DIR, script
from support.golden import (
    golden_outputs,
    golden_params,
    keras_to_dm,
    keras_to_timm,
    relative_error,
    write_golden_checkpoint,
)

import nfnet_keras
from nfnet_keras.weights import formats
from nfnet_keras.weights import loading
from nfnet_keras.weights.formats import CheckpointError
from nfnet_keras.weights.loading import WeightsDownloadError, WeightsMismatchError

TOLERANCE = 1e-4  # max |ours - DeepMind| / max |DeepMind|, float32 on CPU


@pytest.fixture(scope="module")
def golden_checkpoint(tmp_path_factory):
    """The golden parameters as a plain-dict pickle (the form dm_params writes)."""
    return str(write_golden_checkpoint(tmp_path_factory.mktemp("golden") / "F0_golden.npz"))


@pytest.fixture(scope="module")
def golden_model(golden_checkpoint):
    return nfnet_keras.NFNetF0(
        weights=golden_checkpoint, input_shape=(None, None, 3), classifier_activation=None
    )


def _nano(**kwargs):
    kwargs.setdefault("input_shape", (32, 32, 3))
    kwargs.setdefault("weights", None)
    return nfnet_keras.NFNet("nano", classifier_activation=None, **kwargs)


def _perturbed_flat(model, seed=0):
    """Random values for every weight (skip gains too), as `{keras_key: float32 array}`."""
    rng = np.random.default_rng(seed)
    return {
        key: (rng.standard_normal(tuple(var.shape)) * 0.2 + (1.0 if key.endswith("gain") else 0.0)).astype(np.float32)
        for key, var in loading.model_weights(model).items()
    }


def _write_pickle(path, tree):
    with open(path, "wb") as handle:
        pickle.dump(tree, handle, protocol=4)
    return str(path)


@pytest.fixture
def nano_checkpoint(tmp_path):
    """A DeepMind-layout checkpoint of a nano model with random values, and the values."""
    flat = _perturbed_flat(_nano(classes=1000))
    return _write_pickle(tmp_path / "nano.npz", keras_to_dm(flat)), flat


# -- golden logits ----------------------------------------------------------------


def test_golden_checkpoint_gives_deepmind_logits_at_256_px(golden_model):
    ref = golden_outputs()
    logits = np.asarray(golden_model(ref["x"], training=False))
    assert relative_error(logits, ref["logits"]) <= TOLERANCE


def test_golden_checkpoint_gives_deepmind_logits_at_odd_225_px(golden_model):
    ref = golden_outputs()
    logits = np.asarray(golden_model(ref["x_odd"], training=False))
    assert relative_error(logits, ref["logits_odd"]) <= TOLERANCE


def test_golden_checkpoint_without_top_gives_deepmind_pooled_features(golden_checkpoint):
    model = nfnet_keras.NFNetF0(weights=golden_checkpoint, include_top=False, pooling="avg")
    ref = golden_outputs()
    assert relative_error(model(ref["x"], training=False), ref["pool"]) <= TOLERANCE


def test_golden_logits_on_jax_backend(golden_checkpoint):
    env = dict(os.environ, KERAS_BACKEND="jax", PYTHONPATH=TESTS_DIR + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run(
        [sys.executable, script("golden_backend.py"), golden_checkpoint],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    errors = dict(line.split() for line in result.stdout.splitlines() if line.startswith(("logits", "pool")))
    assert set(errors) == {"logits", "logits_odd", "pool"}
    assert all(float(v) <= TOLERANCE for v in errors.values()), errors


def test_timm_safetensors_give_the_same_function(golden_checkpoint, tmp_path):
    from safetensors.numpy import save_file

    flat = loading.dm_to_keras(golden_params())
    path = str(tmp_path / "dm_nfnet_f0.safetensors")
    save_file(keras_to_timm(flat, depths=(1, 2, 6, 3)), path)
    model = nfnet_keras.NFNetF0(weights=path, classifier_activation=None)
    ref = golden_outputs()
    assert relative_error(model(ref["x"], training=False), ref["logits"]) <= TOLERANCE


# -- weights="imagenet" from a local origin ------------------------------------------


@pytest.fixture
def local_origin(tmp_path, monkeypatch, fake_haiku):
    """Serves a FlatMapping-form dill pickle (the published layout) as file://.../F0_haiku.npz."""
    FlatMapping = fake_haiku
    origin = tmp_path / "origin"
    origin.mkdir()
    tree = FlatMapping({module: FlatMapping(params) for module, params in golden_params().items()})
    path = origin / "F0_haiku.npz"
    with open(path, "wb") as handle:
        dill.dump(tree, handle)
    for name in ("haiku._src.data_structures", "haiku._src", "haiku"):
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(loading, "BASE_WEIGHTS_URL", origin.as_uri() + "/")
    monkeypatch.setitem(loading.WEIGHTS_MD5, "F0", hashlib.md5(path.read_bytes()).hexdigest())
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    return path


def test_imagenet_weights_download_convert_and_match_deepmind(local_origin):
    model = nfnet_keras.NFNetF0(weights="imagenet", classifier_activation=None)
    ref = golden_outputs()
    assert relative_error(model(ref["x"], training=False), ref["logits"]) <= TOLERANCE
    cache = os.path.join(os.environ["KERAS_HOME"], "models", "nfnet_keras")
    assert sorted(os.listdir(cache)) == ["F0_haiku.npz", f"nfnet_f0_imagenet_{loading.WEIGHTS_MD5['F0'][:8]}.npz"]


def test_second_imagenet_load_skips_download_and_conversion(local_origin, monkeypatch):
    nfnet_keras.NFNetF0(weights="imagenet", include_top=False)
    os.remove(local_origin)  # the origin is gone: only the converted cache can serve

    def refuse(path):
        raise AssertionError("the checkpoint was converted again")

    monkeypatch.setattr(formats, "load_haiku_pickle", refuse)
    model = nfnet_keras.NFNetF0(weights="imagenet", include_top=False, pooling="avg")
    ref = golden_outputs()
    assert relative_error(model(ref["x"], training=False), ref["pool"]) <= TOLERANCE


def test_imagenet_md5_mismatch_is_one_line_naming_the_file_and_both_hashes(tmp_path, monkeypatch):
    origin = tmp_path / "origin"
    origin.mkdir()
    contents = b"\x80\x04not the real checkpoint"
    (origin / "F1_haiku.npz").write_bytes(contents)
    monkeypatch.setattr(loading, "BASE_WEIGHTS_URL", origin.as_uri() + "/")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    with pytest.raises(WeightsDownloadError) as raised:
        loading.imagenet_weights("F1")
    message = str(raised.value)
    cached = tmp_path / "keras_home" / "models" / "nfnet_keras" / "F1_haiku.npz"
    assert f"the downloaded F1_haiku.npz ({cached}, from {origin.as_uri()}/F1_haiku.npz)" in message
    assert f"has md5 {hashlib.md5(contents).hexdigest()}, expected {loading.WEIGHTS_MD5['F1']}" in message
    assert "third-party" in message and "\n" not in message


def _unreachable_origin(tmp_path, monkeypatch, url):
    """`BASE_WEIGHTS_URL` = `url`, an empty Keras cache; returns where the checkpoint F1 would be cached."""
    monkeypatch.setattr(loading, "BASE_WEIGHTS_URL", url)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.setenv("no_proxy", "*")  # 127.0.0.1 directly, whatever proxy the environment names
    return tmp_path / "keras_home" / "models" / "nfnet_keras" / "F1_haiku.npz"


def test_missing_file_at_the_origin_is_one_error_naming_url_reason_and_cache_path(tmp_path, monkeypatch):
    origin = (tmp_path / "origin").as_uri() + "/"
    cached = _unreachable_origin(tmp_path, monkeypatch, origin)
    with pytest.raises(WeightsDownloadError) as raised:
        loading.imagenet_weights("F1")
    assert isinstance(raised.value, OSError)
    assert str(raised.value) == (
        f"cannot download F1_haiku.npz from {origin}F1_haiku.npz ([Errno 2] No such file or directory: "
        f"'{tmp_path / 'origin' / 'F1_haiku.npz'}'): put the file at {cached} by hand, or pass its path as the "
        "weights (--weights PATH)"
    )


def test_refused_connection_is_one_error_naming_url_and_reason(tmp_path, monkeypatch):
    _unreachable_origin(tmp_path, monkeypatch, "http://127.0.0.1:9/dm-nfnets/")  # port 9: refused at once
    with pytest.raises(
        WeightsDownloadError,
        match=r"^cannot download F1_haiku\.npz from http://127\.0\.0\.1:9/dm-nfnets/F1_haiku\.npz "
        r"\(\[Errno 111\] Connection refused\): put the file at ",
    ):
        loading.imagenet_weights("F1")


def test_checkpoint_put_by_hand_at_the_named_cache_path_is_used_offline(tmp_path, monkeypatch):
    cached = _unreachable_origin(tmp_path, monkeypatch, "http://127.0.0.1:9/dm-nfnets/")
    with pytest.raises(WeightsDownloadError, match=f"put the file at {cached} by hand"):
        loading.imagenet_weights("F1")
    arrays = {"predictions/bias": np.arange(3, dtype=np.float32)}
    formats.write_npz_atomic(str(cached), arrays)
    monkeypatch.setitem(loading.WEIGHTS_MD5, "F1", hashlib.md5(cached.read_bytes()).hexdigest())
    np.testing.assert_array_equal(loading.imagenet_weights("F1")["predictions/bias"], arrays["predictions/bias"])


def test_imagenet_weights_for_unpublished_variant_raise():
    with pytest.raises(ValueError, match="No ImageNet weights"):
        loading.imagenet_weights("F7")


# -- fine-tuning and feature extraction ------------------------------------------


def test_other_class_count_loads_everything_but_the_classifier(nano_checkpoint):
    path, flat = nano_checkpoint
    model = _nano(weights=path, classes=7)
    loaded = loading.model_weights(model)
    assert tuple(loaded["predictions/kernel"].shape) == (flat["predictions/kernel"].shape[0], 7)
    for key, value in flat.items():
        if not key.startswith("predictions/"):
            np.testing.assert_array_equal(np.asarray(loaded[key]), value)


def test_model_without_top_loads_everything_but_the_classifier(nano_checkpoint):
    path, flat = nano_checkpoint
    model = _nano(weights=path, include_top=False, input_shape=None)
    loaded = loading.model_weights(model)
    assert not any(key.startswith("predictions/") for key in loaded)
    np.testing.assert_array_equal(np.asarray(loaded["nf_block_2/skip_gain"]), flat["nf_block_2/skip_gain"])


def test_flatmapping_checkpoint_loads_without_haiku(tmp_path, fake_haiku, monkeypatch):
    FlatMapping = fake_haiku
    flat = _perturbed_flat(_nano(classes=1000), seed=3)
    path = tmp_path / "nano_flat.npz"
    with open(path, "wb") as handle:
        dill.dump(FlatMapping({m: FlatMapping(p) for m, p in keras_to_dm(flat).items()}), handle)
    for name in ("haiku._src.data_structures", "haiku._src", "haiku"):
        monkeypatch.delitem(sys.modules, name)
    model = _nano(weights=str(path), classes=1000)
    np.testing.assert_array_equal(np.asarray(loading.model_weights(model)["stem_conv2/gain"]), flat["stem_conv2/gain"])


def test_keras_weights_file_loads_into_a_model_with_another_head(tmp_path):
    source = _nano(classes=1000)
    flat = _perturbed_flat(source, seed=1)
    loading.assign_weights(source, flat, "test")
    path = str(tmp_path / "nano.weights.h5")
    source.save_weights(path)
    model = _nano(weights=path, classes=3)
    loaded = loading.model_weights(model)
    np.testing.assert_array_equal(np.asarray(loaded["nf_block_3/conv1b/kernel"]), flat["nf_block_3/conv1b/kernel"])
    assert tuple(loaded["predictions/kernel"].shape)[1] == 3


def test_keras_weights_file_loads_into_a_model_without_top(tmp_path):
    source = _nano(classes=1000)
    flat = _perturbed_flat(source, seed=2)
    loading.assign_weights(source, flat, "test")
    path = str(tmp_path / "nano.weights.h5")
    source.save_weights(path)
    model = _nano(weights=path, include_top=False, pooling="avg", input_shape=None)
    x = np.random.default_rng(0).standard_normal((2, 32, 32, 3)).astype(np.float32)
    features = keras.Model(source.input, source.get_layer("avg_pool").output)(x)
    np.testing.assert_allclose(model(x), features, rtol=1e-6, atol=1e-6)


def test_keras_weights_file_is_read_by_the_models_weight_names(tmp_path):
    # Keras' own layout (a group per layer class, numbered) mapped onto our names: a Keras release
    # that changes the layout fails here.
    for model in (_nano(classes=10), _nano(include_top=False, input_shape=None)):
        flat = _perturbed_flat(model, seed=4)
        loading.assign_weights(model, flat, "test")
        path = str(tmp_path / f"{model.name}.weights.h5")
        model.save_weights(path)
        arrays = loading.read_keras_weights(path, model)
        assert sorted(arrays) == sorted(flat)
        for key, value in flat.items():
            np.testing.assert_array_equal(arrays[key], value)


def test_keras_weights_of_another_variant_are_refused_by_name(tmp_path):
    path = str(tmp_path / "micro.weights.h5")
    nfnet_keras.NFNet("micro", input_shape=(32, 32, 3)).save_weights(path)
    with pytest.raises(WeightsMismatchError) as error:
        _nano(weights=path, classes=1000)
    message = str(error.value)
    assert f"Weights from {path} do not fit model 'nfnet_nano'" in message
    assert "not in the model (20): nf_block_4/conv0/vars/0" in message  # the file's 5th block
    assert "mismatched (" in message and "final_conv/kernel (file shape (1, 1, 256, 512)" in message


def test_keras_weights_of_a_different_model_are_refused_by_name(tmp_path):
    path = str(tmp_path / "mlp.weights.h5")
    mlp = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4), keras.layers.Dense(1000)])
    mlp.save_weights(path)
    with pytest.raises(WeightsMismatchError, match=f"Weights from {path} .* missing \\(9[0-9]\\): final_conv/bias"):
        _nano(weights=path, classes=1000)


def test_truncated_keras_weights_file_is_reported_with_its_name(tmp_path):
    path = tmp_path / "nano.weights.h5"
    _nano(classes=1000).save_weights(path)
    data = path.read_bytes()
    truncated = tmp_path / "truncated.weights.h5"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=f"{truncated}: cannot read the Keras weights .*truncated"):
        _nano(weights=str(truncated))


# -- bad checkpoints -------------------------------------------------------------


def test_checkpoint_with_os_system_is_refused_before_anything_runs(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    path = _write_pickle(tmp_path / "evil.npz", {"NFNet/~/linear": {"w": Payload()}})
    with pytest.raises(CheckpointError, match="system"):
        _nano(weights=path)
    assert not marker.exists()


def test_truncated_checkpoint_is_reported(nano_checkpoint, tmp_path):
    path, _ = nano_checkpoint
    data = open(path, "rb").read()
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        _nano(weights=str(truncated))


def test_wrong_variant_checkpoint_names_the_mismatch(tmp_path):
    micro = nfnet_keras.NFNet("micro", input_shape=(32, 32, 3))
    path = _write_pickle(tmp_path / "micro.npz", keras_to_dm(_perturbed_flat(micro)))
    with pytest.raises(WeightsMismatchError) as error:
        _nano(weights=path, classes=1000)
    message = str(error.value)
    assert "\n" not in message
    assert f"Weights from {path} do not fit model 'nfnet_nano'" in message
    assert "module count: file" in message
    assert "not in the model (20): nf_block_4/conv0/bias" in message  # micro: 5 blocks, nano: 4
    assert "final_conv/kernel (file shape (1, 1, 256, 512), model shape (1, 1, 128, 256))" in message
    assert message.endswith("the file has 5 blocks, the model 4")


def test_wrong_shape_is_named(nano_checkpoint, tmp_path):
    _, flat = nano_checkpoint
    flat = dict(flat)
    flat["nf_block_1/conv1/kernel"] = flat["nf_block_1/conv1/kernel"][:, :, :, :8]
    path = _write_pickle(tmp_path / "bad_shape.npz", keras_to_dm(flat))
    with pytest.raises(WeightsMismatchError, match=r"nf_block_1/conv1/kernel \(file shape \(3, 3, 16, 8\)"):
        _nano(weights=path, classes=1000)


def test_non_float32_leaf_is_named(nano_checkpoint, tmp_path):
    _, flat = nano_checkpoint
    flat = dict(flat)
    flat["final_conv/gain"] = flat["final_conv/gain"].astype(np.float16)
    path = _write_pickle(tmp_path / "fp16.npz", keras_to_dm(flat))
    with pytest.raises(WeightsMismatchError, match=r"final_conv/gain \(dtype float16, expected float32\)"):
        _nano(weights=path, classes=1000)


def test_foreign_checkpoint_is_refused(tmp_path):
    path = _write_pickle(tmp_path / "resnet.npz", {"ResNet/~/conv1": {"w": np.zeros((3, 3, 3, 8), np.float32)}})
    with pytest.raises(WeightsMismatchError, match="not NFNet parameters"):
        _nano(weights=path)


def test_unknown_file_format_is_refused(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("these are not weights")
    with pytest.raises(CheckpointError):
        _nano(weights=str(path))
