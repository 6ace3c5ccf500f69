"""Runs test scripts in child processes: environment, bounded waits, the `RESULT` line."""

import json
import os
import re
import socket
import subprocess
import sys

import keras

from support import REPO_ROOT, SCRIPTS_DIR, TESTS_DIR

# What TensorFlow 2.21 itself writes to stderr as it loads on CPUs where oneDNN is on by default
# (seen on an EPYC with AVX-512 VNNI), whatever TF_CPP_MIN_LOG_LEVEL says: absl's preface and the
# oneDNN notice, each once per TensorFlow library. Only `TF_ENABLE_ONEDNN_OPTS=0` silences them.
_TENSORFLOW_LOAD_NOTICES = (
    re.compile(r"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR$"),
    re.compile(r"^I\d{4} [\d:.]+ +\d+ port\.cc:\d+\] oneDNN custom operations are on\."),
)


def stderr_lines(stderr):
    """The non-blank lines of a child's stderr, less TensorFlow's own load-time notices."""
    return [
        line
        for line in stderr.splitlines()
        if line.strip() and not any(notice.match(line) for notice in _TENSORFLOW_LOAD_NOTICES)
    ]


def child_env(backend, host_devices=None):
    """Environment for a child: backend, quiet TF logs, optional JAX host devices."""
    env = dict(os.environ)
    env["KERAS_BACKEND"] = backend
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env["PYTHONPATH"] = REPO_ROOT + os.pathsep + TESTS_DIR + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("XLA_FLAGS", None)
    for key in list(env):
        if key.startswith("KERAS_DISTRIBUTION_") or key == "TF_CONFIG":
            env.pop(key)
    if host_devices:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={host_devices}"
    return env


def run_script(script, args, backend, timeout, host_devices=None):
    """Runs `tests/scripts/<script> args...`; returns the parsed `RESULT` JSON.

    The child is killed when `timeout` (s) expires (subprocess.run kills it).
    """
    proc = subprocess.run(
        [sys.executable, os.path.join(SCRIPTS_DIR, script), *args],
        env=child_env(backend, host_devices),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    raise AssertionError(
        f"{script} {args} ({backend}) failed with rc={proc.returncode}\n"
        f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-6000:]}"
    )


def free_port():
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class CaseRunner:
    """Results of `tests/scripts/trainer_cases.py` cases on one backend, computed once.

    The active backend runs cases in-process on first use; another backend
    runs all `cases` in one subprocess on first use.
    """

    def __init__(self, backend, cases, timeout=420):
        self.backend = backend
        self.cases = list(cases)
        self.timeout = timeout
        self._results = {}

    def __getitem__(self, case):
        if case not in self._results:
            if self.backend == keras.backend.backend():
                from scripts import trainer_cases  # noqa: PLC0415

                name, _, kind = case.partition(":")
                fn = trainer_cases.CASES[name]
                self._results[case] = fn(kind) if kind else fn()
            else:
                todo = [c for c in self.cases if c not in self._results]
                if case not in todo:
                    todo.append(case)
                self._results.update(run_script("trainer_cases.py", todo, self.backend, self.timeout))
        return self._results[case]
