"""Which of NFNet's op kinds XNNPACK takes into its delegate, in `fp32` and in `int8_full` TFLite files.

For each op kind of the exported NFNets (GELU, MUL, ADD, MEAN, LOGISTIC,
SPLIT/CONCATENATION, AVERAGE_POOL_2D, FULLY_CONNECTED), writes a tiny graph
that puts it between two 3x3 convolutions as a SavedModel, converts it with
`nfnet_keras.export.tflite.convert` (what `export.py` runs), loads it with
LiteRT (XNNPACK on by default) and counts the delegate partitions: 1 means the
whole graph runs inside XNNPACK; 2 means the op between stays outside and
splits it (each boundary costs a hand-over between XNNPACK and LiteRT's own
kernels, and stops XNNPACK's fusions).

    python benchmarks/tflite_delegation.py
    python benchmarks/tflite_delegation.py /tmp/f0_int8/calibration_32/*_tflite/1/*.tflite
    python benchmarks/tflite_delegation.py --conv_speed

With `.tflite` files as arguments, prints their op and partition counts
instead (the F0 files in RESULTS.md, "int8 TFLite on this CPU"). With
`--conv_speed`, times single convolutions of F0's shapes (batch 1, 2 threads),
each wholly inside XNNPACK, as `fp32` and `int8_full` files, with
`tflite_int8.py`'s interleaved timing: what int8 gains when nothing splits the
graph. The op list
comes from LiteRT's `Interpreter._get_ops_details` (ai_edge_litert 2.21 has no
public one). Needs TensorFlow and ai_edge_litert. Not a test.
"""

import argparse
import collections
import os
import sys
import tempfile

import numpy as np
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import tflite_int8  # this folder's script (a script's folder is on sys.path): its interleaved timing

from nfnet_keras.export import tflite

SHAPE = (8, 8, 16)


def converted(function, flavour, shape=SHAPE):
    """`function` of one `[1, *shape]` float32 input, converted to TFLite `flavour` ("fp32" or "int8_full")."""
    module = tf.Module()
    module.call = tf.function(function, input_signature=[tf.TensorSpec([1, *shape], tf.float32)])
    calibration = np.random.default_rng(0).standard_normal((8, *shape)).astype(np.float32)
    with tempfile.TemporaryDirectory() as saved_model:
        tf.saved_model.save(module, saved_model, signatures={tflite.SIGNATURE: module.call})
        return tflite.convert(saved_model, flavour, calibration if flavour == "int8_full" else None)


def op_counts(function, flavour):
    """`{op name: count}` of `function` converted to TFLite `flavour` and loaded."""
    return loaded_op_counts(Interpreter(model_content=converted(function, flavour), num_threads=1))


def loaded_op_counts(interpreter):
    """`{op name: count}` of an interpreter after XNNPACK has taken its partitions ("DELEGATE" nodes)."""
    interpreter.allocate_tensors()
    return collections.Counter(op["op_name"] for op in interpreter._get_ops_details())


def graphs():
    """`{name: function}`: one op kind between two 3x3 convolutions."""
    rng = np.random.default_rng(1)
    kernel = tf.constant(0.1 * rng.standard_normal((3, 3, SHAPE[2], SHAPE[2]), np.float32))
    dense = tf.constant(0.1 * rng.standard_normal((SHAPE[2], SHAPE[2]), np.float32))

    def conv(x):
        return tf.nn.conv2d(x, kernel, 1, "SAME")

    return {
        "nothing": lambda x: conv(conv(x)),
        "GELU (erf)": lambda x: conv(tf.nn.gelu(conv(x), approximate=False)),
        "GELU (tanh)": lambda x: conv(tf.nn.gelu(conv(x), approximate=True)),
        "MUL by a scalar": lambda x: conv(conv(x) * 1.7),
        "ADD (residual)": lambda x: conv(conv(x) + x),
        "squeeze-excite (MEAN, LOGISTIC, MUL)": lambda x: conv(
            conv(x) * tf.sigmoid(tf.reduce_mean(conv(x), [1, 2], keepdims=True))
        ),
        "SPLIT, CONCATENATION": lambda x: conv(tf.concat([a * 2.0 for a in tf.split(conv(x), 2, -1)], -1)),
        "AVERAGE_POOL_2D": lambda x: conv(tf.nn.avg_pool2d(conv(x), 2, 2, "SAME")),
        "MEAN, FULLY_CONNECTED (head)": lambda x: tf.matmul(tf.reduce_mean(conv(x), [1, 2]), dense),
    }


def conv_layers():
    """`{name: (input shape, function)}`: single convolutions of F0's shapes at 256 px."""
    rng = np.random.default_rng(2)

    def kernel(size, channels_in, channels_out):
        return tf.constant(0.05 * rng.standard_normal((size, size, channels_in, channels_out)), tf.float32)

    wide, pointwise = kernel(3, 128, 128), kernel(1, 768, 1536)
    grouped = [kernel(3, 128, 128) for _ in range(6)]
    return {
        "3x3, 128 to 128, 64x64": ((64, 64, 128), lambda x: tf.nn.conv2d(x, wide, 1, "SAME")),
        "1x1, 768 to 1536, 16x16": ((16, 16, 768), lambda x: tf.nn.conv2d(x, pointwise, 1, "SAME")),
        "3x3, 6 groups of 128, 16x16 (split)": (
            (16, 16, 768),
            lambda x: tf.concat([tf.nn.conv2d(a, w, 1, "SAME") for a, w in zip(tf.split(x, 6, -1), grouped)], -1),
        ),
    }


def conv_speed(rounds=6, seconds=0.3, threads=2):
    """Prints fp32 and int8_full milliseconds per call of each of `conv_layers` (`tflite_int8.speed`'s timing)."""
    print(f"| convolution (batch 1, {threads} threads) | XNNPACK partitions | fp32 ms | int8_full ms | speed-up |")
    print("|---|---|---|---|---|")
    for name, (shape, function) in conv_layers().items():
        with tempfile.TemporaryDirectory() as folder:
            files = {}
            for flavour in ("fp32", "int8_full"):
                files[flavour] = os.path.join(folder, f"{flavour}.tflite")
                with open(files[flavour], "wb") as f:
                    f.write(converted(function, flavour, shape))
            partitions = {f: loaded_op_counts(tflite.load_interpreter(p, num_threads=1))["DELEGATE"] for f, p in files.items()}
            rows = {row["flavour"]: row for row in tflite_int8.speed(files, shape, [1], [threads], rounds, seconds)}
        fp32, int8 = rows["fp32"], rows["int8_full"]
        print(f"| {name} | {partitions['fp32']} / {partitions['int8_full']} | {fp32['ms_per_invoke']:.2f} | "
              f"{int8['ms_per_invoke']:.2f} | {int8['speedup_vs_fp32']:.2f}x |", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="*", help=".tflite files: print their op and partition counts")
    parser.add_argument("--conv_speed", action="store_true", help="time single F0 convolutions, fp32 against int8_full")
    args = parser.parse_args(argv)
    if args.conv_speed:
        conv_speed()
        return
    paths = args.paths
    if paths:
        for path in paths:
            counts = loaded_op_counts(tflite.load_interpreter(path, num_threads=1))
            delegates = counts.pop("DELEGATE", 0)
            print(f"{path}: {delegates} partitions; ops {dict(counts)}")
        return
    print("| op between two convolutions | fp32 partitions | int8_full partitions |")
    print("|---|---|---|")
    for name, function in graphs().items():
        counts = {flavour: op_counts(function, flavour)["DELEGATE"] for flavour in ("fp32", "int8_full")}
        print(f"| {name} | {counts['fp32']} | {counts['int8_full']} |")


if __name__ == "__main__":
    main()
