"""The notebooks in notebooks/: stored without outputs, and each runs top to bottom.

Each notebook is executed with nbclient + ipykernel in a temporary copy of the
notebooks folder (so nothing is written into the repository), in smoke mode
(`NFNET_NOTEBOOK_SMOKE=1`: small images, a few training steps) and offline
(`NFNET_NOTEBOOK_OFFLINE=1`: no download attempt, the offline fallbacks run).
"""

import os
import shutil

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = os.path.join(REPO, "notebooks")
NAMES = ("01_classify", "02_finetune", "03_signal_propagation")

# Text each notebook must print in smoke mode: proof that its main sections ran.
EXPECTED_TEXT = {
    "01_classify": ["ImageNet weights are not available here", "bundled CIFAR-10 test photos"],
    "02_finetune": ["ImageSource(", "final validation accuracy", "validation images misclassified"],
    "03_signal_propagation": ["transition blocks:", "residual variance / block input variance", "white noise"],
}


def _read(name):
    return nbformat.read(os.path.join(NOTEBOOKS, name + ".ipynb"), as_version=4)


def test_the_three_notebooks_and_their_photos_are_there():
    assert sorted(f[:-6] for f in os.listdir(NOTEBOOKS) if f.endswith(".ipynb")) == list(NAMES)
    photos = [f for f in os.listdir(os.path.join(NOTEBOOKS, "images")) if f.endswith(".jpg")]
    assert len(photos) >= 3
    notice = open(os.path.join(NOTEBOOKS, "images", "NOTICE")).read()
    for photo in photos:
        assert photo in notice, f"{photo} has no source/license entry in notebooks/images/NOTICE"
        assert os.path.getsize(os.path.join(NOTEBOOKS, "images", photo)) <= 60_000


@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_stored_without_outputs(name):
    nb = _read(name)
    nbformat.validate(nb)
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{name} cell {index} has stored outputs"
            assert cell.execution_count is None, f"{name} cell {index} has an execution count"
    first_code = next(cell for cell in nb.cells if cell.cell_type == "code")
    assert "parameters" in first_code.metadata.get("tags", [])
    assert "NFNET_NOTEBOOK_SMOKE" in first_code.source


def _text_outputs(nb):
    texts, images = [], 0
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if output.output_type == "stream":
                texts.append(output.text)
            elif output.output_type in ("display_data", "execute_result"):
                texts.append(output.data.get("text/plain", ""))
                images += "image/png" in output.data
    return "".join(texts), images


@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_top_to_bottom_in_smoke_mode(name, tmp_path, monkeypatch):
    work = tmp_path / "notebooks"
    shutil.copytree(NOTEBOOKS, work)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setenv("NFNET_NOTEBOOK_SMOKE", "1")
    monkeypatch.setenv("NFNET_NOTEBOOK_OFFLINE", "1")
    monkeypatch.setenv("TMPDIR", str(scratch))  # 02 writes its demo image folder there
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    before = sorted(os.listdir(NOTEBOOKS))

    nb = nbformat.read(str(work / f"{name}.ipynb"), as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(work)}}
    )
    client.execute()  # raises CellExecutionError, with the traceback, if a cell fails

    text, images = _text_outputs(nb)
    for expected in EXPECTED_TEXT[name]:
        assert expected in text, f"{name}: {expected!r} not in the outputs"
    assert images >= 2, f"{name} drew {images} figure(s)"
    assert sorted(os.listdir(NOTEBOOKS)) == before  # nothing written into the repository
