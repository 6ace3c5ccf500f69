"""Tests for nfnet_keras.preprocessing.imagenet and the shipped ImageNet class index."""

import json
from importlib import resources

import keras
import numpy as np
import pytest

from nfnet_keras.preprocessing.imagenet import decode_predictions, imagenet_class_names


@pytest.fixture(scope="module")
def class_index():
    data = resources.files("nfnet_keras.preprocessing").joinpath("imagenet_class_index.json")
    return json.loads(data.read_text(encoding="utf-8"))


def test_class_index_has_1000_consecutive_indices(class_index):
    assert sorted(int(k) for k in class_index) == list(range(1000))


def test_class_index_wnids_are_unique_wordnet_ids(class_index):
    wnids = [wnid for wnid, _ in class_index.values()]
    assert len(set(wnids)) == 1000
    assert all(w.startswith("n") and len(w) == 9 and w[1:].isdigit() for w in wnids)


def test_class_index_known_entries(class_index):
    assert class_index["0"] == ["n01440764", "tench"]
    assert class_index["1"] == ["n01443537", "goldfish"]
    assert class_index["2"] == ["n01484850", "great_white_shark"]
    assert class_index["207"] == ["n02099601", "golden_retriever"]
    assert class_index["999"] == ["n15075141", "toilet_tissue"]


def test_class_names_have_no_spaces(class_index):
    assert not any(" " in name for _, name in class_index.values())


def test_imagenet_class_names_in_index_order():
    names = imagenet_class_names()
    assert len(names) == 1000
    assert names[0] == "tench" and names[207] == "golden_retriever"


def test_decode_predictions_returns_top5_by_descending_score():
    preds = np.zeros((2, 1000), np.float32)
    preds[0, [5, 207, 1, 0, 999, 3]] = [0.05, 0.4, 0.1, 0.3, 0.15, 0.01]
    preds[1, 1] = 1.0
    result = decode_predictions(preds)
    assert len(result) == 2 and len(result[0]) == 5
    assert [r[1] for r in result[0]] == [
        "golden_retriever",
        "tench",
        "toilet_tissue",
        "goldfish",
        "electric_ray",
    ]
    scores = [r[2] for r in result[0]]
    assert scores == sorted(scores, reverse=True)
    assert result[1][0] == ("n01443537", "goldfish", np.float32(1.0))


def test_decode_predictions_top_argument(class_index):
    preds = np.linspace(0, 1, 1000, dtype=np.float32)[None]
    result = decode_predictions(preds, top=3)
    assert [r[:2] for r in result[0]] == [
        tuple(class_index[str(i)]) for i in (999, 998, 997)
    ]


def test_decode_predictions_accepts_backend_tensor_and_list():
    preds = np.zeros((1, 1000), np.float32)
    preds[0, 207] = 2.0
    from_tensor = decode_predictions(keras.ops.convert_to_tensor(preds), top=1)
    from_list = decode_predictions(preds.tolist(), top=1)
    assert from_tensor[0][0][:2] == ("n02099601", "golden_retriever")
    assert from_list[0][0][:2] == ("n02099601", "golden_retriever")


@pytest.mark.parametrize("shape", [(1000,), (2, 10), (2, 1000, 1), (2, 1001)])
def test_decode_predictions_rejects_wrong_shape_like_keras(shape):
    expected = (
        "`decode_predictions` expects a batch of predictions "
        "(i.e. a 2D array of shape (samples, 1000)). "
        f"Received array with shape: {shape}"
    )
    with pytest.raises(ValueError) as info:
        decode_predictions(np.zeros(shape, np.float32))
    assert str(info.value) == expected


def test_decode_predictions_rejects_non_positive_top():
    with pytest.raises(ValueError, match="top"):
        decode_predictions(np.zeros((1, 1000)), top=0)
