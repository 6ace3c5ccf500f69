"""Training and inference throughput of NFNets, measured the paper's way.

Wall time per step after warm-up, median over steps, on tensors already on
the device (no input pipeline), through the same paths users call:
`model.predict_on_batch` (what `model.predict` runs per batch) and
`model.train_on_batch` (what `model.fit` runs per batch) after
`compile(optimizer=NFNetSGD(AGC, EMA), ...)`; then the same number of
batches once more through `model.predict` / `model.fit` on numpy arrays,
timed per batch by a callback (`predict_img_per_s` / `fit_img_per_s`).  Each configuration runs in a
fresh subprocess (its own backend, its own peak memory), which also measures
a 2048^3 matmul in the same precision, so "utilisation" is achieved
multiply-add throughput over what this process could get from the hardware
on a large matmul.

For each configuration it prints one JSON line, then a table:

    img/s, ms/step, achieved GMAC/s (forward MACs of `count_macs` per image,
    x3 for a training step), matmul GFLOP/s, utilisation = 2 * GMAC/s /
    matmul GFLOP/s, and peak memory (host RSS peak on CPU, device peak on GPU).

Peers in the same command: `--peer timm` times timm's `dm_nfnet_*` in PyTorch
(eager, and `torch.compile` with `--torch_compile`) on the same shapes; AMP
(bf16/fp16 autocast) follows `--precision`.  timm imports torchvision; where
no torchvision build matches the installed torch, put a stand-in module on
PYTHONPATH.  Ratios to the peer are reported from the same run.

Examples (the RESULTS.md tables):

    python benchmarks/throughput.py --variant F0 --mode infer,train --backend tensorflow,jax --peer timm
    python benchmarks/throughput.py --variant F3 --mode train --image_size 256 --remat both --steps 3
    python benchmarks/throughput.py --variant nano --mode infer,train --batch_size 64

Not a test: timings depend on the machine and its load.
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PRECISION_POLICIES = {"fp32": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}
MATMUL_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="F0", help="a variant of nfnet_keras.models.variants (F0 ... F7+, nano, micro)")
    parser.add_argument("--mode", default="infer,train", help="comma list of infer, train")
    parser.add_argument(
        "--image_size",
        type=int,
        default=None,
        help="square input size; default: the variant's test size for infer, train size for train",
    )
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--backend", default="tensorflow", help="comma list of tensorflow, jax")
    parser.add_argument("--precision", default="fp32", help="comma list of fp32, bf16, fp16")
    parser.add_argument(
        "--jit",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="force XLA on (--jit) or off (--no-jit); default: what Keras picks (the user-facing path)",
    )
    parser.add_argument("--steps", type=int, default=5, help="timed steps (median reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (tracing, compilation)")
    parser.add_argument(
        "--remat",
        choices=("off", "on", "both"),
        default="off",
        help="rematerialise the blocks' residual branches (training memory)",
    )
    parser.add_argument(
        "--grouped_conv",
        choices=("auto", "native", "split"),
        default="auto",
        help="how grouped 3x3 convs run (NFNET_GROUPED_CONV); auto is the library default",
    )
    parser.add_argument(
        "--optimizer",
        default="nfnet_sgd",
        help="comma list of nfnet_sgd (the paper's step: AGC, Nesterov, coupled decay, EMA) and sgd "
        "(Keras' Nesterov SGD, the step timm is timed with)",
    )
    parser.add_argument(
        "--api_pass",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time one model.predict / model.fit pass over the same batches",
    )
    parser.add_argument("--peer", default="", help="comma list of peers to time in the same command: timm")
    parser.add_argument("--torch_compile", action="store_true", help="also time the peer under torch.compile")
    parser.add_argument("--matmul_size", type=int, default=2048)
    parser.add_argument("--json_out", default=None, help="also append the JSON lines to this file")
    parser.add_argument("--_worker", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _split(value, allowed, flag):
    items = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in items if v not in allowed]
    if bad or not items:
        raise SystemExit(f"--{flag}: {bad or value!r} not in {allowed}")
    return items


def median(values):
    values = sorted(values)
    n = len(values)
    return values[n // 2] if n % 2 else 0.5 * (values[n // 2 - 1] + values[n // 2])


def time_steps(step, warmup, steps, sync):
    for _ in range(warmup):
        sync(step())
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        sync(step())
        times.append(time.perf_counter() - start)
    return times


def peak_rss_mb():
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# --------------------------------------------------------------------------- keras worker


def keras_worker(cfg):
    os.environ["KERAS_BACKEND"] = cfg["backend"]
    os.environ["NFNET_GROUPED_CONV"] = cfg["grouped_conv"]
    import keras
    import numpy as np

    sys.path.insert(0, ROOT)
    import nfnet_keras
    import nfnet_keras.training
    from nfnet_keras.models.layers import ws_conv

    backend = keras.backend.backend()
    keras.mixed_precision.set_global_policy(PRECISION_POLICIES[cfg["precision"]])
    keras.utils.set_random_seed(0)
    size, batch = cfg["image_size"], cfg["batch_size"]

    start = time.perf_counter()
    model = nfnet_keras.NFNet(
        cfg["variant"],
        input_shape=(size, size, 3),
        classifier_activation=None,
        remat=cfg["remat"],
        stochdepth_rate=0.25 if cfg["mode"] == "train" else 0.1,
    )
    build_s = time.perf_counter() - start
    macs = nfnet_keras.models.count_macs(model, size)
    rss_after_build = peak_rss_mb()

    rng = np.random.default_rng(0)
    x = keras.ops.convert_to_tensor(rng.normal(size=(batch, size, size, 3)).astype("float32"))
    classes = model.output_shape[-1]
    if cfg["mode"] == "infer":
        if cfg["jit"] is not None:
            model.jit_compile = cfg["jit"]

        def step():
            return model.predict_on_batch(x)

    else:
        y = keras.ops.convert_to_tensor(np.eye(classes, dtype="float32")[np.arange(batch) % classes])
        if cfg["optimizer"] == "nfnet_sgd":
            optimizer = nfnet_keras.training.NFNetSGD(learning_rate=0.1, clipping=0.01, ema_decay=0.99999)
        else:
            optimizer = keras.optimizers.SGD(learning_rate=0.1, momentum=0.9, nesterov=True)
        model.compile(
            optimizer=optimizer,
            loss=keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1),
            jit_compile="auto" if cfg["jit"] is None else cfg["jit"],
        )

        def step():
            return model.train_on_batch(x, y)

    def sync(out):
        # predict/train_on_batch return numpy values: the step has finished.
        return out

    times = time_steps(step, cfg["warmup"], cfg["steps"], sync)
    step_s = median(times)
    # The same work through model.predict / model.fit on numpy arrays of
    # `steps` batches: the user-facing calls reach the same speed.
    api_img_per_s = api_pass(model, x, y if cfg["mode"] == "train" else None, cfg) if cfg["api_pass"] else None
    matmul = matmul_gflops(cfg["precision"], cfg["matmul_size"])
    device, device_peak_mb = device_memory(backend)
    fwd_gmac = macs / 1e9
    gmac_per_step = fwd_gmac * batch * (3 if cfg["mode"] == "train" else 1)
    achieved = gmac_per_step / step_s
    return {
        "impl": f"nfnet_keras-{backend}",
        "variant": cfg["variant"],
        "mode": cfg["mode"],
        "image_size": size,
        "batch_size": batch,
        "precision": cfg["precision"],
        "jit": bool(model.jit_compile),
        "grouped_conv": ws_conv.grouped_conv_mode(),
        "remat": cfg["remat"],
        "optimizer": cfg["optimizer"] if cfg["mode"] == "train" else None,
        "img_per_s": round(batch / step_s, 3),
        "ms_per_step": round(step_s * 1e3, 1),
        "step_times_s": [round(t, 4) for t in times],
        ("predict" if cfg["mode"] == "infer" else "fit") + "_img_per_s": api_img_per_s and round(api_img_per_s, 3),
        "fwd_gmac_per_image": round(fwd_gmac, 6),
        "gmac_per_s": round(achieved, 2),
        "matmul_gflop_per_s": round(matmul, 1),
        "utilisation": round(2 * achieved / matmul, 3),
        "build_s": round(build_s, 1),
        "device": device,
        "peak_host_rss_mb": round(peak_rss_mb(), 0),
        "host_rss_after_build_mb": round(rss_after_build, 0),
        "peak_device_mb": device_peak_mb,
        "versions": versions(backend),
    }


def api_pass(model, x, y, cfg):
    """img/s of the steps `model.predict` (y None) or `model.fit` run, on numpy arrays.

    One call over `steps` copies of the batch after a one-batch call that
    traces the iterator-fed function; each batch is timed by a callback
    (batch begin to batch end) and the median is reported, so the figure is
    comparable with the `*_on_batch` steps (per-call set-up is not counted).
    """
    import keras
    import numpy as np

    batch = cfg["batch_size"]
    x_np = np.concatenate([keras.ops.convert_to_numpy(x)] * cfg["steps"])
    times = []

    class BatchTimer(keras.callbacks.Callback):
        def on_predict_batch_begin(self, index, logs=None):
            self.start = time.perf_counter()

        def on_predict_batch_end(self, index, logs=None):
            times.append(time.perf_counter() - self.start)

        on_train_batch_begin = on_predict_batch_begin
        on_train_batch_end = on_predict_batch_end

    if y is None:

        def call(n):
            model.predict(x_np[:n], batch_size=batch, verbose=0, callbacks=[BatchTimer()])

    else:
        y_np = np.concatenate([keras.ops.convert_to_numpy(y)] * cfg["steps"])

        def call(n):
            model.fit(x_np[:n], y_np[:n], batch_size=batch, epochs=1, shuffle=False, verbose=0,
                      callbacks=[BatchTimer()])

    call(batch)
    times.clear()
    call(len(x_np))
    return batch / median(times)


def matmul_gflops(precision, n, repeats=5):
    """GFLOP/s of an n x n x n matmul in the precision's compute dtype, median of `repeats`."""
    import keras
    import numpy as np

    dtype = MATMUL_DTYPES[precision]
    rng = np.random.default_rng(1)
    a = keras.ops.cast(keras.ops.convert_to_tensor(rng.normal(size=(n, n)).astype("float32")), dtype)
    b = keras.ops.cast(keras.ops.convert_to_tensor(rng.normal(size=(n, n)).astype("float32")), dtype)
    if keras.backend.backend() == "jax":
        import jax

        mm = jax.jit(lambda p, q: p @ q)

        def run():
            return mm(a, b).block_until_ready()

    else:
        import tensorflow as tf

        mm = tf.function(lambda p, q: tf.matmul(p, q))

        def run():
            return mm(a, b).numpy()

    times = time_steps(run, 2, repeats, lambda out: out)
    return 2.0 * n**3 / median(times) / 1e9


def device_memory(backend):
    if backend == "jax":
        import jax

        dev = jax.devices()[0]
        stats = dev.memory_stats() if dev.platform != "cpu" else None
        peak = None if not stats else round(stats.get("peak_bytes_in_use", 0) / 2**20, 0)
        return f"{dev.platform}:{getattr(dev, 'device_kind', '')}", peak
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
        info = tf.config.experimental.get_memory_info(gpus[0].name)
        return f"gpu:{gpus[0].name}", round(info["peak"] / 2**20, 0)
    return "cpu", None


def versions(backend):
    import keras

    out = {"python": platform.python_version(), "keras": keras.__version__}
    if backend == "jax":
        import jax

        out["jax"] = jax.__version__
    else:
        import tensorflow as tf

        out["tensorflow"] = tf.__version__
    return out


# --------------------------------------------------------------------------- timm worker


def timm_worker(cfg):
    import numpy as np
    import torch
    import timm

    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count())
    device = "cuda" if torch.cuda.is_available() else "cpu"
    name = f"dm_nfnet_{cfg['variant'].lower().replace('+', '')}"
    model = timm.create_model(name, pretrained=False).to(device)
    if cfg["torch_compile"]:
        model = torch.compile(model)
    size, batch = cfg["image_size"], cfg["batch_size"]
    x = torch.randn(batch, 3, size, size, device=device)
    amp_dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[cfg["precision"]]

    def autocast():
        return torch.autocast(device_type=device, dtype=amp_dtype, enabled=amp_dtype is not None)

    if cfg["mode"] == "infer":
        model.eval()

        def step():
            with torch.inference_mode(), autocast():
                return model(x)

    else:
        model.train()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
        scaler = torch.amp.GradScaler(device, enabled=amp_dtype == torch.float16)
        y = torch.arange(batch, device=device) % 1000

        def step():
            optimizer.zero_grad(set_to_none=True)
            with autocast():
                loss = torch.nn.functional.cross_entropy(model(x), y, label_smoothing=0.1)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            return loss

    def sync(out):
        if device == "cuda":
            torch.cuda.synchronize()
        return out

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = time_steps(step, cfg["warmup"], cfg["steps"], sync)
    step_s = median(times)
    n = cfg["matmul_size"]
    mm_dtype = amp_dtype or torch.float32
    a = torch.randn(n, n, device=device, dtype=mm_dtype)
    b = torch.randn(n, n, device=device, dtype=mm_dtype)
    mm_times = time_steps(lambda: a @ b, 2, 5, sync)
    matmul = 2.0 * n**3 / median(mm_times) / 1e9
    fwd_gmac = cfg["fwd_gmac_per_image"]
    achieved = fwd_gmac * batch * (3 if cfg["mode"] == "train" else 1) / step_s
    return {
        "impl": "timm-torch" + ("-compile" if cfg["torch_compile"] else "-eager"),
        "optimizer": "torch SGD nesterov" if cfg["mode"] == "train" else None,
        "variant": cfg["variant"],
        "mode": cfg["mode"],
        "image_size": size,
        "batch_size": batch,
        "precision": cfg["precision"],
        "jit": bool(cfg["torch_compile"]),
        "img_per_s": round(batch / step_s, 3),
        "ms_per_step": round(step_s * 1e3, 1),
        "step_times_s": [round(t, 4) for t in times],
        "fwd_gmac_per_image": fwd_gmac,
        "gmac_per_s": round(achieved, 2),
        "matmul_gflop_per_s": round(matmul, 1),
        "utilisation": round(2 * achieved / matmul, 3),
        "device": device if device == "cpu" else torch.cuda.get_device_name(),
        "peak_host_rss_mb": round(peak_rss_mb(), 0),
        "peak_device_mb": round(torch.cuda.max_memory_allocated() / 2**20, 0) if device == "cuda" else None,
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "timm": timm.__version__},
    }


# --------------------------------------------------------------------------- driver


def run_worker(cfg):
    """Runs one configuration in a fresh interpreter and returns its JSON result."""
    cmd = [sys.executable, os.path.abspath(__file__), "--_worker", json.dumps(cfg)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        return {**cfg, "error": f"exit {proc.returncode}: {tail}"}
    return json.loads(lines[-1])


def configurations(args):
    import importlib

    sys.path.insert(0, ROOT)
    variants = importlib.import_module("nfnet_keras.models.variants")
    variant_config = variants.get_config(args.variant)  # raises for an unknown variant
    modes = _split(args.mode, ("infer", "train"), "mode")
    backends = _split(args.backend, ("tensorflow", "jax"), "backend")
    precisions = _split(args.precision, tuple(PRECISION_POLICIES), "precision")
    peers = _split(args.peer, ("timm",), "peer") if args.peer else []
    remats = {"off": [False], "on": [True], "both": [False, True]}[args.remat]
    optimizers = _split(args.optimizer, ("nfnet_sgd", "sgd"), "optimizer")
    for mode in modes:
        size = args.image_size or variant_config["test_imsize" if mode == "infer" else "train_imsize"]
        for precision in precisions:
            common = {
                "variant": args.variant,
                "mode": mode,
                "image_size": size,
                "batch_size": args.batch_size,
                "precision": precision,
                "steps": args.steps,
                "warmup": args.warmup,
                "matmul_size": args.matmul_size,
            }
            for backend in backends:
                for remat in remats if mode == "train" else [False]:
                    for optimizer in optimizers if mode == "train" else optimizers[:1]:
                        yield {**common, "kind": "keras", "backend": backend, "jit": args.jit, "remat": remat,
                               "grouped_conv": args.grouped_conv, "optimizer": optimizer,
                               "api_pass": args.api_pass}
            for peer in peers:
                for compiled in (False, True) if args.torch_compile else (False,):
                    yield {**common, "kind": peer, "torch_compile": compiled}


def print_table(results):
    header = ("impl", "mode", "px", "batch", "prec", "jit", "remat", "optimizer", "img/s", "fit/predict img/s",
              "ms/step", "GMAC/s", "matmul GFLOP/s", "util", "peak MB", "vs peer")
    rows = []
    peers = {}
    for r in results:
        if "error" not in r and r["impl"].startswith("timm"):
            key = (r["mode"], r["image_size"], r["precision"])
            peers[key] = max(peers.get(key, 0.0), r["img_per_s"])
    for r in results:
        if "error" in r:
            rows.append((r.get("kind", "?") + "/" + r.get("backend", ""), r["mode"], "", "", "", "", "", "error"))
            continue
        peer = peers.get((r["mode"], r["image_size"], r["precision"]))
        ratio = f"{r['img_per_s'] / peer:.2f}x" if peer and not r["impl"].startswith("timm") else ""
        peak = r.get("peak_device_mb") or r.get("peak_host_rss_mb")
        api = r.get("predict_img_per_s") or r.get("fit_img_per_s")
        rows.append((r["impl"], r["mode"], r["image_size"], r["batch_size"], r["precision"], r["jit"],
                     r.get("remat", ""), r.get("optimizer") or "", f"{r['img_per_s']:.2f}",
                     f"{api:.2f}" if api else "", f"{r['ms_per_step']:.0f}",
                     f"{r['gmac_per_s']:.1f}", f"{r['matmul_gflop_per_s']:.0f}", f"{r['utilisation']:.2f}",
                     f"{peak:.0f}" if peak else "", ratio))
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)] if rows else []
    for row in [header] + rows:
        print(" | ".join(str(x).ljust(w) for x, w in zip(row, widths)))


def main(argv=None):
    args = parse_args(argv)
    if args._worker:
        cfg = json.loads(args._worker)
        result = keras_worker(cfg) if cfg["kind"] == "keras" else timm_worker(cfg)
        print(json.dumps(result), flush=True)
        return 0
    results = []
    fwd_gmac = {}
    for cfg in configurations(args):
        if cfg["kind"] != "keras":
            cfg["fwd_gmac_per_image"] = fwd_gmac.get(cfg["image_size"]) or _count_fwd_gmac(cfg)
        result = run_worker(cfg)
        if "fwd_gmac_per_image" in result and cfg["kind"] == "keras":
            fwd_gmac[cfg["image_size"]] = result["fwd_gmac_per_image"]
        print(json.dumps(result), flush=True)
        if args.json_out:
            with open(args.json_out, "a") as f:
                f.write(json.dumps(result) + "\n")
        results.append(result)
    print()
    print_table(results)
    return 1 if any("error" in r for r in results) else 0


def _count_fwd_gmac(cfg):
    """Forward GMACs per image for a peer-only run (no Keras result to take them from)."""
    code = (
        "import nfnet_keras as n; "
        f"m = n.NFNet({cfg['variant']!r}, input_shape=({cfg['image_size']}, {cfg['image_size']}, 3)); "
        f"print(nfnet_keras.models.count_macs(m, {cfg['image_size']}) / 1e9)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    return round(float(out.stdout.strip().splitlines()[-1]), 6)


if __name__ == "__main__":
    sys.exit(main())
