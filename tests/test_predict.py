"""The `python -m nfnet_keras.predict` command."""

import os
import pickle
import subprocess
import sys

import keras
import numpy as np
import pytest
from PIL import Image
from support import REPO_ROOT
from support.golden import keras_to_dm
from support.runs import write_micro_run

import nfnet_keras
from nfnet_keras import predict
from nfnet_keras.preprocessing import imagenet_class_names
from nfnet_keras.weights import loading
from nfnet_keras.weights.run_directory import EMA_WEIGHTS_FILE, MODEL_FILE

NAMES = ("apple", "bicycle", "cloud", "dolphin", "engine", "forest", "guitar", "harbour", "island", "jacket")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A train.py-like run directory of a micro model (model.keras with class names, ema.weights.h5) and an image."""
    directory = tmp_path_factory.mktemp("run")
    raw, ema = write_micro_run(directory, NAMES)
    image = str(directory / "photo.png")
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (48, 40, 3), dtype=np.uint8)).save(image)
    inputs = nfnet_keras.prepare_images(image, raw)  # micro's own preprocessing: 32 px, padding 4
    expected = {
        kind: keras.ops.convert_to_numpy(keras.ops.softmax(model.predict(inputs, verbose=0)))[0]
        for kind, model in (("raw", raw), ("ema", ema))
    }
    assert expected["raw"].argsort()[-3:].tolist() != expected["ema"].argsort()[-3:].tolist()
    return directory, image, expected


def _printed(lines):
    """`[(name, score), ...]` of the ranked lines under an image's path."""
    ranked = [line.split() for line in lines[1:]]
    assert [row[0] for row in ranked] == [f"{rank}." for rank in range(1, len(ranked) + 1)]
    return [(" ".join(row[1:-1]), float(row[-1])) for row in ranked]


def _top(probabilities, count):
    return [(NAMES[i], round(float(probabilities[i]), 4)) for i in np.argsort(-probabilities)[:count]]


def test_run_directory_prints_its_class_names_with_the_ema_weights_probabilities(run, capsys):
    directory, image, expected = run
    code = predict.main([image, "--model", str(directory), "--top", "3"])
    lines = capsys.readouterr().out.splitlines()
    assert code == 0
    assert lines[0] == image
    assert _printed(lines) == _top(expected["ema"], 3)


def test_noema_prints_the_raw_weights_probabilities(run, capsys):
    directory, image, expected = run
    assert predict.main([image, "--model", str(directory / MODEL_FILE), "--noema", "--top", "3"]) == 0
    assert _printed(capsys.readouterr().out.splitlines()) == _top(expected["raw"], 3)


def test_model_name_with_a_deepmind_checkpoint_prints_imagenet_classes(tmp_path, capsys):
    model = nfnet_keras.create_model("nano")
    rng = np.random.default_rng(0)
    flat = {k: rng.standard_normal(tuple(v.shape)).astype(np.float32) for k, v in loading.model_weights(model).items()}
    checkpoint = tmp_path / "nano.npz"
    checkpoint.write_bytes(pickle.dumps(keras_to_dm(flat), protocol=4))
    image = str(tmp_path / "photo.png")
    Image.fromarray(rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)).save(image)
    assert predict.main([image, "--variant", "nfnet_nano", "--weights", str(checkpoint)]) == 0
    printed = _printed(capsys.readouterr().out.splitlines())
    assert len(printed) == 5
    assert all(name in imagenet_class_names() for name, _ in printed)
    assert [score for _, score in printed] == sorted((score for _, score in printed), reverse=True)


def _error_line(capsys):
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    return lines[0]


def test_ema_weights_of_another_variant_are_a_one_line_error_naming_the_file(run, tmp_path, capsys):
    directory, image, _ = run
    (tmp_path / MODEL_FILE).write_bytes((directory / MODEL_FILE).read_bytes())
    nfnet_keras.create_model("nano", classes=10).save_weights(tmp_path / EMA_WEIGHTS_FILE)
    assert predict.main([image, "--model", str(tmp_path)]) == 1
    line = _error_line(capsys)
    assert f"Weights from {tmp_path / EMA_WEIGHTS_FILE} do not fit model 'nfnet_micro'" in line
    assert "missing (20): nf_block_4/conv0/bias" in line


def test_missing_image_is_a_one_line_error(run, tmp_path, capsys):
    directory, _, _ = run
    assert predict.main([str(tmp_path / "missing.jpg"), "--model", str(directory)]) == 1
    assert "missing.jpg" in _error_line(capsys)


def test_more_top_classes_than_the_model_has_is_an_error(run, capsys):
    directory, image, _ = run
    assert predict.main([image, "--model", str(directory), "--top", "11"]) == 1
    assert "--top 11 is more than the model's 10 classes" in _error_line(capsys)


def test_predict_script_answers_help_before_keras_is_imported():
    code = (
        "import runpy, sys\n"
        "sys.argv = ['predict.py', '--help']\n"
        "try:\n"
        f"    runpy.run_path({os.path.join(REPO_ROOT, 'predict.py')!r}, run_name='__main__')\n"
        "except SystemExit as exit:\n"
        "    print('exit', exit.code, 'keras' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "--model" in result.stdout and "--noema" in result.stdout
    assert result.stdout.splitlines()[-1] == "exit 0 False"


def test_undecodable_image_is_reported_before_the_model_is_loaded(tmp_path, capsys):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not a JPEG")
    assert predict.main([str(broken), "--model", str(tmp_path / "missing.keras")]) == 1
    assert f"Cannot decode {str(broken)!r} as an image" in _error_line(capsys)


def test_ctrl_c_is_one_line_interrupted_and_status_130(run, monkeypatch, capsys):
    directory, image, _ = run

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.delenv("NFNET_KERAS_TRACEBACK", raising=False)
    monkeypatch.setattr("nfnet_keras.models.loading.load_model", interrupted)
    assert predict.main([image, "--model", str(directory)]) == 130
    assert capsys.readouterr().err == "interrupted\n"


def test_help_says_how_to_see_tracebacks():
    assert "NFNET_KERAS_TRACEBACK=1" in " ".join(predict.build_parser().format_help().split())
