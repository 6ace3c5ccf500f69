"""get_distribution / Engine: MirroredStrategy, JAX DataParallel, JAX multi-host.

Scenarios needing logical devices, host devices or several processes run
tests/scripts/distribution_scenarios.py in subprocesses (every wait bounded, children killed).
Tolerances: "1e-5 rel" is max|a-b| / max|b| per variable on the weights
(and the EMA); the updates themselves (w1 - w0) are also compared, within
1e-3 relative (measured ~1e-5: float32 summation order).
"""

import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest


import keras  # noqa: E402
from support import REPO_ROOT
from support import script as script_path
from support.subprocesses import child_env, free_port, run_script  # noqa: E402

from nfnet_keras.training.distribution import Engine, get_distribution  # noqa: E402

WEIGHTS_RTOL = 1e-5
UPDATE_RTOL = 1e-3
TIMEOUT = 300


def _assert_matches_single_device(result):
    for rho in ("rho=0.0", "rho=0.1"):
        r = result[rho]
        assert r["update_size"] > 1e-2, rho  # training moved the weights
        assert r["weights_rel"] < WEIGHTS_RTOL, (rho, r)
        assert r["ema_rel"] < WEIGHTS_RTOL, (rho, r)
        assert r["update_rel"] < UPDATE_RTOL, (rho, r)


def _assert_ema_swap_works(result):
    for rho in ("rho=0.0", "rho=0.1"):
        r = result[rho]["ema_swap"]
        assert r["ema_vs_raw"] > 1e-4, rho
        assert r["inside_vs_ema"] == 0.0 and r["after_vs_raw"] == 0.0 and r["ema_unchanged"] == 0.0, (rho, r)
        assert r["loss_finite"]


@pytest.fixture(scope="module")
def mirrored():
    return run_script("distribution_scenarios.py", ["mirrored"], "tensorflow", TIMEOUT)


@pytest.fixture(scope="module")
def jax_data_parallel():
    return run_script("distribution_scenarios.py", ["jax_dp"], "jax", TIMEOUT, host_devices=2)


def test_mirrored_two_logical_cpus_matches_one_device(mirrored):
    assert mirrored["kind"] == "mirrored" and mirrored["num_replicas"] == 2
    _assert_matches_single_device(mirrored)


def test_mirrored_ema_weights_swap_and_restore(mirrored):
    _assert_ema_swap_works(mirrored)


def test_mirrored_batch_size_not_divisible_raises(mirrored):
    message = mirrored["batch7_error"]
    assert message is not None
    assert "7" in message and "not divisible" in message and "2" in message


def test_jax_data_parallel_two_host_devices_matches_one_device(jax_data_parallel):
    assert jax_data_parallel["kind"] == "data_parallel"
    assert jax_data_parallel["num_replicas"] == 2
    _assert_matches_single_device(jax_data_parallel)


def test_jax_data_parallel_ema_weights_swap_and_restore(jax_data_parallel):
    _assert_ema_swap_works(jax_data_parallel)


def test_jax_data_parallel_batch_size_not_divisible_raises(jax_data_parallel):
    message = jax_data_parallel["batch7_error"]
    assert message is not None and "not divisible" in message


def _kill(proc):
    if proc.poll() is None:
        proc.kill()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def test_jax_multi_host_two_processes_match_one_process():
    script = script_path("distribution_scenarios.py")
    port = str(free_port())
    with tempfile.TemporaryDirectory() as out:
        env = child_env("jax")
        runs = (["worker", "0", port, out], ["worker", "1", port, out], ["single", out])
        log_paths = [os.path.join(out, f"log_{i}.txt") for i in range(len(runs))]
        procs = []
        try:
            for args, log_path in zip(runs, log_paths):
                with open(log_path, "w") as log:  # files, not pipes: no pipe-buffer stalls
                    procs.append(
                        subprocess.Popen(
                            [sys.executable, script, *args],
                            env=env,
                            cwd=REPO_ROOT,
                            stdout=log,
                            stderr=subprocess.STDOUT,
                        )
                    )
            deadline = time.monotonic() + TIMEOUT
            for proc in procs:
                try:
                    proc.wait(timeout=max(1.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    pytest.fail("multi-host processes did not finish within the timeout")
        finally:
            for p in procs:
                _kill(p)
        for proc, log_path in zip(procs, log_paths):
            with open(log_path) as log:
                assert proc.returncode == 0, log.read()[-4000:]
        w0 = np.load(os.path.join(out, "weights_0.npz"))
        w1 = np.load(os.path.join(out, "weights_1.npz"))
        ws = np.load(os.path.join(out, "weights_single.npz"))
        info0, info1 = json.loads(str(w0["info"])), json.loads(str(w1["info"]))
        keys = [k for k in w0.files if k != "info"]
        assert keys and any("/ema/" in k for k in keys)
        identical = all(np.array_equal(w0[k], w1[k]) for k in keys)
        rel = max(float(np.max(np.abs(w0[k] - ws[k])) / max(np.max(np.abs(ws[k])), 1e-12)) for k in keys)
    assert info0["num_hosts"] == info1["num_hosts"] == 2
    assert [info0["process_index"], info1["process_index"]] == [0, 1]
    assert info0["local_devices"] == info1["local_devices"] == 1
    assert info0["num_replicas"] == 2
    assert identical
    assert rel < WEIGHTS_RTOL


def test_tf_multi_worker_request_raises_pointing_to_jax():
    if keras.backend.backend() != "tensorflow":
        pytest.skip("TensorFlow backend check")
    with pytest.raises(ValueError, match=r"(?s)20585.*KERAS_BACKEND=jax"):
        get_distribution(backend="tensorflow", job_addresses="10.0.0.1:1234,10.0.0.2:1234", num_processes=2, process_id=0)


def test_tf_config_multi_worker_raises_pointing_to_jax(monkeypatch):
    if keras.backend.backend() != "tensorflow":
        pytest.skip("TensorFlow backend check")
    cluster = {"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}, "task": {"type": "worker", "index": 0}}
    monkeypatch.setenv("TF_CONFIG", json.dumps(cluster))
    with pytest.raises(ValueError, match="MultiWorkerMirroredStrategy"):
        get_distribution()


def test_tf_env_multi_process_request_raises(monkeypatch):
    if keras.backend.backend() != "tensorflow":
        pytest.skip("TensorFlow backend check")
    monkeypatch.setenv("KERAS_DISTRIBUTION_NUM_PROCESSES", "4")
    with pytest.raises(ValueError, match="JAX backend"):
        get_distribution()


def test_backend_mismatch_raises():
    other = "jax" if keras.backend.backend() == "tensorflow" else "tensorflow"
    with pytest.raises(ValueError, match="KERAS_BACKEND"):
        get_distribution(backend=other)


def test_default_engine_is_single_replica():
    engine = get_distribution(global_batch_size=5)
    assert engine.num_replicas == 1 and engine.num_hosts == 1 and engine.process_index == 0
    assert engine.is_chief
    with engine.scope():
        model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    assert model.built


def test_engine_batch_size_not_divisible_by_replicas_raises():
    engine = Engine("jax", "data_parallel", num_replicas=4, num_hosts=2, process_index=1)
    with pytest.raises(ValueError, match=r"global batch size 6 is not divisible by the number of replicas \(devices\) 4"):
        engine.check_batch_size(6)


def test_engine_host_slice():
    engine = Engine("jax", "data_parallel", num_replicas=4, num_hosts=2, process_index=1)
    assert engine.check_batch_size(16) == 4
    assert engine.per_host_batch_size(16) == 8
    assert engine.host_slice(16) == slice(8, 16)
