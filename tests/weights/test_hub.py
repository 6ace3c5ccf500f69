"""`weights="imagenet"` for timm's models: timm's `model.safetensors` from the Hugging Face Hub (`weights.hub`).

No network: the Hub is a `file://` endpoint laid out like huggingface.co
(`<repo_id>/resolve/main/model.safetensors`), and the Hugging Face cache a
folder laid out as `huggingface_hub` writes it. The file served is the golden
`eca_nfnet_l0` state dict (`support.timm_golden`), whose timm outputs are known.
"""

import hashlib
import os
import re

import numpy as np
import pytest
from support.golden import relative_error
from support.timm_golden import timm_golden_outputs, timm_state_dict, write_safetensors

from nfnet_keras.models import create_model
from nfnet_keras.weights import hub, timm
from nfnet_keras.weights.loading import WeightsDownloadError, WeightsMismatchError

L0 = "timm/eca_nfnet_l0"
L0_REPO = "timm/eca_nfnet_l0.ra2_in1k"
L0_CACHE_NAME = "timm--eca_nfnet_l0.ra2_in1k--model.safetensors"
TOLERANCE = 1e-5  # as in tests/models/test_timm_nfnet.py


@pytest.fixture(autouse=True)
def empty_caches_and_hub(tmp_path, monkeypatch):
    """Empty Keras and Hugging Face caches, and an empty `file://` Hub, whatever the environment names."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf_cache"))
    monkeypatch.setenv(hub.ENDPOINT_ENV, (tmp_path / "hub").as_uri())
    monkeypatch.delenv("HF_ENDPOINT", raising=False)


@pytest.fixture(scope="module")
def golden_state():
    return timm_state_dict()


def keras_cache(tmp_path):
    return tmp_path / "keras_home" / "models" / "nfnet_keras"


def serve_on_hub(tmp_path, repo_id, contents):
    """Puts `contents` (bytes) where the `file://` Hub serves `repo_id`'s model.safetensors."""
    path = tmp_path / "hub" / repo_id / "resolve" / "main" / "model.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(contents)
    return path


def serve_state_on_hub(tmp_path, repo_id, state):
    """Serves `state` as timm publishes it (model.safetensors) from the `file://` Hub."""
    path = serve_on_hub(tmp_path, repo_id, b"")
    return write_safetensors(state, path)


def put_in_hf_cache(cache, repo_id, contents, revision="a" * 40, main=None):
    """Writes `contents` as `huggingface_hub` caches model.safetensors: a blob, a snapshot link, refs/main.

    `main` is the revision refs/main names (default `revision`).
    """
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    blob = repo / "blobs" / hashlib.sha256(contents).hexdigest()
    blob.parent.mkdir(parents=True)
    blob.write_bytes(contents)
    snapshot = repo / "snapshots" / revision / "model.safetensors"
    snapshot.parent.mkdir(parents=True)
    snapshot.symlink_to(os.path.relpath(blob, snapshot.parent))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(main or revision)
    return snapshot


def l0_logits(model):
    return model(timm_golden_outputs()["x"], training=False)


def build_l0_with_imagenet_weights():
    return create_model(L0, weights="imagenet", input_shape=(None, None, 3), classifier_activation=None)


# -- the file, found or fetched ------------------------------------------------------------


def test_imagenet_weights_are_downloaded_from_the_hub_into_the_keras_cache_and_give_timms_logits(
    tmp_path, golden_state
):
    serve_state_on_hub(tmp_path, L0_REPO, golden_state)
    model = build_l0_with_imagenet_weights()
    assert relative_error(l0_logits(model), timm_golden_outputs()["logits"]) <= TOLERANCE
    assert os.listdir(keras_cache(tmp_path)) == [L0_CACHE_NAME]


def test_hugging_face_cache_serves_the_file_without_a_download(tmp_path, golden_state):
    source = write_safetensors(golden_state, tmp_path / "model.safetensors")
    with open(source, "rb") as handle:
        put_in_hf_cache(tmp_path / "hf_cache", L0_REPO, handle.read())
    model = build_l0_with_imagenet_weights()  # the file:// Hub is empty: a download would fail
    assert relative_error(l0_logits(model), timm_golden_outputs()["logits"]) <= TOLERANCE
    assert not keras_cache(tmp_path).exists()


def test_hugging_face_cache_snapshot_is_the_one_refs_main_names(tmp_path):
    put_in_hf_cache(tmp_path / "hf_cache", L0_REPO, b"old", revision="0" * 40, main="1" * 40)
    assert hub.find_in_hf_cache(hub.HubFile(L0_REPO)) is None
    newer = put_in_hf_cache(tmp_path / "hf_cache2", L0_REPO, b"new", revision="1" * 40)
    assert hub.find_in_hf_cache(hub.HubFile(L0_REPO), cache=str(tmp_path / "hf_cache2")) == str(newer)


def test_file_in_the_keras_cache_is_used_without_the_hub(tmp_path):
    serve_on_hub(tmp_path, L0_REPO, b"first")
    path = hub.fetch(hub.HubFile(L0_REPO))
    os.remove(tmp_path / "hub" / L0_REPO / "resolve" / "main" / "model.safetensors")
    assert hub.fetch(hub.HubFile(L0_REPO)) == path == str(keras_cache(tmp_path) / L0_CACHE_NAME)


def test_missing_file_is_one_line_naming_the_file_the_url_and_where_to_put_it(tmp_path):
    url = f"{(tmp_path / 'hub').as_uri()}/{L0_REPO}/resolve/main/model.safetensors"
    target = keras_cache(tmp_path) / L0_CACHE_NAME
    with pytest.raises(WeightsDownloadError) as raised:
        build_l0_with_imagenet_weights()
    assert str(raised.value) == (
        f"cannot download {L0_CACHE_NAME} from {url} ([Errno 2] No such file or directory: "
        f"'{tmp_path / 'hub' / L0_REPO / 'resolve' / 'main' / 'model.safetensors'}'): put the file at {target} "
        "by hand, or pass its path as the weights (--weights PATH)"
    )


def test_file_put_by_hand_where_the_error_says_is_used_offline(tmp_path):
    with pytest.raises(WeightsDownloadError) as raised:
        hub.fetch(hub.HubFile(L0_REPO))
    by_hand = re.search("put the file at (.*) by hand", str(raised.value)).group(1)
    with open(by_hand, "wb") as handle:
        handle.write(b"by hand")
    with open(hub.fetch(hub.HubFile(L0_REPO)), "rb") as handle:
        assert handle.read() == b"by hand"


# -- what is checked -----------------------------------------------------------------------


def test_wrong_tensor_shape_in_the_hub_file_is_one_line_naming_the_tensor(tmp_path, golden_state):
    state = dict(golden_state, **{"stages.1.0.conv1.weight": np.zeros((128, 256, 3, 3), np.float32)})
    serve_state_on_hub(tmp_path, L0_REPO, state)
    pattern = (
        r"^timm weights from timm's timm/eca_nfnet_l0\.ra2_in1k \([^\n]*\) do not fit model 'eca_nfnet_l0': "
        r"mismatched \(1\): stages\.1\.0\.conv1\.weight \(file shape \(128, 256, 3, 3\), model shape "
        r"\(128, 256, 1, 1\)\)$"
    )
    with pytest.raises(WeightsMismatchError, match=pattern):
        build_l0_with_imagenet_weights()


def test_known_sha256_accepts_the_right_file(tmp_path):
    serve_on_hub(tmp_path, L0_REPO, b"right")
    path = hub.fetch(hub.HubFile(L0_REPO, sha256=hashlib.sha256(b"right").hexdigest(), size=5))
    with open(path, "rb") as handle:
        assert handle.read() == b"right"


def test_sha256_mismatch_is_one_line_naming_the_file_and_both_hashes(tmp_path):
    serve_on_hub(tmp_path, L0_REPO, b"changed")
    expected = hashlib.sha256(b"original").hexdigest()
    with pytest.raises(WeightsDownloadError) as raised:
        hub.fetch(hub.HubFile(L0_REPO, sha256=expected))
    url = f"{(tmp_path / 'hub').as_uri()}/{L0_REPO}/resolve/main/model.safetensors"
    assert str(raised.value) == (
        f"the downloaded {L0_CACHE_NAME} ({keras_cache(tmp_path) / L0_CACHE_NAME}, from {url}) has sha256 "
        f"{hashlib.sha256(b'changed').hexdigest()}, expected {expected}: an incomplete or corrupt download "
        "(the next try fetches it again), or a changed file"
    )


def test_size_mismatch_is_one_line_naming_both_sizes_and_the_file_is_removed(tmp_path):
    serve_on_hub(tmp_path, L0_REPO, b"short")
    with pytest.raises(WeightsDownloadError, match=r"^the downloaded \S+ \(.*\) has 5 bytes, expected 9: [^\n]*$"):
        hub.fetch(hub.HubFile(L0_REPO, size=9))
    assert not (keras_cache(tmp_path) / L0_CACHE_NAME).exists()


# -- where: endpoint and cache folders -----------------------------------------------------


def test_url_is_the_endpoint_then_repo_resolve_main_file(monkeypatch):
    monkeypatch.setenv(hub.ENDPOINT_ENV, "https://mirror.example/")
    assert timm.IMAGENET_WEIGHTS["eca_nfnet_l2"].url() == (
        "https://mirror.example/timm/eca_nfnet_l2.ra3_in1k/resolve/main/model.safetensors"
    )


def test_endpoint_falls_back_to_hf_endpoint_then_huggingface_co(monkeypatch):
    monkeypatch.delenv(hub.ENDPOINT_ENV)
    monkeypatch.setenv("HF_ENDPOINT", "https://hf-mirror.example")
    assert hub.endpoint() == "https://hf-mirror.example"
    monkeypatch.delenv("HF_ENDPOINT")
    assert hub.endpoint() == "https://huggingface.co"


@pytest.mark.parametrize(
    "variables, expected",
    [
        ({"HF_HUB_CACHE": "/a", "HUGGINGFACE_HUB_CACHE": "/b", "HF_HOME": "/c"}, "/a"),
        ({"HUGGINGFACE_HUB_CACHE": "/b", "HF_HOME": "/c", "XDG_CACHE_HOME": "/d"}, "/b"),
        ({"HF_HOME": "/c", "XDG_CACHE_HOME": "/d"}, "/c/hub"),
        ({"XDG_CACHE_HOME": "/d"}, "/d/huggingface/hub"),
        ({"HOME": "/e"}, "/e/.cache/huggingface/hub"),
    ],
)
def test_hugging_face_cache_folder_is_resolved_as_huggingface_hub_does(monkeypatch, variables, expected):
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    assert hub.hf_hub_cache() == expected


def test_pretrained_tags_are_timms_default_cfgs():
    # timm/models/nfnet.py default_cfgs: hf_hub_id "timm/" + model.tag; eca_nfnet_l3 and the
    # NF-RegNets/NF-ResNets other than nf_regnet_b1 and nf_resnet50 have none.
    assert {model: file.repo_id for model, file in timm.IMAGENET_WEIGHTS.items()} == {
        "eca_nfnet_l0": "timm/eca_nfnet_l0.ra2_in1k",
        "eca_nfnet_l1": "timm/eca_nfnet_l1.ra2_in1k",
        "eca_nfnet_l2": "timm/eca_nfnet_l2.ra3_in1k",
        "nfnet_l0": "timm/nfnet_l0.ra2_in1k",
        "nf_regnet_b1": "timm/nf_regnet_b1.ra2_in1k",
        "nf_resnet50": "timm/nf_resnet50.ra2_in1k",
        **{f"dm_nfnet_f{i}": f"timm/dm_nfnet_f{i}.dm_in1k" for i in range(7)},
    }
