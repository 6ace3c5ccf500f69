"""The `python -m nfnet_keras.predict` command."""

import pickle
import subprocess
import sys

import numpy as np
from support.golden import keras_to_dm
from PIL import Image

import nfnet_keras
from nfnet_keras import predict
from nfnet_keras.weights import loading


def _nano_checkpoint(tmp_path):
    model = nfnet_keras.NFNet("nano", input_shape=(32, 32, 3))
    rng = np.random.default_rng(0)
    flat = {k: rng.standard_normal(tuple(v.shape)).astype(np.float32) for k, v in loading.model_weights(model).items()}
    path = tmp_path / "nano.npz"
    path.write_bytes(pickle.dumps(keras_to_dm(flat), protocol=4))
    return str(path)


def _photo(tmp_path, name="cat.png"):
    rng = np.random.default_rng(1)
    path = tmp_path / name
    Image.fromarray(rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)).save(path)
    return str(path)


def test_predict_prints_top5_imagenet_classes(tmp_path, capsys):
    image = _photo(tmp_path)
    code = predict.main([image, "--variant", "nano", "--weights", _nano_checkpoint(tmp_path)])
    lines = capsys.readouterr().out.splitlines()
    assert code == 0
    assert lines[0] == image
    ranks = [line.split()[0] for line in lines[1:]]
    assert ranks == ["1.", "2.", "3.", "4.", "5."]
    names = set(nfnet_keras.preprocessing.imagenet_class_names())
    assert all(line.split()[1] in names for line in lines[1:])
    scores = [float(line.split()[-1]) for line in lines[1:]]
    assert scores == sorted(scores, reverse=True)


def test_predict_reports_a_missing_image(tmp_path, capsys):
    code = predict.main([str(tmp_path / "missing.jpg"), "--variant", "nano", "--weights", _nano_checkpoint(tmp_path)])
    assert code == 1
    assert "missing.jpg" in capsys.readouterr().err


def test_predict_help_runs_as_a_module():
    result = subprocess.run(
        [sys.executable, "-m", "nfnet_keras.predict", "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0
    assert "--variant" in result.stdout
