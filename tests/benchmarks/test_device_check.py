"""benchmarks/device_check.py: the accelerator check runs end to end here, with TensorFlow absent."""

import json
import os
import subprocess
import sys

import pytest

from support import REPO_ROOT

SECTIONS = [
    "environment",
    "golden_f0",
    "train_f0",
    "train_f0_timm",
    "train_eca_nfnet_l0",
    "train_eca_nfnet_l0_timm",
]
# train_f0 is left out: the same child as train_eca_nfnet_l0 on a bigger model, it
# would add about 100 s on a 2-core CPU (`--smoke` alone runs every section).
RUN_SECTIONS = ["environment", "golden_f0", "train_f0_timm", "train_eca_nfnet_l0", "train_eca_nfnet_l0_timm"]
OUR_SECTIONS = ["environment", "golden_f0", "train_eca_nfnet_l0"]

# Loaded by every process of the run (the check starts one per measurement):
# TensorFlow cannot be imported and looks absent to `importlib.util.find_spec`,
# as on the lent machine, where it is not installed.
TENSORFLOW_ABSENT = """\
import importlib.abc
import importlib.util
import sys


def _blocked(name):
    return name.split(".")[0] == "tensorflow"


class _Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if _blocked(name):
            raise ModuleNotFoundError(f"{name} is blocked in this process", name=name)
        return None


sys.meta_path.insert(0, _Blocker())
_find_spec = importlib.util.find_spec
importlib.util.find_spec = lambda name, package=None: None if _blocked(name) else _find_spec(name, package)
"""


def run_smoke_check_without_tensorflow(tmp_path):
    """Runs `device_check.py --smoke` (`RUN_SECTIONS`) with TensorFlow absent; returns the JSON it wrote."""
    site = tmp_path / "tensorflow_absent"
    site.mkdir()
    (site / "sitecustomize.py").write_text(TENSORFLOW_ABSENT)
    env = dict(os.environ, KERAS_BACKEND="jax")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), env.get("PYTHONPATH")) if p)
    env.pop("XLA_FLAGS", None)
    out = tmp_path / "device_check.json"
    proc = subprocess.run(
        [
            sys.executable,
            os.path.join("benchmarks", "device_check.py"),
            "--smoke",
            "--sections",
            ",".join(RUN_SECTIONS),
            "--out",
            str(out),
        ],
        check=False,
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.slow
def test_smoke_run_without_tensorflow_writes_every_section_and_matches_the_golden_logits(tmp_path):
    doc = run_smoke_check_without_tensorflow(tmp_path)

    assert list(doc) == ["meta", *SECTIONS]
    assert doc["meta"]["finished"] and doc["meta"]["smoke"]
    assert {name: doc[name]["status"] for name in OUR_SECTIONS} == dict.fromkeys(OUR_SECTIONS, "ok")
    assert doc["train_f0"]["status"] == "skipped: not asked for"
    for name in ("train_f0_timm", "train_eca_nfnet_l0_timm"):
        # Rows where torch and timm are installed; a recorded skip where they are not.
        assert doc[name]["status"] == "ok" or doc[name]["status"].startswith(
            ("skipped: torch not importable", "skipped: timm not importable")
        )
    assert doc["environment"]["matmul_bf16_tflops"] > 0
    for key in ("logits", "logits_odd"):
        assert doc["golden_f0"][key]["rel_error"] < 1e-4
    row = doc["train_eca_nfnet_l0"]["row"]
    assert (row["batch"], row["image_size"], row["precision"]) == (2, 64, "mixed_bfloat16")
    assert row["img_per_s"] > 0 and row["utilisation"] > 0
