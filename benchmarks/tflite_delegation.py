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

With `.tflite` files as arguments, prints their op and partition counts
instead (the F0 files in RESULTS.md, "int8 TFLite on this CPU"). The op list
comes from LiteRT's `Interpreter._get_ops_details` (ai_edge_litert 2.21 has no
public one). Needs TensorFlow and ai_edge_litert. Not a test.
"""

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

from nfnet_keras.export import tflite

SHAPE = (8, 8, 16)


def op_counts(function, flavour):
    """`{op name: count}` of `function` converted to TFLite `flavour` ("fp32" or "int8_full") and loaded."""
    module = tf.Module()
    module.call = tf.function(function, input_signature=[tf.TensorSpec([1, *SHAPE], tf.float32)])
    calibration = np.random.default_rng(0).standard_normal((8, *SHAPE)).astype(np.float32)
    with tempfile.TemporaryDirectory() as saved_model:
        tf.saved_model.save(module, saved_model, signatures={tflite.SIGNATURE: module.call})
        contents = tflite.convert(saved_model, flavour, calibration if flavour == "int8_full" else None)
    return loaded_op_counts(Interpreter(model_content=contents, num_threads=1))


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


def main(paths):
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
    main(sys.argv[1:])
