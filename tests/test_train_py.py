"""train.py's process environment: what it sets before Keras, TensorFlow and JAX start."""

import os
import subprocess
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PRINT_ENVIRONMENT = (
    "import os, sys\n"
    "import train\n"
    "train.FLAGS(['train.py', *sys.argv[1:]])\n"
    "train.prepare_process_environment()\n"
    "for key in ('TF_CPU_ALLOCATOR_USE_BFC', 'KERAS_BACKEND', 'XLA_FLAGS'):\n"
    "    print(key, os.environ.get(key))\n"
)


def environment_after_prepare(flags=(), **environment):
    """The three variables as train.py leaves them, run in a fresh interpreter with `environment` added."""
    env = {key: value for key, value in os.environ.items()
           if key not in ("TF_CPU_ALLOCATOR_USE_BFC", "KERAS_BACKEND", "XLA_FLAGS")}
    env.update(environment)
    result = subprocess.run([sys.executable, "-c", PRINT_ENVIRONMENT, *flags], cwd=REPO_ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return dict(line.split(" ", 1) for line in result.stdout.splitlines())


def test_tensorflows_pooling_cpu_allocator_is_on_by_default():
    assert environment_after_prepare()["TF_CPU_ALLOCATOR_USE_BFC"] == "true"


def test_the_users_allocator_setting_wins():
    assert environment_after_prepare(TF_CPU_ALLOCATOR_USE_BFC="false")["TF_CPU_ALLOCATOR_USE_BFC"] == "false"


def test_backend_and_cpu_devices_flags_reach_jax_through_the_environment():
    seen = environment_after_prepare(["--backend=jax", "--cpu_devices=2"])
    assert seen["KERAS_BACKEND"] == "jax"
    assert seen["XLA_FLAGS"] == "--xla_force_host_platform_device_count=2"
