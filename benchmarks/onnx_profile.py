"""Where ONNX Runtime spends its time on an ONNX file: kernel time by op type and by node.

The peer's side of `serving_profile.py`: runs the model on ONNX Runtime's CPU
provider with the settings `benchmarks/serving.py` gives the peer (all graph
optimisations, `--threads` intra-op threads), times `--runs` plain calls, then
`--runs` profiled calls, and sums the profiler's kernel times per op type and
per node (with the node's output shape), per call.  Needs onnxruntime, so it
runs with the peer's Python.  Not a test.

    <peer python> benchmarks/onnx_profile.py /tmp/nfnet_keras_serving/dm_nfnet_f0_256.onnx --batch 1
"""

import argparse
import collections
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("onnx", help="an ONNX file with one NCHW float32 image input, e.g. serving.py's export of timm's model")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=6)
    parser.add_argument("--top", type=int, default=60, help="how many of the slowest nodes to list")
    args = parser.parse_args(argv)
    import onnxruntime as ort

    def session(profile_prefix=None):
        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if profile_prefix:
            options.enable_profiling = True
            options.profile_file_prefix = profile_prefix
        return ort.InferenceSession(args.onnx, options, providers=["CPUExecutionProvider"])

    plain = session()
    (model_input,) = plain.get_inputs()
    shape = [args.batch] + list(model_input.shape[1:])
    feed = {model_input.name: np.random.default_rng(0).standard_normal(shape).astype(np.float32)}
    for _ in range(3):
        plain.run(None, feed)
    times = []
    for _ in range(args.runs):
        start = time.perf_counter()
        plain.run(None, feed)
        times.append(time.perf_counter() - start)

    with tempfile.TemporaryDirectory() as folder:
        profiled = session(os.path.join(folder, "profile"))
        profiled.run(None, feed)  # warm-up, left out below
        for _ in range(args.runs):
            profiled.run(None, feed)
        with open(profiled.end_profiling()) as f:
            events = json.load(f)
    by_type, by_node, shapes = collections.Counter(), collections.Counter(), {}
    runs = [e for e in events if e.get("cat") == "Session" and e["name"] == "model_run"]
    first = runs[-args.runs]["ts"]  # skip the warm-up call's nodes
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time") and event["ts"] >= first:
            by_type[event["args"]["op_name"]] += event["dur"]
            by_node[event["name"][: -len("_kernel_time")]] += event["dur"]
            shapes[event["name"][: -len("_kernel_time")]] = event["args"].get("output_type_shape")
    total = sum(by_type.values())
    print(f"{os.path.basename(args.onnx)}, batch {args.batch}, {args.threads} threads: "
          f"{statistics.median(times) * 1e3:.1f} ms per call (median of {args.runs} unprofiled); "
          f"kernel time {total / args.runs / 1e3:.1f} ms per call")
    print("\n| op type | ms per call | share |\n|---|---|---|")
    for op, micros in by_type.most_common():
        print(f"| {op} | {micros / args.runs / 1e3:.2f} | {100 * micros / total:.1f} % |")
    print("\n| node | output shape | ms per call |\n|---|---|---|")
    for node, micros in by_node.most_common(args.top):
        print(f"| {node} | {shapes[node]} | {micros / args.runs / 1e3:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
