"""AGC on the all-reduced gradient: 1 vs 2 data-parallel replicas give the same step.

Both backends run tests/scripts/agc_distributed.py in a subprocess (device
setup must precede the first TF op / JAX call); the two subprocesses run
concurrently.  The nano NFNet takes two NFNetSGD steps on one fixed global
batch of 16 images, with a learning-rate-free loss multiplier so AGC rescales
most units.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from support import REPO_ROOT as ROOT
from support import TESTS_DIR, script

SCRIPT = script("agc_distributed.py")
TOLERANCE = 1e-5  # relative error of the updated weights, float32


def _env(backend):
    env = dict(os.environ)
    env["KERAS_BACKEND"] = backend
    env["PYTHONPATH"] = os.pathsep.join([ROOT, TESTS_DIR] + [p for p in [env.get("PYTHONPATH")] if p])
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    if backend == "jax":
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2").strip()
        env["JAX_PLATFORMS"] = "cpu"
    return env


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("agc_distributed")
    procs = {}
    for backend in ("tensorflow", "jax"):
        path = out / f"{backend}.npz"
        procs[backend] = (
            path,
            subprocess.Popen(
                [sys.executable, SCRIPT, str(path)],
                env=_env(backend),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            ),
        )
    data = {}
    for backend, (path, proc) in procs.items():
        log, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, f"{backend} script failed:\n{log[-6000:]}"
        arrays = np.load(path)
        data[backend] = (dict(arrays), json.loads(str(arrays["meta"])))
    return data


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30)


def _errors(arrays, meta, run, reference, step):
    n = len(meta["paths"])
    return np.array([_rel(arrays[f"{run}/step{step}/w{i}"], arrays[f"{reference}/step{step}/w{i}"]) for i in range(n)])


def _assert_same_weights(arrays, meta, run, reference):
    for step in range(meta["steps"]):
        errors = _errors(arrays, meta, run, reference, step)
        worst = int(np.argmax(errors))
        assert errors.max() <= TOLERANCE, (step, meta["paths"][worst], errors.max())
        # The step really moved the weights (the comparison is not vacuous).
        moved = [_rel(arrays[f"{reference}/step{step}/w{i}"], arrays[f"init/w{i}"]) for i in range(len(errors))]
        assert np.median(moved) > 100 * TOLERANCE


def _assert_clipping_active(meta, *runs):
    for run in runs:
        assert meta[run]["step0"]["clip_fraction"] > 0.75, (run, meta[run]["step0"])
        assert meta[run]["step0"]["iterations"] == 1


def _assert_ema_formula(arrays, meta, run):
    n = len(meta["paths"])
    decay = meta["ema_decay"]
    ema = [arrays[f"init/w{i}"].astype(np.float64) for i in range(n)]
    for step in range(meta["steps"]):
        d = min(decay, (1.0 + step) / (10.0 + step))
        ema = [d * e + (1 - d) * arrays[f"{run}/step{step}/w{i}"] for i, e in enumerate(ema)]
        for i in range(n):
            got = arrays[f"{run}/step{step}/ema{i}"]
            np.testing.assert_allclose(got, ema[i], rtol=1e-5, atol=1e-7, err_msg=meta["paths"][i])


# ------------------------------------------------------------ TensorFlow
def test_tf_mirrored_two_replicas_match_one_replica(results):
    arrays, meta = results["tensorflow"]
    assert meta["tf1"]["replicas"] == 1 and meta["tf2"]["replicas"] == 2
    _assert_clipping_active(meta, "tf1", "tf2")
    _assert_same_weights(arrays, meta, "tf2", "tf1")


def test_tf_replica_copies_stay_identical(results):
    _, meta = results["tensorflow"]
    assert meta["tf2"]["param_replica_spread"] == 0.0
    assert meta["tf2"]["optimizer_replica_spread"] == 0.0


def test_tf_per_replica_clipping_would_fail_the_equivalence(results):
    arrays, meta = results["tensorflow"]
    # Control: AGC in _clip_gradients is the same rule on one replica ...
    _assert_same_weights(arrays, meta, "tf_local1", "tf1")
    # ... but on two replicas it clips each local gradient and misses the
    # tolerance on almost every variable.
    errors = _errors(arrays, meta, "tf_local2", "tf1", step=0)
    assert np.mean(errors > TOLERANCE) > 0.8, errors
    assert np.median(errors) > 100 * TOLERANCE


def test_tf_ema_in_update_step_under_mirrored_strategy(results):
    arrays, meta = results["tensorflow"]
    _assert_ema_formula(arrays, meta, "tf2")
    for step in range(meta["steps"]):
        for i in range(len(meta["paths"])):
            np.testing.assert_allclose(arrays[f"tf2/step{step}/ema{i}"], arrays[f"tf1/step{step}/ema{i}"],
                                       rtol=TOLERANCE, atol=1e-8)


def test_tf_swap_average_weights_on_mirrored_variables(results):
    _, meta = results["tensorflow"]
    run = meta["tf2"]
    assert run["model_vs_average"] > 1e-4
    assert run["swap_model_vs_average"] == 0.0
    assert run["swap_average_vs_model"] == 0.0
    assert run["swap_twice_vs_original"] == 0.0


# ------------------------------------------------------------------- JAX
def test_jax_data_parallel_matches_single_device(results):
    arrays, meta = results["jax"]
    assert meta["jax_devices"] == 2
    assert meta["jax1"]["kernel_devices"] == 1 and meta["jax2"]["kernel_devices"] == 2
    _assert_clipping_active(meta, "jax1", "jax2")
    _assert_same_weights(arrays, meta, "jax2", "jax1")


def test_jax_ema_and_swap_under_data_parallel(results):
    arrays, meta = results["jax"]
    _assert_ema_formula(arrays, meta, "jax2")
    run = meta["jax2"]
    assert run["model_vs_average"] > 1e-4
    assert run["swap_model_vs_average"] == 0.0
    assert run["swap_twice_vs_original"] == 0.0
