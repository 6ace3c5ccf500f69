"""Where a training step spends its time on TensorFlow: op seconds by kind of work, and by op type.

Builds a model and its training step as `throughput.py --mode train` does
(random inputs, `throughput.compile_for_training`), warms up,
times a few plain `train_on_batch` steps, then records `--steps` more with
TensorFlow's profiler and sums each op's execution time (its own events in
the profile; ops of the inter-op pool can overlap, so the sum is compared with
`cores x wall time`, and what is left is time no op ran on a core). The kinds
of work come from the op's layer scope and type:

* convolutions: `Conv2D` forward and both gradients;
* grouped-conv split/concat: the per-group `Split`/`Slice`/`ConcatV2` of
  the CPU's split form, and their gradients;
* weight standardisation: every other op under a convolution's scope (the
  kernel's mean and variance, the scaling), forward and gradient;
* activations: the scaled GELU/ReLU layers, forward and gradient;
* squeeze-excite, optimizer (the optimizer's own scope), other.

Settings come from the environment as in `throughput.py` (the pooling
allocator unless `--tf_allocator default`, `TF_ENABLE_ONEDNN_OPTS`, ...).
Not a test: the figures depend on the machine and its load.

    python benchmarks/train_step_profile.py --variant F0 --image_size 192 --batch_size 8
"""

import argparse
import collections
import glob
import os
import re
import statistics
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for path in (ROOT, os.path.dirname(os.path.abspath(__file__))):
    if path not in sys.path:
        sys.path.insert(0, path)

import tf_allocator  # noqa: E402
import throughput  # noqa: E402

KINDS = ("convolutions", "grouped-conv split/concat", "weight standardisation", "activations",
         "squeeze-excite", "optimizer", "other")
_SPLIT_TYPES = ("Split", "SplitV", "Slice", "ConcatV2", "ConcatOffset")


def kind_of(scope, op_type, optimizer_scope):
    """The kind of work of an op named `scope` of type `op_type` (one of `KINDS`)."""
    if scope.startswith(optimizer_scope):
        return "optimizer"
    if "Conv2D" in op_type:
        return "convolutions"
    layers = scope.split("/")
    if any("squeeze_excite" in layer for layer in layers):
        return "squeeze-excite"
    if any(re.match(r"(stem_)?act\d*(_\d+)?$", layer) for layer in layers):
        return "activations"
    if any("conv" in layer for layer in layers[1:]):
        return "grouped-conv split/concat" if op_type in _SPLIT_TYPES else "weight standardisation"
    return "other"


def op_seconds(logdir, steps):
    """`{(scope, op type): seconds per step}` from the profile under `logdir`."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2  # noqa: PLC0415

    (path,) = sorted(glob.glob(os.path.join(logdir, "plugins", "profile", "*", "*.xplane.pb")))[-1:]
    space = xplane_pb2.XSpace()
    with open(path, "rb") as handle:
        space.ParseFromString(handle.read())
    seconds = collections.Counter()
    for plane in space.planes:
        for line in plane.lines:
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                scope, _, op_type = name.rpartition(":")
                # Ops are "scope:Type"; the executor's wrappers and the function call are not ops.
                if not scope or op_type in ("Process", "Run") or op_type.startswith("__inference") \
                        or scope.startswith("EagerLocalExecute"):
                    continue
                seconds[(scope, op_type)] += event.duration_ps / 1e12 / steps
    return seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", default="F0")
    parser.add_argument("--image_size", type=int, default=192)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--optimizer", choices=("nfnet_sgd", "sgd"), default="nfnet_sgd")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2, help="profiled steps (after as many plain timed ones)")
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--tf_allocator", choices=tf_allocator.CHOICES, default="bfc", help=tf_allocator.HELP)
    args = parser.parse_args(argv)

    tf_allocator.select(args.tf_allocator)
    os.environ["KERAS_BACKEND"] = "tensorflow"
    import keras  # noqa: PLC0415
    import tensorflow as tf  # noqa: PLC0415

    import nfnet_keras  # noqa: PLC0415

    keras.utils.set_random_seed(0)
    size, batch = args.image_size, args.batch_size
    model = nfnet_keras.create_model(args.variant, input_shape=(size, size, 3), classifier_activation=None,
                                     stochdepth_rate=0.25)
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(batch, size, size, 3)).astype("float32"))
    classes = model.output_shape[-1]
    y = tf.constant(np.eye(classes, dtype="float32")[np.arange(batch) % classes])
    throughput.compile_for_training(model, args.optimizer)
    plain = throughput.time_steps(lambda: model.train_on_batch(x, y), args.warmup, args.steps, lambda out: out)

    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        start = time.perf_counter()
        for _ in range(args.steps):
            model.train_on_batch(x, y)
        wall = (time.perf_counter() - start) / args.steps
        tf.profiler.experimental.stop()
        seconds = op_seconds(logdir, args.steps)

    # The optimizer's ops are named after the optimizer (`nf_net_sgd/...`, `SGD/...`).
    optimizer_scope = model.optimizer.name
    by_kind, by_type, counts = collections.Counter(), collections.Counter(), collections.Counter()
    for (scope, op_type), s in seconds.items():
        by_kind[kind_of(scope, op_type, optimizer_scope)] += s
        by_type[op_type] += s
        counts[op_type] += 1
    cores = os.cpu_count()
    busy = sum(by_kind.values())
    print(f"{args.variant}, {size} px, batch {batch}, {args.optimizer}: {statistics.median(plain):.2f} s per step "
          f"(median of {len(plain)} untraced), {wall:.2f} s traced; op time {busy:.2f} s per step of "
          f"{cores} cores x {wall:.2f} s = {cores * wall:.2f} core-seconds")
    print("\n| kind of work | op seconds per step | share of core-seconds |\n|---|---|---|")
    for kind in KINDS:
        print(f"| {kind} | {by_kind[kind]:.3f} | {100 * by_kind[kind] / (cores * wall):.1f} % |")
    idle = cores * wall - busy
    print(f"| no op running | {idle:.3f} | {100 * idle / (cores * wall):.1f} % |")
    print("\n| op type | op seconds per step | distinct ops |\n|---|---|---|")
    for op_type, s in by_type.most_common(args.top):
        print(f"| {op_type} | {s:.3f} | {counts[op_type]} |")


if __name__ == "__main__":
    main()
