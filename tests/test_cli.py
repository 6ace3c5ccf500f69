"""How the commands end on an error (`nfnet_keras.cli`), and `export.py` and `predict.py` using it.

The commands run in child processes, each failing before a model is built
where it can; "offline" is an HTTP(S) proxy on 127.0.0.1:9, which refuses
every connection at once, so that the real ImageNet URL is tried without
any network.
"""

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from support import REPO_ROOT
from support.subprocesses import child_env, stderr_lines

from nfnet_keras import cli

OFFLINE = {"https_proxy": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9", "no_proxy": "", "NO_PROXY": ""}


def _fail(error):
    def main():
        raise error

    return main


# -- run_main --------------------------------------------------------------------------


def test_value_error_is_one_error_line_with_whitespace_collapsed_and_status_1(capsys, monkeypatch):
    monkeypatch.delenv(cli.TRACEBACK_VARIABLE, raising=False)
    assert cli.run_main(_fail(ValueError("weights do not fit:\n   missing (3)\tconv0"))) == 1
    captured = capsys.readouterr()
    assert captured.err == "error: weights do not fit: missing (3) conv0\n"
    assert captured.out == ""


def test_os_error_is_a_user_error(capsys, monkeypatch):
    monkeypatch.delenv(cli.TRACEBACK_VARIABLE, raising=False)
    assert cli.run_main(_fail(FileNotFoundError(2, "No such file or directory", "photo.jpg"))) == 1
    assert capsys.readouterr().err == "error: [Errno 2] No such file or directory: 'photo.jpg'\n"


def test_error_without_a_message_is_named_by_its_class(capsys, monkeypatch):
    monkeypatch.delenv(cli.TRACEBACK_VARIABLE, raising=False)
    assert cli.run_main(_fail(PermissionError())) == 1
    assert capsys.readouterr().err == "error: PermissionError\n"


def test_other_exceptions_are_bugs_and_propagate(capsys):
    with pytest.raises(KeyError, match="nf_block_9"):
        cli.run_main(_fail(KeyError("nf_block_9")))
    assert capsys.readouterr().err == ""


def test_ctrl_c_is_one_line_interrupted_and_status_130(capsys, monkeypatch):
    monkeypatch.delenv(cli.TRACEBACK_VARIABLE, raising=False)
    assert cli.run_main(_fail(KeyboardInterrupt())) == 130
    assert capsys.readouterr().err == "interrupted\n"


def test_traceback_variable_prints_the_full_traceback_with_the_same_status(capsys, monkeypatch):
    monkeypatch.setenv(cli.TRACEBACK_VARIABLE, "1")
    assert cli.run_main(_fail(ValueError("bad --top"))) == 1
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):")
    assert err.rstrip().endswith("ValueError: bad --top")


def test_traceback_variable_0_keeps_the_one_line(capsys, monkeypatch):
    monkeypatch.setenv(cli.TRACEBACK_VARIABLE, "0")
    assert cli.run_main(_fail(ValueError("bad --top"))) == 1
    assert capsys.readouterr().err == "error: bad --top\n"


def test_status_of_main_is_returned_and_none_is_0():
    assert cli.run_main(lambda code: code, 3) == 3
    assert cli.run_main(lambda: None) == 0


def test_module_loads_by_path_with_keras_and_tensorflow_blocked():
    code = (
        "import importlib.util, sys\n"
        "sys.modules['keras'] = sys.modules['tensorflow'] = None  # any import of them fails\n"
        f"spec = importlib.util.spec_from_file_location('cli', {os.path.join(REPO_ROOT, 'nfnet_keras', 'cli.py')!r})\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
        "print(module.TRACEBACK_HELP)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "NFNET_KERAS_TRACEBACK=1" in result.stdout


def _absl_command(body):
    """A command as `export.py` and `train.py` are built: absl `app.run` around `cli.run_main`."""
    code = (
        "import importlib.util, sys\n"
        "from absl import app\n"
        f"spec = importlib.util.spec_from_file_location('cli', {os.path.join(REPO_ROOT, 'nfnet_keras', 'cli.py')!r})\n"
        "cli = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(cli)\n"
        "def main(argv):\n"
        f"    {body}\n"
        "app.run(lambda argv: sys.exit(cli.run_main(main, argv)))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != cli.TRACEBACK_VARIABLE}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)


def test_absl_command_reports_a_user_error_in_one_line_with_status_1():
    result = _absl_command("raise ValueError('unknown variant F9')")
    assert (result.returncode, result.stderr) == (1, "error: unknown variant F9\n")


def test_absl_command_reports_ctrl_c_as_interrupted_with_status_130():
    result = _absl_command("raise KeyboardInterrupt")
    assert (result.returncode, result.stderr) == (130, "interrupted\n")


# -- export.py and predict.py ------------------------------------------------------------


def _run(script, args, cwd, **env):
    environment = {k: v for k, v in child_env("tensorflow").items() if k != cli.TRACEBACK_VARIABLE}
    environment.update(env)
    return subprocess.run(
        [sys.executable, os.path.join(REPO_ROOT, script), *args],
        env=environment,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _error_line(result):
    """The one stderr line of a command that failed with a user error (status 1, no traceback)."""
    lines = stderr_lines(result.stderr)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.fixture
def places(tmp_path):
    """A folder holding an image, an undecodable image, a plain file and a folder without model.keras."""
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(tmp_path / "photo.png")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not a JPEG")
    (tmp_path / "notes.txt").write_text("a file, not a folder")
    (tmp_path / "run").mkdir()
    return tmp_path


EXPORT_ERRORS = {
    "missing model file": (["--model=missing.keras"], "error: model file not found: missing.keras"),
    "run directory without model.keras": (
        ["--model=run"],
        "error: run is a folder without model.keras, not a train.py run directory",
    ),
    "unknown TFLite format": (["--model=run", "--tflite=fp32,int4"], "error: unknown TFLite format(s) ['int4']"),
    "export folder under a file": (["--model=run", "--export_dir=notes.txt/exports"], "is a file, not a folder"),
}


@pytest.mark.parametrize("args, expected", EXPORT_ERRORS.values(), ids=EXPORT_ERRORS.keys())
def test_export_user_error_is_one_line_with_status_1(places, args, expected):
    assert expected in _error_line(_run("export.py", args, places))


PREDICT_ERRORS = {
    "missing image": (["missing.jpg", "--model=run"], "No such file or directory: 'missing.jpg'"),
    "undecodable image": (["broken.jpg", "--model=run"], "Cannot decode 'broken.jpg' as an image"),
    "missing model file": (["photo.png", "--model=missing.keras"], "error: model file not found: missing.keras"),
    "run directory without model.keras": (
        ["photo.png", "--model=run"],
        "error: run is a folder without model.keras, not a train.py run directory",
    ),
}


@pytest.mark.parametrize("args, expected", PREDICT_ERRORS.values(), ids=PREDICT_ERRORS.keys())
def test_predict_user_error_is_one_line_with_status_1(places, args, expected):
    assert expected in _error_line(_run("predict.py", args, places))


def _assert_names_the_download_and_the_cache_path(line, places):
    url = "https://storage.googleapis.com/dm-nfnets/F0_haiku.npz"
    cache = places / "keras_home" / "models" / "nfnet_keras" / "F0_haiku.npz"
    assert line.startswith(f"error: cannot download F0_haiku.npz from {url} ([Errno 111] Connection refused)")
    assert f"put the file at {cache} by hand, or pass its path as the weights (--weights PATH)" in line


def test_export_imagenet_weights_offline_is_one_line_naming_the_url_and_cache_path(places):
    args = ["--variant=F0", "--weights=imagenet"]
    result = _run("export.py", args, places, KERAS_HOME=str(places / "keras_home"), **OFFLINE)
    _assert_names_the_download_and_the_cache_path(_error_line(result), places)


def test_predict_imagenet_weights_offline_is_one_line_naming_the_url_and_cache_path(places):
    result = _run("predict.py", ["photo.png"], places, KERAS_HOME=str(places / "keras_home"), **OFFLINE)
    _assert_names_the_download_and_the_cache_path(_error_line(result), places)


def test_traceback_variable_shows_the_export_error_traceback(places):
    result = _run("export.py", ["--model=missing.keras"], places, NFNET_KERAS_TRACEBACK="1")
    assert result.returncode == 1
    assert "Traceback (most recent call last):" in result.stderr
    assert result.stderr.rstrip().endswith("ExportError: model file not found: missing.keras")


def test_export_help_says_how_to_see_tracebacks(places):
    result = _run("export.py", ["--help"], places)  # absl prints the script's docstring (and exits with 1)
    assert "NFNET_KERAS_TRACEBACK=1" in result.stdout
