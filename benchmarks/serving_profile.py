"""Where a SavedModel signature spends its time: op time summed by op type, and by convolution layer.

Loads the SavedModel in a TF1 session (the graph TF Serving runs, functions
inlined), calls `--signature` a few times to warm up, then traces
`--traces` calls with full step statistics and sums each op's time (wall
time per op; ops that run in parallel overlap, so the sum can exceed the
call's time).  Prints the plain call time (median of 5 untraced calls), the
top op types and, with `--layers`, the convolutions grouped by layer name and
output shape.  TensorFlow settings come from the environment
(`TF_CPU_ALLOCATOR_USE_BFC`, `TF_ENABLE_ONEDNN_OPTS`, ...).  Not a test.

    python benchmarks/serving_profile.py /tmp/nfnet_keras_serving/nfnet_f0_256_split_savedmodel --batch 1 --layers
"""

import argparse
import collections
import re
import statistics
import time

import numpy as np
import tensorflow as tf


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("saved_model", help="a SavedModel folder, e.g. one that benchmarks/serving.py exported")
    parser.add_argument("--signature", default="predict_pixels")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--traces", type=int, default=3)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--layers", action="store_true", help="also the convolutions by layer and output shape")
    args = parser.parse_args(argv)

    tf.compat.v1.disable_eager_execution()
    with tf.compat.v1.Session() as session:
        meta_graph = tf.compat.v1.saved_model.loader.load(session, ["serve"], args.saved_model)
        signature = meta_graph.signature_def[args.signature]
        (input_info,) = signature.inputs.values()
        (output_info,) = signature.outputs.values()
        output = output_info.name
        shape = [args.batch] + [d.size for d in input_info.tensor_shape.dim[1:]]
        pixels = np.random.default_rng(0).uniform(0, 255, shape)  # float32 or uint8, as the signature takes
        feed = {input_info.name: pixels.astype(tf.as_dtype(input_info.dtype).as_numpy_dtype)}
        for _ in range(3):
            session.run(output, feed)
        plain = []
        for _ in range(5):
            start = time.perf_counter()
            session.run(output, feed)
            plain.append(time.perf_counter() - start)
        by_type, by_layer, counts = collections.Counter(), collections.Counter(), collections.Counter()
        for _ in range(args.traces):
            metadata = tf.compat.v1.RunMetadata()
            options = tf.compat.v1.RunOptions(trace_level=tf.compat.v1.RunOptions.FULL_TRACE)
            session.run(output, feed, options=options, run_metadata=metadata)
            for device in metadata.step_stats.dev_stats:
                for node in device.node_stats:
                    label = node.timeline_label
                    op = label.split("= ")[1].split("(")[0] if "= " in label else node.node_name.split("/")[-1]
                    micros = node.op_end_rel_micros - node.op_start_rel_micros
                    by_type[op] += micros
                    counts[op] += 1
                    if "Conv2D" in op and node.output:
                        layer = re.sub(r"\d+", "#", node.node_name.split("/")[-2])
                        dims = tuple(d.size for d in node.output[0].tensor_description.shape.dim)
                        by_layer[(layer, dims[1:])] += micros
    total = sum(by_type.values())
    print(f"{args.signature}, batch {args.batch}: {statistics.median(plain) * 1e3:.1f} ms per call "
          f"(median of 5 untraced); traced op time {total / args.traces / 1e3:.1f} ms per call")
    print("\n| op type | ms per call | share | ops per call |\n|---|---|---|---|")
    for op, micros in by_type.most_common(args.top):
        print(f"| {op} | {micros / args.traces / 1e3:.1f} | {100 * micros / total:.1f} % | {counts[op] // args.traces} |")
    if args.layers:
        conv_total = sum(by_layer.values())
        print("\n| convolution layer (digits as #) | output H, W, C | ms per call | share of conv time |\n|---|---|---|---|")
        for (layer, dims), micros in by_layer.most_common(args.top):
            print(f"| {layer} | {dims} | {micros / args.traces / 1e3:.1f} | {100 * micros / conv_total:.1f} % |")


if __name__ == "__main__":
    main()
