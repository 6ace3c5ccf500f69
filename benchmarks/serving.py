"""CPU serving speed: our exported SavedModel against ONNX Runtime on timm's ONNX export.

What a serving host runs, on tensors already in memory: our SavedModel's
`predict_pixels` signature (float32 pixels, already resized; the folded model
and the softmax) loaded with `tf.saved_model.load`, against timm's
`dm_nfnet_*` (the same architecture) exported to ONNX (opset 17, dynamic batch)
and run by ONNX Runtime's CPU provider with every graph optimisation, all
cores. Both models have random weights: speed does not depend on them.

Implementations (`--impl`, comma list):
- `savedmodel`: the signature as exported (`python export.py`), as TF Serving
  would run it;
- `savedmodel_xla`: exported with `export.py --jit_compile` (the folded
  model inside the signatures compiled with XLA, its wide 3x3 convolutions
  with their kernels stored in Winograd's form, as that export writes on a CPU);
- `savedmodel_xla_direct`: the same with `--nowinograd` (direct 3x3 convolutions);
- `savedmodel_native`: exported with `NFNET_GROUPED_CONV=native` (one grouped
  convolution per layer, the form for GPU servers) instead of the per-group
  convolutions an export on a CPU host writes;
- `onnxruntime`: the peer. It needs torch, timm, onnx and onnxruntime, usually
  in another virtualenv: `--peer_python` names its interpreter (timm imports
  torchvision; where no build matches the installed torch, put a stand-in on
  PYTHONPATH).

Every (round, implementation) runs in a fresh process: load, 3 warm-up calls,
then `--calls` timed calls per batch size, median reported, also in process CPU
seconds. Rounds alternate the implementations, and the ratio to the peer is
the median of the same-round ratios (the machine's speed drifts between
rounds, not within one).  The SavedModel rows run with TensorFlow's default CPU
allocator, as a server does unless its environment says otherwise;
`--tf_allocator default,bfc` also times them with its pooling allocator
(`TF_CPU_ALLOCATOR_USE_BFC=true`, what train.py turns on).

Example (the RESULTS.md table):

    PYTHONPATH=<torchvision stand-in> python benchmarks/serving.py --variant F0 --batches 1,8 --rounds 3 \
        --peer_python /path/to/torch-venv/bin/python --json_out benchmarks/results/serving_f0.jsonl

The exports and the ONNX file are written once to `--cache_dir` and reused by
later runs: empty it after changing the export code, or an old form is timed.

Not a test: timings depend on the machine and its load.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import tf_allocator  # this folder's helper (a script's folder is on sys.path)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMPLEMENTATIONS = ("savedmodel", "savedmodel_xla", "savedmodel_xla_direct", "savedmodel_native", "onnxruntime")
PEER = "onnxruntime"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", default="F0", help="an NFNet-F variant timm also has as dm_nfnet_* (F0 ... F6)")
    parser.add_argument("--image_size", type=int, default=None, help="default: the variant's test size")
    parser.add_argument("--batches", default="1,8", help="comma list of batch sizes")
    parser.add_argument("--impl", default=",".join(IMPLEMENTATIONS), help="comma list of " + ", ".join(IMPLEMENTATIONS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=10, help="timed calls per batch size (median reported)")
    parser.add_argument(
        "--tf_allocator",
        default="default",
        help="comma list of TensorFlow CPU allocators for the SavedModel rows: " + tf_allocator.HELP,
    )
    parser.add_argument("--peer_python", default=sys.executable, help="interpreter with torch, timm and onnxruntime")
    parser.add_argument("--cache_dir", default=os.path.join(tempfile.gettempdir(), "nfnet_keras_serving"))
    parser.add_argument("--json_out", default=None, help="also append the JSON lines to this file")
    parser.add_argument("--_worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    unknown = sorted(set(args.impl.split(",")) - set(IMPLEMENTATIONS))
    if unknown:
        parser.error(f"unknown --impl {unknown}; choose from {', '.join(IMPLEMENTATIONS)}")
    allocators = [v for v in args.tf_allocator.split(",") if v]
    if not allocators or not set(allocators) <= set(tf_allocator.CHOICES):
        parser.error(f"--tf_allocator {args.tf_allocator!r}: a comma list of {', '.join(tf_allocator.CHOICES)}")
    args.tf_allocator = allocators
    return args


def time_calls(call, batch, calls):
    """Median wall and process-CPU seconds of `call()` after 3 warm-up calls."""
    for _ in range(3):
        call()
    wall, cpu = [], []
    for _ in range(calls):
        w, c = time.perf_counter(), time.process_time()
        call()
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
    median = statistics.median(wall)
    return {"s_per_call": round(median, 4), "cpu_s_per_call": round(statistics.median(cpu), 4),
            "img_per_s": round(batch / median, 3)}


# ------------------------------------------------------------------ workers (each in its own process)
def export_worker(cfg):
    """Writes our SavedModel of the variant (random weights) as `export.py` does."""
    os.environ["KERAS_BACKEND"] = "tensorflow"
    os.environ["NFNET_GROUPED_CONV"] = cfg["grouped_conv"]
    sys.path.insert(0, ROOT)
    import nfnet_keras
    from nfnet_keras.export.savedmodel import build_archive

    model = nfnet_keras.NFNet(cfg["variant"], input_shape=(cfg["size"], cfg["size"], 3))
    archive, _, _ = build_archive(model, jit_compile=cfg["jit_compile"], winograd=cfg["winograd"])
    archive.write_out(cfg["path"], verbose=False)
    return {"exported": cfg["path"]}


def savedmodel_worker(cfg):
    """Times the `predict_pixels` signature."""
    tf_allocator.select(cfg["tf_allocator"])
    import numpy as np
    import tensorflow as tf

    loaded = tf.saved_model.load(cfg["path"])  # kept referenced: the signature uses its variables
    call = loaded.signatures["predict_pixels"]
    results = []
    for batch in cfg["batches"]:
        pixels = tf.constant(np.random.default_rng(0).uniform(0, 255, (batch, cfg["size"], cfg["size"], 3)), tf.float32)
        results.append({"batch": batch, **time_calls(lambda: call(pixels=pixels)["probabilities"].numpy(), batch,
                                                     cfg["calls"])})
    return {"versions": {"tensorflow": tf.__version__}, "results": results}


def onnxruntime_worker(cfg):
    """Exports timm's dm_nfnet to ONNX once (opset 17, dynamic batch), then times ONNX Runtime on the CPU."""
    import numpy as np
    import onnxruntime
    import timm
    import torch

    if not os.path.exists(cfg["onnx_path"]):
        model = timm.create_model(f"dm_nfnet_{cfg['variant'].lower()}", pretrained=False).eval()
        example = torch.randn(1, 3, cfg["size"], cfg["size"])
        torch.onnx.export(model, example, cfg["onnx_path"], input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, opset_version=17, dynamo=False)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = os.cpu_count()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = onnxruntime.InferenceSession(cfg["onnx_path"], options, providers=["CPUExecutionProvider"])
    results = []
    for batch in cfg["batches"]:
        x = np.random.default_rng(0).normal(size=(batch, 3, cfg["size"], cfg["size"])).astype("float32")
        results.append({"batch": batch, **time_calls(lambda: session.run(None, {"x": x}), batch, cfg["calls"])})
    versions = {"onnxruntime": onnxruntime.__version__, "torch": torch.__version__, "timm": timm.__version__}
    return {"versions": versions, "results": results}


WORKERS = {"export": export_worker, "onnxruntime": onnxruntime_worker,
           **{impl: savedmodel_worker for impl in IMPLEMENTATIONS if impl.startswith("savedmodel")}}


def run_worker(cfg, python=sys.executable):
    """Runs one worker in a fresh process; its last stdout line is its JSON result."""
    cmd = [python, os.path.abspath(__file__), "--_worker", json.dumps(cfg)]
    process = subprocess.run(cmd, capture_output=True, text=True)
    if process.returncode != 0:
        tail = (process.stderr or process.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"error": f"{cfg['impl']} exited with status {process.returncode}: {tail[0]}"}
    return json.loads(process.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------ driver
def main(argv=None):
    args = parse_args(argv)
    if args._worker:
        cfg = json.loads(args._worker)
        print(json.dumps(WORKERS[cfg["impl"]](cfg)))
        return 0
    sys.path.insert(0, ROOT)
    from nfnet_keras.models import variants  # noqa: PLC0415  (the checkout's package, also when not installed)

    size = args.image_size or variants.get_config(args.variant)["test_imsize"]
    os.makedirs(args.cache_dir, exist_ok=True)
    base = {"variant": args.variant, "size": size, "batches": [int(b) for b in args.batches.split(",")],
            "calls": args.calls}
    impls = args.impl.split(",")
    saved_models = {}
    for impl in impls:
        if not impl.startswith("savedmodel"):
            continue
        grouped_conv = "native" if impl == "savedmodel_native" else "split"
        jit_compile = impl.startswith("savedmodel_xla")
        winograd = impl == "savedmodel_xla"  # what export.py --jit_compile writes on a CPU
        path = os.path.join(args.cache_dir, f"nfnet_{args.variant.lower()}_{size}_{grouped_conv}"
                            f"{'_xla' if jit_compile else ''}{'_winograd' if winograd else ''}_savedmodel")
        if not os.path.exists(path):
            exported = run_worker({**base, "impl": "export", "path": path, "grouped_conv": grouped_conv,
                                   "jit_compile": jit_compile, "winograd": winograd})
            if "error" in exported:
                print(f"error: exporting the SavedModel failed: {exported['error']}", file=sys.stderr)
                return 1
        saved_models[impl] = path
    onnx_path = os.path.join(args.cache_dir, f"dm_nfnet_{args.variant.lower()}_{size}.onnx")

    runs = [(impl, allocator) for impl in impls
            for allocator in (args.tf_allocator if impl in saved_models else [None])]
    rows = []
    for round_index in range(args.rounds):
        for impl, allocator in runs:
            cfg = {**base, "impl": impl, "tf_allocator": allocator, "path": saved_models.get(impl),
                   "onnx_path": onnx_path}
            result = run_worker(cfg, args.peer_python if impl == PEER else sys.executable)
            if "error" in result:
                print(f"round {round_index}: {result['error']}", file=sys.stderr)
                continue
            for row in result["results"]:
                line = {"impl": impl, "tf_allocator": allocator, "round": round_index, "variant": args.variant,
                        "size": size, **row,
                        "versions": result["versions"], "load_avg": round(os.getloadavg()[0], 2)}
                rows.append(line)
                print(json.dumps(line), flush=True)
                if args.json_out:
                    with open(args.json_out, "a") as handle:
                        handle.write(json.dumps(line) + "\n")
    print_table(rows, runs)
    return 0


def print_table(rows, runs):
    """Median img/s per (implementation, allocator) and batch, and the median same-round ratio to ONNX Runtime."""
    print("\n| implementation | batch | img/s (median of rounds) | CPU s per call | vs ONNX Runtime (same round) |")
    print("|---|---|---|---|---|")
    for impl, allocator in runs:
        label = f"{impl}, {allocator} allocator" if allocator else impl
        for batch in sorted({r["batch"] for r in rows}):
            mine = [r for r in rows if (r["impl"], r["tf_allocator"]) == (impl, allocator) and r["batch"] == batch]
            if not mine:
                continue
            ratios = []
            for r in mine:
                peer = [p for p in rows if p["impl"] == PEER and p["batch"] == batch and p["round"] == r["round"]]
                if peer and impl != PEER:
                    ratios.append(r["img_per_s"] / peer[0]["img_per_s"])
            ratio = f"{statistics.median(ratios):.2f}x ({', '.join(f'{x:.2f}' for x in ratios)})" if ratios else ""
            img = statistics.median(r["img_per_s"] for r in mine)
            cpu = statistics.median(r["cpu_s_per_call"] for r in mine)
            print(f"| {label} | {batch} | {img:.2f} | {cpu:.3f} | {ratio} |")


if __name__ == "__main__":
    sys.exit(main())
