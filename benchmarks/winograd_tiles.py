"""Winograd's 2x2 and 4x4 output tiles against the direct 3x3 convolution, under XLA on the CPU.

The measurement behind `nfnet_keras.models.layers.winograd.winograd_tile`, in
two parts, each alternating its forms in one process (rounds of `--calls`
calls each; medians and same-round ratios):

    --layers  one 3x3 stride-1 layer per shape (side, channels, groups; groups
              of 128 as in NFNet-F0), followed by a scaled GELU as in the
              model, kernels stored as variables: direct (`conv2d_same`, one
              convolution per group on a CPU), F(2x2, 3x3) and F(4x4, 3x3);
    --model   a folded NFNet variant (random weights, biases and gains
              perturbed) at its test size: direct, Winograd with 2x2 tiles
              everywhere (what folding gives a model whose input size is not
              static), and Winograd with each layer's tile chosen for its
              output size (what `export.py --jit_compile` writes).

Every form is `tf.function(jit_compile=True)`; `TF_CPU_ALLOCATOR_USE_BFC=true`
is set (as for the `--jit_compile` servables in RESULTS.md). TensorFlow
backend; prints one JSON line per round and a summary line.

    python benchmarks/winograd_tiles.py --layers --batch_size 1
    python benchmarks/winograd_tiles.py --layers --batch_size 1 --sides 6,10,12,20
    python benchmarks/winograd_tiles.py --model F0 --batch_size 1 --rounds 10

Not a test.
"""

import argparse
import json
import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")

import numpy as np  # noqa: E402

# F0's stride-1 grouped 3x3 layers at 256 px: (output side, channels, groups).
F0_LAYERS = {64: (128, 1), 32: (256, 2), 16: (768, 6), 8: (768, 6)}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", action="store_true", help="time single layers")
    parser.add_argument("--model", default=None, help="time a folded model of this registry name (e.g. F0)")
    parser.add_argument("--sides", default="64,32,16,8", help="--layers: output sides; 64/32 are F0's wide layers, others 6 groups of 128")
    parser.add_argument("--batch_size", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--calls", type=int, default=8)
    args = parser.parse_args(argv)
    if args.layers == (args.model is not None):
        parser.error("choose one of --layers and --model")
    return args


def alternate(functions, x, rounds, calls, label):
    """Times each function on `x` in turn, `calls` calls per round; prints a JSON line per round."""
    times = {name: [] for name in functions}
    for fn in functions.values():
        np.asarray(fn(x))  # compile
    for r in range(rounds):
        for name, fn in functions.items():
            start = time.perf_counter()
            for _ in range(calls):
                np.asarray(fn(x))
            times[name].append((time.perf_counter() - start) / calls)
        print(json.dumps({**label, "round": r, "s_per_call": {k: v[-1] for k, v in times.items()},
                          "load_avg": os.getloadavg()[0]}), flush=True)
    return times


def summary(times, label, errors):
    """The summary line: medians, and each form's same-round speed-up over each form listed before it."""
    names = list(times)
    speedups = {}
    for i, a in enumerate(names):
        for b in names[:i]:
            ratios = [tb / ta for ta, tb in zip(times[a], times[b], strict=True)]
            speedups[f"{a} vs {b}"] = round(float(np.median(ratios)), 3)
    medians = {k: round(float(np.median(v)) * 1e3, 3) for k, v in times.items()}
    print(json.dumps({**label, "summary": True, "median_ms": medians, "speedup_median": speedups,
                      "max_error_of_scale": errors}), flush=True)


def errors_of_scale(functions, x):
    """Each form's largest difference from `functions["direct"]` on `x`, over the direct output's largest value."""
    expected = np.asarray(functions["direct"](x))
    return {name: float(np.abs(np.asarray(fn(x)) - expected).max() / np.abs(expected).max())
            for name, fn in functions.items() if name != "direct"}


def layer_forms(kernel, groups):
    """The layer (a 3x3 convolution and a scaled GELU) as direct, F(2x2, 3x3) and F(4x4, 3x3) XLA functions."""
    import tensorflow as tf  # noqa: PLC0415
    from keras import ops  # noqa: PLC0415

    from nfnet_keras.models.layers.winograd import winograd_conv3x3, winograd_filters  # noqa: PLC0415
    from nfnet_keras.models.layers.ws_conv import conv2d_same  # noqa: PLC0415

    direct_kernel = tf.Variable(kernel)

    def act(y):
        return ops.gelu(y, approximate=True) * 1.7

    def direct(x):  # the folded model's direct form: one convolution per group on a CPU
        return act(conv2d_same(x, direct_kernel, 1, groups))

    def winograd(filters):
        return lambda x: act(winograd_conv3x3(x, filters, groups))

    forms = {"direct": direct}
    for m in (2, 4):
        forms[f"winograd_{m}x{m}"] = winograd(tf.Variable(winograd_filters(kernel, groups, m)))
    return {name: tf.function(fn, jit_compile=True) for name, fn in forms.items()}


def time_layers(args):
    import tensorflow as tf  # noqa: PLC0415

    rng = np.random.default_rng(0)
    for side in (int(s) for s in args.sides.split(",")):
        channels, groups = F0_LAYERS.get(side, (768, 6))
        x = tf.constant(rng.standard_normal((args.batch_size, side, side, channels)).astype("float32"))
        kernel = rng.standard_normal((3, 3, channels // groups, channels)).astype("float32") * 0.05
        functions = layer_forms(kernel, groups)
        label = {"side": side, "channels": channels, "groups": groups, "batch": args.batch_size}
        summary(alternate(functions, x, args.rounds, args.calls, label), label, errors_of_scale(functions, x))


def time_model(args):
    import tensorflow as tf  # noqa: PLC0415

    import nfnet_keras  # noqa: PLC0415
    from nfnet_keras.models import fold_weight_standardization  # noqa: PLC0415
    from nfnet_keras.models.folding import winograd_convs  # noqa: PLC0415

    # A dynamic input size, so that folding without an image size keeps 2x2 tiles everywhere.
    model = nfnet_keras.create_model(args.model, weights=None, input_shape=(None, None, 3))
    size = model.preprocessing.image_size  # the variant's test size
    rng = np.random.default_rng(0)
    for v in model.weights:  # random weights with zero-initialised parts made nonzero
        if v.path.endswith(("gain", "bias")) or v.path.startswith("predictions"):
            v.assign(np.asarray(v) + 0.1 * rng.standard_normal(v.shape).astype("float32"))
    folded = {
        "direct": fold_weight_standardization(model),
        "winograd_2x2": fold_weight_standardization(model, winograd=True),
        "winograd_chosen": fold_weight_standardization(model, winograd=True, image_size=size),
    }
    tiles = {name: sorted(winograd_convs(m).values()) for name, m in folded.items() if name != "direct"}
    x = tf.constant(rng.uniform(-2, 2, (args.batch_size, size, size, 3)).astype("float32"))
    functions = {name: tf.function(lambda x, m=m: m(x, training=False), jit_compile=True)
                 for name, m in folded.items()}
    label = {"model": args.model, "size": size, "batch": args.batch_size, "tiles": tiles}
    summary(alternate(functions, x, args.rounds, args.calls, label), label, errors_of_scale(functions, x))


def main(argv=None):
    args = parse_args(argv)
    if args.layers:
        time_layers(args)
    else:
        time_model(args)


if __name__ == "__main__":
    sys.exit(main())
