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

Peers in the same command: `--peer timm` times timm's `dm_nfnet_*` (for `--variant F0` ...)
or the timm model itself (for `--variant timm/eca_nfnet_l0` ...) in PyTorch
(eager, and `torch.compile` with `--torch_compile`) on the same shapes; AMP
(bf16/fp16 autocast) follows `--precision`.  In training, timm runs the step
that matches each of our optimizers: `sgd` against `torch.optim.SGD` (Nesterov),
`nfnet_sgd` against timm's own paper step as its `train.py --clip-mode agc`
runs it (`adaptive_clip_grad` 0.01 on all but the head, timm's Nesterov SGD
with weight decay 2e-5 off biases and gains, `ModelEmaV3`).  timm imports
torchvision; where no torchvision build matches the installed torch, put a
stand-in module on PYTHONPATH.  Ratios to the peer are reported from the same
run; with `--rounds N` every configuration runs N times, peer and ours
alternating, and the ratio is the median of the N same-round ratios (the
machine's speed drifts between rounds, not within a pair).  Each step is also
timed in process CPU seconds (`cpu_s_per_step`), steadier than wall time on a
shared machine.  TensorFlow runs with the pooling CPU allocator that train.py
turns on (`--tf_allocator bfc`); `--tf_allocator default,bfc` times both.

Examples (the RESULTS.md tables):

    python benchmarks/throughput.py --variant F0 --mode infer,train --backend tensorflow,jax --peer timm
    python benchmarks/throughput.py --variant F3 --mode train --image_size 256 --remat both --steps 3
    python benchmarks/throughput.py --variant nano --mode infer,train --batch_size 64
    python benchmarks/throughput.py --variant F0 --mode train --optimizer nfnet_sgd,sgd --peer timm --rounds 3 \
        --no-api_pass

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

import tf_allocator  # this folder's helper (a script's folder is on sys.path)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PRECISION_POLICIES = {"fp32": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}
MATMUL_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--variant", default="F0", help="a registered model name or NFNet-F variant (F0 ... F7+, nano, timm/eca_nfnet_l0)"
    )
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
    parser.add_argument(
        "--tf_allocator",
        default="bfc",
        help="comma list of TensorFlow CPU allocators: " + tf_allocator.HELP,
    )
    parser.add_argument("--peer", default="", help="comma list of peers to time in the same command: timm")
    parser.add_argument("--torch_compile", action="store_true", help="also time the peer under torch.compile")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run every configuration this many times, peer and ours alternating; ratios are same-round medians",
    )
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


def time_steps(step, warmup, steps, sync, cpu_times=None):
    """Wall seconds of each of `steps` steps after `warmup` untimed ones.

    With a list as `cpu_times`, the process CPU seconds (all threads) of each
    timed step are appended to it.
    """
    for _ in range(warmup):
        sync(step())
    times = []
    for _ in range(steps):
        start, cpu_start = time.perf_counter(), time.process_time()
        sync(step())
        times.append(time.perf_counter() - start)
        if cpu_times is not None:
            cpu_times.append(time.process_time() - cpu_start)
    return times


def peak_rss_mb():
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# --------------------------------------------------------------------------- keras worker


def compile_for_training(model, optimizer, jit_compile="auto"):
    """Compiles `model` with the benchmarks' training step (the `timm_worker` steps match it).

    Args:
        optimizer: `"nfnet_sgd"` (the paper's step: `NFNetSGD` with AGC 0.01,
            Nesterov momentum and EMA) or `"sgd"` (Keras' Nesterov SGD).
        jit_compile: as for `Model.compile`.
    """
    import keras  # noqa: PLC0415

    import nfnet_keras.training  # noqa: PLC0415

    if optimizer == "nfnet_sgd":
        optimizer = nfnet_keras.training.NFNetSGD(learning_rate=0.1, clipping=0.01, ema_decay=0.99999)
    else:
        optimizer = keras.optimizers.SGD(learning_rate=0.1, momentum=0.9, nesterov=True)
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1),
        jit_compile=jit_compile,
    )


def keras_worker(cfg):
    os.environ["KERAS_BACKEND"] = cfg["backend"]
    os.environ["NFNET_GROUPED_CONV"] = cfg["grouped_conv"]
    tf_allocator.select(cfg["tf_allocator"])
    import keras
    import numpy as np

    sys.path.insert(0, ROOT)
    import nfnet_keras
    from nfnet_keras.models.layers import ws_conv

    backend = keras.backend.backend()
    keras.mixed_precision.set_global_policy(PRECISION_POLICIES[cfg["precision"]])
    keras.utils.set_random_seed(0)
    size, batch = cfg["image_size"], cfg["batch_size"]

    start = time.perf_counter()
    model = nfnet_keras.create_model(
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
        compile_for_training(model, cfg["optimizer"], "auto" if cfg["jit"] is None else cfg["jit"])

        def step():
            return model.train_on_batch(x, y)

    def sync(out):
        # predict/train_on_batch return numpy values: the step has finished.
        return out

    cpu_times = []
    times = time_steps(step, cfg["warmup"], cfg["steps"], sync, cpu_times)
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
        "tf_allocator": cfg["tf_allocator"] if backend == "tensorflow" else None,
        "optimizer": cfg["optimizer"] if cfg["mode"] == "train" else None,
        "img_per_s": round(batch / step_s, 3),
        "ms_per_step": round(step_s * 1e3, 1),
        "step_times_s": [round(t, 4) for t in times],
        "cpu_s_per_step": round(median(cpu_times), 3),
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

#: What timm runs against each of our optimizers (the JSON `optimizer` of a timm row).
TIMM_STEPS = {
    "sgd": "torch SGD nesterov",
    "nfnet_sgd": "timm paper step: AGC 0.01 (not the head), SGD nesterov wd 2e-5, ModelEmaV3 0.99999",
}


def timm_paper_step_parts(model):
    """timm's paper step as its `train.py --clip-mode agc --clip-grad 0.01` builds it.

    Returns `(optimizer, clip, average)`: timm's `sgd` (Nesterov, momentum 0.9,
    weight decay 2e-5 on all but biases and other 1-D parameters), a function
    that runs `adaptive_clip_grad` at 0.01 on every parameter but the head's
    (`model_parameters(exclude_head=True)`, what train.py clips), and the
    `ModelEmaV3` at 0.99999 that train.py updates after each step.
    """
    from timm.models import model_parameters
    from timm.optim import create_optimizer_v2
    from timm.utils import dispatch_clip_grad
    from timm.utils.model_ema import ModelEmaV3

    optimizer = create_optimizer_v2(model, opt="sgd", lr=0.1, momentum=0.9, weight_decay=2e-5)
    clipped = list(model_parameters(model, exclude_head=True))

    def clip():
        dispatch_clip_grad(clipped, value=0.01, mode="agc")

    return optimizer, clip, ModelEmaV3(model, decay=0.99999)



def timm_worker(cfg):
    import numpy as np
    import torch
    import timm

    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count())
    device = "cuda" if torch.cuda.is_available() else "cpu"
    name = timm_name(cfg["variant"])
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
        paper = cfg["optimizer"] == "nfnet_sgd"
        scaler = torch.amp.GradScaler(device, enabled=amp_dtype == torch.float16)
        y = torch.arange(batch, device=device) % 1000
        if paper:
            optimizer, clip, average = timm_paper_step_parts(model)
        else:
            optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)

        def step():
            optimizer.zero_grad(set_to_none=True)
            with autocast():
                loss = torch.nn.functional.cross_entropy(model(x), y, label_smoothing=0.1)
            scaler.scale(loss).backward()
            if paper:
                scaler.unscale_(optimizer)
                clip()
            scaler.step(optimizer)
            scaler.update()
            if paper:
                average.update(model)
            return loss

    def sync(out):
        if device == "cuda":
            torch.cuda.synchronize()
        return out

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    cpu_times = []
    times = time_steps(step, cfg["warmup"], cfg["steps"], sync, cpu_times)
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
        "optimizer": TIMM_STEPS[cfg["optimizer"]] if cfg["mode"] == "train" else None,
        "variant": cfg["variant"],
        "mode": cfg["mode"],
        "image_size": size,
        "batch_size": batch,
        "precision": cfg["precision"],
        "jit": bool(cfg["torch_compile"]),
        "img_per_s": round(batch / step_s, 3),
        "ms_per_step": round(step_s * 1e3, 1),
        "step_times_s": [round(t, 4) for t in times],
        "cpu_s_per_step": round(median(cpu_times), 3),
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
    """The configurations of one round, each peer run just before the rows it is compared with."""
    import importlib

    sys.path.insert(0, ROOT)
    registry = importlib.import_module("nfnet_keras.models.registry")
    variant_config = registry.get_spec(args.variant).config  # raises for an unknown name
    modes = _split(args.mode, ("infer", "train"), "mode")
    backends = _split(args.backend, ("tensorflow", "jax"), "backend")
    precisions = _split(args.precision, tuple(PRECISION_POLICIES), "precision")
    peers = _split(args.peer, ("timm",), "peer") if args.peer else []
    remats = {"off": [False], "on": [True], "both": [False, True]}[args.remat]
    optimizers = _split(args.optimizer, ("nfnet_sgd", "sgd"), "optimizer")
    allocators = _split(args.tf_allocator, tf_allocator.CHOICES, "tf_allocator")
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
            for optimizer in optimizers if mode == "train" else optimizers[:1]:
                for peer in peers:
                    for compiled in (False, True) if args.torch_compile else (False,):
                        yield {**common, "kind": peer, "torch_compile": compiled, "optimizer": optimizer}
                for backend in backends:
                    for remat in remats if mode == "train" else [False]:
                        for allocator in allocators if backend == "tensorflow" else allocators[:1]:
                            yield {**common, "kind": "keras", "backend": backend, "jit": args.jit, "remat": remat,
                                   "grouped_conv": args.grouped_conv, "optimizer": optimizer,
                                   "tf_allocator": allocator, "api_pass": args.api_pass}


def _row_key(r):
    """What identifies a configuration across rounds."""
    return (r["impl"], r["mode"], r["image_size"], r["precision"], r["jit"], r.get("remat"), r.get("tf_allocator"),
            r.get("optimizer"))


def _peer_key(r):
    """What a row is compared on: the same work, with our optimizer name for a training step."""
    return (r["mode"], r["image_size"], r["precision"], r.get("step") if r["mode"] == "train" else None)


def summarise(results):
    """One row per configuration: median img/s over rounds, and the median same-round ratio to the peer.

    Returns a list of dicts (the first round's row, with `img_per_s`,
    `ms_per_step`, `cpu_s_per_step`, `gmac_per_s` and `utilisation` replaced by
    medians over rounds, `rounds`, and `vs_peer`, the median over rounds of
    img/s divided by the fastest peer run of the same step in the same round).
    """
    ok = [r for r in results if "error" not in r]
    best_peer = {}
    for r in ok:
        if r["impl"].startswith("timm"):
            key = (r["round"],) + _peer_key(r)
            best_peer[key] = max(best_peer.get(key, 0.0), r["img_per_s"])
    groups = {}
    for r in ok:
        groups.setdefault(_row_key(r), []).append(r)
    rows = []
    for runs in groups.values():
        row = dict(runs[0])
        for field in ("img_per_s", "ms_per_step", "cpu_s_per_step", "gmac_per_s", "utilisation"):
            values = [r[field] for r in runs if r.get(field) is not None]
            row[field] = median(values) if values else None
        row["rounds"] = len(runs)
        ratios = [r["img_per_s"] / best_peer[(r["round"],) + _peer_key(r)] for r in runs
                  if not r["impl"].startswith("timm") and best_peer.get((r["round"],) + _peer_key(r))]
        row["vs_peer"] = round(median(ratios), 3) if ratios else None
        rows.append(row)
    return rows


def print_table(results):
    header = ("impl", "mode", "px", "batch", "prec", "jit", "remat", "tf alloc", "optimizer", "img/s", "fit/predict img/s",
              "ms/step", "CPU s/step", "GMAC/s", "matmul GFLOP/s", "util", "peak MB", "rounds", "vs peer")
    rows = []
    for r in results:
        if "error" in r:
            rows.append((r.get("kind", "?") + "/" + r.get("backend", ""), r["mode"], "", "", "", "", "", "", "error"))
    for r in summarise(results):
        peak = r.get("peak_device_mb") or r.get("peak_host_rss_mb")
        api = r.get("predict_img_per_s") or r.get("fit_img_per_s")
        cpu = r.get("cpu_s_per_step")
        rows.append((r["impl"], r["mode"], r["image_size"], r["batch_size"], r["precision"], r["jit"],
                     r.get("remat", ""), r.get("tf_allocator") or "", r.get("step") or "", f"{r['img_per_s']:.2f}",
                     f"{api:.2f}" if api else "", f"{r['ms_per_step']:.0f}", f"{cpu:.2f}" if cpu else "",
                     f"{r['gmac_per_s']:.1f}", f"{r['matmul_gflop_per_s']:.0f}", f"{r['utilisation']:.2f}",
                     f"{peak:.0f}" if peak else "", r["rounds"], f"{r['vs_peer']:.2f}x" if r["vs_peer"] else ""))
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
    if args.rounds < 1:
        raise SystemExit(f"--rounds must be >= 1, got {args.rounds}")
    results = []
    fwd_gmac = {}
    for round_index in range(args.rounds):
        for cfg in configurations(args):
            if cfg["kind"] != "keras":
                cfg["fwd_gmac_per_image"] = fwd_gmac.get(cfg["image_size"]) or _count_fwd_gmac(cfg)
                fwd_gmac[cfg["image_size"]] = cfg["fwd_gmac_per_image"]
            result = run_worker(cfg)
            if "fwd_gmac_per_image" in result and cfg["kind"] == "keras":
                fwd_gmac[cfg["image_size"]] = result["fwd_gmac_per_image"]
            # Which of our optimizers the step is (timm rows name their own recipe in "optimizer").
            result["step"] = cfg["optimizer"] if cfg["mode"] == "train" else None
            result["round"] = round_index
            print(json.dumps(result), flush=True)
            if args.json_out:
                with open(args.json_out, "a") as f:
                    f.write(json.dumps(result) + "\n")
            results.append(result)
    print()
    print_table(results)
    return 1 if any("error" in r for r in results) else 0


def timm_name(variant):
    """timm's name for a registry name or NFNet-F variant: `timm/eca_nfnet_l0` -> `eca_nfnet_l0`, `F0` -> `dm_nfnet_f0`."""
    if variant.startswith("timm/"):
        return variant.removeprefix("timm/")
    return f"dm_nfnet_{variant.lower().replace('+', '').removeprefix('nfnet_')}"


def _count_fwd_gmac(cfg):
    """Forward GMACs per image for a peer run before any Keras result to take them from."""
    code = (
        "import nfnet_keras; "
        f"m = nfnet_keras.create_model({cfg['variant']!r}, input_shape=({cfg['image_size']}, {cfg['image_size']}, 3)); "
        f"print(nfnet_keras.models.count_macs(m, {cfg['image_size']}) / 1e9)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    return round(float(out.stdout.strip().splitlines()[-1]), 6)


if __name__ == "__main__":
    sys.exit(main())
