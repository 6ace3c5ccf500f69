"""`train.py` on two hosts: two processes on loopback joined by the JAX distributed runtime.

The same result as one process with two devices at the same global batch; only the chief
writes; a signal to any host stops both at the same step and the rerun ends bit-identical;
a host that dies stops the other with one clear line in bounded time. Each case starts
several JAX processes (minutes on two cores): all are `slow`.
"""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from nfnet_keras.training.preemption import STOPPED_EXIT_CODE
from nfnet_keras.weights.run_directory import RunDirectory
from support import REPO_ROOT
from support.subprocesses import child_env, free_port

pytestmark = pytest.mark.slow

FLAGS = [
    "--backend=jax",
    "--variant=nano",
    "--global_batch_size=16",
    "--steps=4",
    "--checkpoint_every=2",
    "--eval_batch_size=250",
    "--seed=3",
    "--verbose=0",
]
TIMEOUT = 600


class Hosts:
    """Two `train.py` processes of one multi-host run, their logs in `log_dir`."""

    def __init__(self, model_dirs, log_dir, *extra):
        port = str(free_port())
        self.logs = [os.path.join(log_dir, f"host{index}.log") for index in range(len(model_dirs))]
        self.processes = []
        for index, (model_dir, log) in enumerate(zip(model_dirs, self.logs)):
            env = child_env("jax")
            env.update(
                KERAS_DISTRIBUTION_JOB_ADDRESSES=f"127.0.0.1:{port}",
                KERAS_DISTRIBUTION_NUM_PROCESSES=str(len(model_dirs)),
                KERAS_DISTRIBUTION_PROCESS_ID=str(index),
            )
            command = [sys.executable, os.path.join(REPO_ROOT, "train.py"), f"--model_dir={model_dir}", *FLAGS, *extra]
            with open(log, "w") as handle:  # files, not pipes: no pipe-buffer stalls
                self.processes.append(
                    subprocess.Popen(command, env=env, cwd=REPO_ROOT, stdout=handle, stderr=subprocess.STDOUT)
                )

    def wait(self, timeout=TIMEOUT):
        """The return codes, after every process ended (all are killed after `timeout` seconds)."""
        deadline = time.monotonic() + timeout
        try:
            for process in self.processes:
                process.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pytest.fail(f"the hosts did not end within {timeout} s:\n" + self.output(-1)[-3000:])
        finally:
            self.kill()
        return [process.returncode for process in self.processes]

    def kill(self):
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait()

    def output(self, index):
        with open(self.logs[index]) as handle:
            return handle.read()


def _wait_for(path, hosts, timeout=TIMEOUT):
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        assert all(p.poll() is None for p in hosts.processes), "a host ended early:\n" + hosts.output(0)[-3000:]
        assert time.monotonic() < deadline, f"no {path} within {timeout} s"
        time.sleep(0.1)


def _results(run):
    with open(run.results) as handle:
        return json.load(handle)


def _state(run):
    arrays = np.load(run.checkpoint)
    return {str(path): arrays[f"v{i}"] for i, path in enumerate(arrays["paths"])} | {"step": arrays["step"]}


@pytest.fixture(scope="module")
def two_hosts(tmp_path_factory):
    """An uninterrupted two-host run, each host with its own --model_dir: (chief's, other's)."""
    root = tmp_path_factory.mktemp("two_hosts")
    runs = (RunDirectory(root / "chief"), RunDirectory(root / "other"))
    hosts = Hosts([run.path for run in runs], root)
    assert hosts.wait() == [0, 0], hosts.output(0)[-3000:] + hosts.output(1)[-3000:]
    return runs


def test_two_hosts_reach_the_test_loss_of_one_process_with_two_devices(two_hosts, tmp_path):
    chief, _ = two_hosts
    single = RunDirectory(tmp_path / "single")
    command = [sys.executable, os.path.join(REPO_ROOT, "train.py"), f"--model_dir={single.path}", *FLAGS, "--cpu_devices=2"]
    result = subprocess.run(command, env=child_env("jax"), cwd=REPO_ROOT, capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert _results(chief)["replicas"] == _results(single)["replicas"] == 2
    assert _results(chief)["test_loss"] == pytest.approx(_results(single)["test_loss"], rel=1e-4)
    assert _results(chief)["test_accuracy"] == pytest.approx(_results(single)["test_accuracy"], abs=0.002)


def test_only_the_chief_writes(two_hosts):
    chief, other = two_hosts
    assert os.path.exists(chief.checkpoint) and os.path.exists(chief.model) and os.path.exists(chief.results)
    assert os.listdir(other.path) == []


def test_a_sigterm_to_one_host_stops_both_at_the_same_step_and_the_rerun_ends_bit_identical(two_hosts, tmp_path):
    chief, _ = two_hosts
    run = RunDirectory(tmp_path / "shared")
    hosts = Hosts([run.path, run.path], tmp_path)
    _wait_for(run.checkpoint, hosts)
    hosts.processes[1].send_signal(signal.SIGTERM)  # the other host only: the chief learns it by the vote
    sent = time.monotonic()
    codes = hosts.wait()
    assert time.monotonic() - sent < 30
    assert codes == [STOPPED_EXIT_CODE, STOPPED_EXIT_CODE], hosts.output(0)[-3000:]
    step = int(np.load(run.checkpoint)["step"])
    assert f"at step {step}" in hosts.output(0) and f"at step {step}" in hosts.output(1)

    rerun = Hosts([run.path, run.path], tmp_path)
    assert rerun.wait() == [0, 0], rerun.output(0)[-3000:]
    if step < 4:
        assert f"Resumed from step {step}" in rerun.output(0)
    expected, actual = _state(chief), _state(run)
    assert expected.keys() == actual.keys()
    for key in expected:
        np.testing.assert_array_equal(actual[key], expected[key], err_msg=key)


def test_a_host_that_dies_stops_the_other_with_one_clear_line_in_bounded_time(tmp_path):
    run = RunDirectory(tmp_path / "shared")
    hosts = Hosts([run.path, run.path], tmp_path, "--steps=400", "--ema_decay=0")
    _wait_for(run.checkpoint, hosts)
    hosts.processes[1].kill()
    killed = time.monotonic()
    hosts.processes[0].wait(timeout=240)
    assert time.monotonic() - killed < 240
    assert hosts.processes[0].returncode == 1
    errors = [line for line in hosts.output(0).splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "another host" in errors[0]
    assert "Traceback" not in hosts.output(0)


def test_a_nan_loss_stops_every_host_with_the_same_message(tmp_path):
    run = RunDirectory(tmp_path / "shared")
    hosts = Hosts([run.path, run.path], tmp_path, "--learning_rate=1e12", "--clipping=0", "--warmup_epochs=0.01")
    assert hosts.wait() == [1, 1], hosts.output(0)[-3000:]
    for index in range(2):
        assert "NaN" in hosts.output(index) and "Traceback" not in hosts.output(index)
