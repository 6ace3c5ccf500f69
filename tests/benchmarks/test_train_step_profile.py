"""benchmarks/train_step_profile.py: ops are sorted into kinds of work by scope and type; the script runs end to end."""

import importlib.util
import os
import re
import subprocess
import sys

import pytest

from support import REPO_ROOT
from support.subprocesses import child_env

SCRIPT = os.path.join(REPO_ROOT, "benchmarks", "train_step_profile.py")


def load_script():
    spec = importlib.util.spec_from_file_location("train_step_profile", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("scope", "op_type", "kind"),
    [
        # Names as TensorFlow's profiler reports them for F0's paper step.
        ("gradient_tape/nfnet_f0_1/nf_block_3_1/conv0_1/convolution/Conv2DBackpropFilter",
         "_MklNativeConv2DBackpropFilter", "convolutions"),
        ("nfnet_f0_1/stem_conv0_1/convolution", "_MklNativeFusedConv2D", "convolutions"),
        ("nfnet_f0_1/nf_block_1_1/conv1_1/split", "Split", "grouped-conv split/concat"),
        ("gradient_tape/nfnet_f0_1/nf_block_1_1/conv1_1/concat", "ConcatV2", "grouped-conv split/concat"),
        ("nfnet_f0_1/nf_block_1_1/conv1_1/reduce_variance/sub", "Sub", "weight standardisation"),
        ("gradient_tape/nfnet_f0_1/nf_block_2_1/conv2_1/reduce_variance/truediv", "Mul", "weight standardisation"),
        ("nfnet_f0_1/nf_block_2_1/act_3/Gelu/mul_1", "Mul", "activations"),
        ("gradient_tape/nfnet_f0_1/stem_act1_1/mul/Mul", "Mul", "activations"),
        ("nfnet_f0_1/nf_block_2_1/squeeze_excite_1/Mean", "Mean", "squeeze-excite"),
        ("nf_net_sgd/Mul_7", "Mul", "optimizer"),
        ("nfnet_f0_1/nf_block_2_1/stochastic_depth_1/mul_1", "Mul", "other"),
    ],
)
def test_kind_of_sorts_an_op_by_its_scope_and_type(scope, op_type, kind):
    assert load_script().kind_of(scope, op_type, "nf_net_sgd") == kind


@pytest.mark.slow
def test_profile_of_a_small_model_prints_every_kind_of_work_and_the_idle_time():
    run = subprocess.run(
        [sys.executable, SCRIPT, "--variant", "micro", "--image_size", "32", "--batch_size", "4",
         "--warmup", "1", "--steps", "1"],
        env=child_env("tensorflow"), cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    module = load_script()
    for kind in (*module.KINDS, "no op running"):
        assert re.search(rf"^\| {re.escape(kind)} \| \d+\.\d+ \| -?\d+\.\d % \|$", run.stdout, re.MULTILINE), kind
    convolutions = float(re.search(r"^\| convolutions \| (\S+) \|", run.stdout, re.MULTILINE).group(1))
    assert convolutions > 0
