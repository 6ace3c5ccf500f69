"""The prepared accelerator check: one command, one JSON file (issue 14, item 5).

    KERAS_BACKEND=jax python benchmarks/device_check.py --out $OUT/device_check.json

It measures, on whatever accelerator JAX and PyTorch see (the lent H200; a CPU
with `--smoke`):

1. `environment`: Python, JAX, Keras, PyTorch and timm versions, the devices,
   and the measured bf16 matmul rate (an n^3 product, median of 5 repeats of
   10 back-to-back products), the ceiling utilisation is taken against.
2. `golden_f0`: our NFNet-F0 with DeepMind-layout golden parameters
   (`tests/support/golden.py`) at `jax_default_matmul_precision="highest"`,
   against DeepMind's logits: max abs error and relative error
   (max abs / max |expected|) on the 256 px and 225 px golden images.
3. `train_f0`: the paper's step (`NFNetSGD`: AGC 0.01, coupled weight decay
   2e-5, Nesterov, EMA; label smoothing 0.1) through `NFNetTrainer`, jitted as
   train.py compiles it, `train_on_batch` on tensors in device memory,
   `mixed_bfloat16`, 192 px, at the first batch of `--batches` that fits:
   median step time after warm-up, images/s, peak device memory, and
   utilisation = 6 x forward MACs x batch / step time / matmul rate (MACs of
   `count_macs`, DeepMind's convention; timm's rows use our count of the same
   architecture).
4. `train_f0_timm`: timm's `dm_nfnet_f0` with the step of
   ../shared/bench/peer_timm.py's `train_agc_ema` (SGD with decay,
   `adaptive_clip_grad` 0.01 on all but the classifier, `ModelEmaV3`) under
   AMP bf16, at the batch of section 3: NCHW and channels-last, eager and
   `torch.compile` (each compile within `--compile_budget`).
5. `train_eca_nfnet_l0` and `train_eca_nfnet_l0_timm`: the same for
   `timm/eca_nfnet_l0` against timm's `eca_nfnet_l0` (eager, channels-last).

Every measurement runs in its own child process: JAX and PyTorch never share
the device's memory, each peak is the child's own, an out-of-memory batch is
retried lower in a fresh process, and a child past its time is killed. The
JSON is rewritten after every section, so a run stopped from outside still
leaves what it measured; a section that fails records its error text and the
run goes on; sections not reached within `--time_budget` are recorded as
skipped. Order of work: 1, 2, 3, 4 eager, 4 compiled channels-last, 5, then 4
compiled NCHW (by the section times measured on the H200 on 2026-12-04,
everything but that last row needs about 455 s; benchmarks/RESULTS.md).

On the lent machine (no TensorFlow, no Keras; Keras travels as wheels, see
../shared/device/README.md):

    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && \\
    export PYTHONPATH=/tmp/site:$PWD KERAS_BACKEND=jax && \\
    python3 benchmarks/device_check.py --out $OUT/device_check.json

`--smoke` (batch 2, 64 px, one timed step, small matmul, no torch.compile)
checks the whole run on a CPU in a few minutes. Not a test: timings depend on
the machine.
"""

import argparse
import datetime
import gc
import importlib.util
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(ROOT, "tests")
RESULT = "RESULT "

OURS = {"f0": "nfnet_f0", "l0": "timm/eca_nfnet_l0"}
TIMM = {"f0": "dm_nfnet_f0", "l0": "eca_nfnet_l0"}
#: Sections in the order they appear in the JSON file.
SECTIONS = (
    "environment",
    "golden_f0",
    "train_f0",
    "train_f0_timm",
    "train_eca_nfnet_l0",
    "train_eca_nfnet_l0_timm",
)
#: Sections start only with at least this many seconds of the budget left.
MIN_SECTION_S = 15
SMOKE = {"batches": "2", "image_size": 64, "steps": 1, "warmup": 1, "matmul_size": 256}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="the JSON file to write (rewritten after every section)")
    parser.add_argument("--smoke", action="store_true", help="CPU check of the whole run: " + json.dumps(SMOKE))
    parser.add_argument("--time_budget", type=float, default=470.0,
                        help="seconds for the whole run (470: the issue's 8 minutes, less the install)")
    parser.add_argument("--compile_budget", type=float, default=150.0,
                        help="seconds for each torch.compile row, compilation included (150)")
    # 512: about 55 GB for F0 at 192 px by XLA's memory analysis of the step on a CPU (108 MB an
    # image), some 40 % of an H200; a batch that does not fit costs a compilation.
    parser.add_argument("--batches", default="512,256,128",
                        help="batches tried in turn until one fits, for each of our models (512,256,128)")
    parser.add_argument("--image_size", type=int, default=192, help="training image size (192, F0's train size)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps, median reported (10)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first, the first compiles (2)")
    parser.add_argument("--matmul_size", type=int, default=8192, help="n of the n^3 bf16 matmul (8192)")
    parser.add_argument("--sections", default=",".join(SECTIONS), help="comma list of sections to run (all)")
    parser.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.smoke:
        for key, value in SMOKE.items():
            setattr(args, key, value)
    args.batches = [int(b) for b in str(args.batches).split(",") if b.strip()]
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = sorted(set(args.sections) - set(SECTIONS))
    if unknown or not args.batches:
        parser.error(f"unknown sections {unknown}" if unknown else "--batches is empty")
    return args


def median(values):
    values = sorted(values)
    n = len(values)
    return values[n // 2] if n % 2 else 0.5 * (values[n // 2 - 1] + values[n // 2])


def time_steps(step, warmup, steps):
    """`step` returns once the device has finished; returns (first call s, timed step s list)."""
    first = None
    for _ in range(warmup):
        start = time.perf_counter()
        step()
        first = time.perf_counter() - start if first is None else first
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return first, times


def timing_fields(batch, first_s, times):
    step_s = median(times)
    return {
        "batch": batch,
        "first_step_s": round(first_s, 2) if first_s is not None else None,
        "step_times_s": [round(t, 5) for t in times],
        "ms_per_step": round(step_s * 1e3, 2),
        "img_per_s": round(batch / step_s, 2),
    }


def is_out_of_memory(error):
    text = f"{type(error).__name__}: {error}"
    return any(s in text for s in ("RESOURCE_EXHAUSTED", "Out of memory", "out of memory", "OutOfMemoryError"))


def error_text(error):
    """The exception and the last lines of its traceback, short enough for a JSON field."""
    lines = traceback.format_exception(type(error), error, error.__traceback__)
    return "".join(lines)[-3000:]


def emit(payload):
    print(RESULT + json.dumps(payload), flush=True)


# --------------------------------------------------------------------------- children


def child_environment(cfg):
    """Versions, devices, the bf16 matmul rate and the models' forward MACs."""
    import importlib.metadata

    import jax
    import jax.numpy as jnp

    out = {"python": platform.python_version(), "versions": {}}
    for package in ("jax", "jaxlib", "keras", "numpy", "torch", "timm"):
        try:
            out["versions"][package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            out["versions"][package] = None
    out["devices"] = [f"{d.platform}:{getattr(d, 'device_kind', '')}" for d in jax.devices()]
    n = cfg["matmul_size"]
    keys = jax.random.split(jax.random.key(0), 2)
    a, b = (jax.random.normal(k, (n, n), jnp.bfloat16) for k in keys)
    product = jax.jit(jnp.dot)

    def ten_products():
        jax.block_until_ready([product(a, b) for _ in range(10)])

    _, times = time_steps(ten_products, 2, 5)
    out["matmul"] = {"n": n, "dtype": "bfloat16", "repeats": 5, "products_per_repeat": 10}
    out["matmul_bf16_tflops"] = round(2.0 * n**3 * 10 / median(times) / 1e12, 3)
    try:
        out["matmul_bf16_tflops_torch"] = torch_matmul_tflops(n)
    except Exception as error:  # JAX's rate is the one utilisation needs
        out["matmul_bf16_tflops_torch"] = "error: " + error_text(error)
    out["tensorflow_loaded"] = "tensorflow" in sys.modules
    emit(out)


def torch_matmul_tflops(n):
    """PyTorch's bf16 rate on the same device (timm's ceiling), or why there is none."""
    if importlib.util.find_spec("torch") is None:
        return "skipped: torch not importable"
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    a, b = (torch.randn(n, n, device=device, dtype=torch.bfloat16) for _ in range(2))

    def ten_products():
        for _ in range(10):
            a @ b
        if device == "cuda":
            torch.cuda.synchronize()

    _, times = time_steps(ten_products, 2, 5)
    return round(2.0 * n**3 * 10 / median(times) / 1e12, 3)


def child_golden(cfg):
    """Our F0 on DeepMind's golden parameters at highest matmul precision."""
    import jax

    jax.config.update("jax_default_matmul_precision", "highest")
    import keras
    import numpy as np

    sys.path[:0] = [ROOT, TESTS]
    import nfnet_keras
    from support.golden import F0, golden_outputs, relative_error, write_golden_checkpoint

    ref = golden_outputs(F0)
    out = {"matmul_precision": "highest", "backend": keras.backend.backend(), "device": str(jax.devices()[0])}
    with tempfile.TemporaryDirectory() as tmp:
        path = write_golden_checkpoint(os.path.join(tmp, "golden_f0.pkl"), model=F0)
        model = nfnet_keras.create_model(F0, weights=path, input_shape=(None, None, 3), classifier_activation=None)
    for key, images in (("logits", "x"), ("logits_odd", "x_odd")):
        start = time.perf_counter()
        logits = np.asarray(model.predict_on_batch(ref[images]), np.float64)
        out[key] = {
            "input_shape": list(ref[images].shape),
            "max_abs_error": float(np.max(np.abs(logits - ref[key]))),
            "rel_error": relative_error(logits, ref[key]),
            "max_abs_expected": float(np.max(np.abs(ref[key]))),
            "s": round(time.perf_counter() - start, 2),
        }
    out["tensorflow_loaded"] = "tensorflow" in sys.modules
    emit(out)


def child_keras_train(cfg):
    """One batch of the paper's step on our JAX path; prints `oom` instead of a row if it does not fit."""
    import jax
    import keras
    import numpy as np

    sys.path.insert(0, ROOT)
    import nfnet_keras
    from nfnet_keras.models import count_macs
    from nfnet_keras.training import NFNetCrossEntropy, NFNetSGD, NFNetTrainer

    keras.config.set_dtype_policy("mixed_bfloat16")
    keras.utils.set_random_seed(0)
    size, batch = cfg["image_size"], cfg["batch"]
    row = {"impl": "nfnet_keras-jax", "model": cfg["model"], "image_size": size, "precision": "mixed_bfloat16",
           "step": "NFNetTrainer + NFNetSGD(AGC 0.01, decay 2e-5, Nesterov, EMA 0.99999), label smoothing 0.1",
           "regularisation": "registry defaults", "api": "train_on_batch", "jit": True}
    try:
        model = nfnet_keras.create_model(cfg["model"], input_shape=(size, size, 3), classifier_activation=None)
        trainer = NFNetTrainer(model)
        trainer.compile(
            optimizer=NFNetSGD(learning_rate=0.1, weight_decay=2e-5, clipping=0.01, ema_decay=0.99999),
            loss=NFNetCrossEntropy(label_smoothing=0.1),
            metrics=["accuracy"],
            jit_compile=True,
        )
        classes = model.output_shape[-1]
        rng = np.random.default_rng(0)
        x = keras.ops.convert_to_tensor(rng.normal(size=(batch, size, size, 3)).astype("float32"))
        y = keras.ops.convert_to_tensor(np.eye(classes, dtype="float32")[np.arange(batch) % classes])

        def step():
            trainer.train_on_batch(x, y)  # returns numpy logs: the step has finished

        first, times = time_steps(step, cfg["warmup"], cfg["steps"])
    except Exception as error:
        # An out-of-memory batch is retried lower by the parent, in a fresh process.
        if is_out_of_memory(error):
            emit({"oom": True, "batch": batch, "error": str(error)[:500]})
            return
        raise
    device = jax.devices()[0]
    stats = (device.memory_stats() if device.platform != "cpu" else None) or {}
    row.update(timing_fields(batch, first, times))
    row["peak_device_mb"] = round(stats["peak_bytes_in_use"] / 2**20) if "peak_bytes_in_use" in stats else None
    row["device"] = f"{device.platform}:{getattr(device, 'device_kind', '')}"
    row["params"] = int(model.count_params())
    row["fwd_gmac_per_image"] = round(count_macs(model, size) / 1e9, 6)
    row["tensorflow_loaded"] = "tensorflow" in sys.modules
    emit(row)


def child_timm_train(cfg):
    """timm's AMP bf16 paper step, one row per variant (layout, compile); lower batches on OOM."""
    try:
        import timm
        import torch
        from timm.utils.agc import adaptive_clip_grad
        from timm.utils.model_ema import ModelEmaV3
    except ImportError as error:
        emit({"skipped": f"skipped: timm not importable ({type(error).__name__}: {error})"})
        return
    torch.backends.cudnn.benchmark = True  # as timm's train.py
    device = "cuda" if torch.cuda.is_available() else "cpu"
    size = cfg["image_size"]

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    def measure(channels_last, compiled, batch):
        torch.manual_seed(0)
        model = timm.create_model(cfg["model"], pretrained=False).to(device)
        x = torch.randn(batch, 3, size, size, device=device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        model.train()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=2e-5)
        ema = ModelEmaV3(model, decay=0.99999)
        clipped = [p for n, p in model.named_parameters() if not n.startswith("head.fc")]
        forward = torch.compile(model) if compiled else model
        y = torch.arange(batch, device=device) % 1000
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()

        def step():
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device_type=device, dtype=torch.bfloat16):
                loss = torch.nn.functional.cross_entropy(forward(x), y, label_smoothing=0.1)
            loss.backward()
            adaptive_clip_grad(clipped, clip_factor=0.01, eps=1e-3)
            optimizer.step()
            ema.update(model)
            sync()

        first, times = time_steps(step, cfg["warmup"], cfg["steps"])
        return first, times, torch.cuda.max_memory_allocated() if device == "cuda" else None

    def release():
        # The last model, its optimizer and EMA are garbage once `measure` has returned or raised.
        gc.collect()
        if device == "cuda":
            torch.cuda.empty_cache()

    for variant in cfg["variants"]:
        row = {**timm_row_name(variant), "model": cfg["model"], "image_size": size, "precision": "amp_bfloat16",
               "step": "SGD(Nesterov, decay 2e-5) + adaptive_clip_grad 0.01 + ModelEmaV3 0.99999, "
                       "label smoothing 0.1 (peer_timm.py train_agc_ema)",
               "regularisation": "timm defaults", "attempts": []}
        try:
            for batch in cfg["batches"]:
                measured = None
                try:
                    measured = measure(variant["channels_last"], variant["compile"], batch)
                except Exception as error:
                    if not is_out_of_memory(error):
                        raise
                release()
                if measured is None:
                    row["attempts"].append({"batch": batch, "error": "out of memory"})
                    continue
                first, times, peak = measured
                row.update(timing_fields(batch, first, times))
                row["peak_device_mb"] = round(peak / 2**20) if peak is not None else None
                break
            else:
                row["error"] = "out of memory at every batch"
        except Exception as error:  # the next variant still runs
            row["error"] = error_text(error)
        row["device"] = torch.cuda.get_device_name() if device == "cuda" else "cpu"
        row["versions"] = {"torch": torch.__version__, "timm": timm.__version__}
        emit(row)


def timm_row_name(variant):
    """`impl` and `layout` of a timm row from its variant `{"channels_last": bool, "compile": bool}`."""
    return {"impl": "timm-torch-" + ("compile" if variant["compile"] else "eager"),
            "layout": "channels_last" if variant["channels_last"] else "nchw"}


CHILDREN = {
    "environment": child_environment,
    "golden": child_golden,
    "keras_train": child_keras_train,
    "timm_train": child_timm_train,
}


def run_child(cfg):
    """Runs `cfg` in a fresh interpreter; prints `RESULT` lines, or one with the error text."""
    try:
        CHILDREN[cfg["kind"]](cfg)
    except Exception as error:  # reported to the parent, which goes on
        emit({"error": error_text(error)})


# --------------------------------------------------------------------------- parent


class Check:
    """The run: its deadline, the JSON document, and the children it starts."""

    def __init__(self, args):
        self.args = args
        self.start = time.monotonic()
        self.deadline = self.start + args.time_budget
        self.doc = {
            "meta": {
                "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
                "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "smoke": args.smoke,
                "time_budget_s": args.time_budget,
                "compile_budget_s": args.compile_budget,
                "batches": args.batches,
                "image_size": args.image_size,
                "steps": args.steps,
                "warmup": args.warmup,
                "host": platform.node(),
                "finished": False,
            },
        }
        for name in SECTIONS:
            self.doc[name] = {"status": "pending" if name in args.sections else "skipped: not asked for"}
        self.write()

    def left(self):
        return self.deadline - time.monotonic()

    def write(self):
        self.doc["meta"]["elapsed_s"] = round(time.monotonic() - self.start, 1)
        directory = os.path.dirname(os.path.abspath(self.args.out))
        os.makedirs(directory, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=directory, delete=False, suffix=".tmp") as handle:
            json.dump(self.doc, handle, indent=1)
        os.replace(handle.name, self.args.out)

    def child(self, cfg, limit=None):
        """Runs one child; returns (its RESULT payloads, None or why it gave none, wall s)."""
        timeout = self.left() if limit is None else min(limit, self.left())
        if timeout < (1 if self.args.smoke else MIN_SECTION_S):
            return [], "skipped: budget", 0.0
        env = dict(os.environ, KERAS_BACKEND="jax", PYTHONUNBUFFERED="1")
        if cfg["kind"] != "timm_train":
            # A JAX child holds the device alone: let it fill the memory.
            env.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.92")
        cmd = [sys.executable, os.path.abspath(__file__), "--out", self.args.out, "--_child", json.dumps(cfg)]
        start = time.monotonic()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, start_new_session=True)
        why = None
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            # The child's own process group: torch.compile's workers go with it.
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:  # it ended meanwhile
                pass
            stdout, stderr = proc.communicate()
            why = f"skipped: budget (stopped after {timeout:.0f} s)"
        wall = time.monotonic() - start
        payloads = [json.loads(line[len(RESULT):]) for line in stdout.splitlines() if line.startswith(RESULT)]
        if why is None and not payloads:
            why = f"error: child exited {proc.returncode}: {stderr.strip()[-3000:]}"
        return payloads, why, wall

    def section(self, name, body):
        """Runs `body()` -> dict for section `name`, recording its error text or skip; rewrites the file."""
        if self.doc[name]["status"] != "pending":
            return
        start = time.monotonic()
        try:
            self.doc[name] = {"status": "ok", **body()}
        except SectionSkipped as skipped:
            self.doc[name] = {"status": str(skipped)}
        except Exception as error:  # the other sections still run
            self.doc[name] = {"status": "error", "error": error_text(error)}
        self.doc[name]["section_s"] = round(time.monotonic() - start, 1)
        self.write()

    def one_result(self, cfg):
        payloads, why, wall = self.child(cfg)
        if why is not None:
            raise SectionSkipped(why) if why.startswith("skipped") else RuntimeError(why)
        result = payloads[-1]
        if "error" in result:
            raise RuntimeError(result["error"])
        return {**result, "child_s": round(wall, 1)}

    def environment(self):
        return self.one_result({"kind": "environment", "matmul_size": self.args.matmul_size,
                                "image_size": self.args.image_size})

    def golden(self):
        return self.one_result({"kind": "golden"})

    def keras_train(self, key):
        """Our paper step for model `key`, at the first batch of `--batches` that fits."""
        attempts = []
        for batch in self.args.batches:
            row = self.one_result({"kind": "keras_train", "model": OURS[key], "batch": batch,
                                   "image_size": self.args.image_size, "steps": self.args.steps,
                                   "warmup": self.args.warmup})
            if row.get("oom"):
                attempts.append({"batch": batch, "error": row["error"]})
                continue
            row["attempts"] = attempts
            self.add_utilisation(row, row["fwd_gmac_per_image"])
            return {"row": row}
        raise RuntimeError(f"out of memory at every batch: {attempts}")

    def timm_train(self, key, variants, rows=None):
        """timm's rows for model `key` at the batch our row used (lower only if it does not fit)."""
        if importlib.util.find_spec("torch") is None:
            raise SectionSkipped("skipped: torch not importable")
        ours = self.doc["train_f0" if key == "f0" else "train_eca_nfnet_l0"].get("row", {})
        first = ours.get("batch", self.args.batches[0])
        batches = [first] + [b for b in self.args.batches if b < first]
        rows = list(rows or [])
        for variant in variants:
            cfg = {"kind": "timm_train", "model": TIMM[key], "variants": [variant], "batches": batches,
                   "image_size": self.args.image_size, "steps": self.args.steps, "warmup": self.args.warmup}
            payloads, why, wall = self.child(cfg, self.args.compile_budget if variant["compile"] else None)
            payload = payloads[-1] if payloads else {}
            if "skipped" in payload:
                raise SectionSkipped(payload["skipped"])
            if not payload or "error" in payload and "impl" not in payload:
                payload = {**timm_row_name(variant), "status": why or "error", "error": payload.get("error")}
            else:
                payload["status"] = "error" if "error" in payload else "ok"
                payload["child_s"] = round(wall, 1)
                # The same architecture: our count of its MACs.
                self.add_utilisation(payload, ours.get("fwd_gmac_per_image"))
            rows.append(payload)
            self.write()
        return {"batch_of_ours": ours.get("batch"), "rows": rows}

    def add_utilisation(self, row, gmac):
        """6 x forward MACs per image x images/s, over the measured bf16 matmul rate."""
        rate = self.doc["environment"].get("matmul_bf16_tflops")
        if gmac is None or "img_per_s" not in row:
            return
        achieved = 6 * gmac * 1e9 * row["img_per_s"] / 1e12
        row["fwd_gmac_per_image"] = gmac
        row["achieved_tflops"] = round(achieved, 3)
        row["utilisation"] = round(achieved / rate, 4) if isinstance(rate, (int, float)) and rate > 0 else None

    def run(self):
        eager = [{"channels_last": False, "compile": False}, {"channels_last": True, "compile": False}]
        compiled = [{"channels_last": True, "compile": True}, {"channels_last": False, "compile": True}]
        self.section("environment", self.environment)
        self.section("golden_f0", self.golden)
        self.section("train_f0", lambda: self.keras_train("f0"))
        if self.doc["train_f0_timm"]["status"] == "pending":
            # timm's fastest form (compiled, channels-last) before L0; compiled NCHW, the slowest
            # row to get and the least telling beside eager NCHW, last, with what is left.
            variants = eager if self.args.smoke else eager + compiled[:1]
            self.section("train_f0_timm", lambda: self.timm_train("f0", variants))
            timm_f0 = self.doc["train_f0_timm"]
            if self.args.smoke and timm_f0["status"] == "ok":
                timm_f0["rows"].extend({**timm_row_name(v), "status": "skipped: smoke"} for v in compiled)
                self.write()
            elif timm_f0["status"] == "ok":
                timm_f0["status"] = "pending"
        self.section("train_eca_nfnet_l0", lambda: self.keras_train("l0"))
        self.section("train_eca_nfnet_l0_timm", lambda: self.timm_train("l0", eager[1:]))
        self.section("train_f0_timm",
                     lambda: self.timm_train("f0", compiled[1:], self.doc["train_f0_timm"].get("rows")))
        for name in SECTIONS:
            if self.doc[name]["status"] == "pending":
                self.doc[name]["status"] = "skipped: budget"
        self.doc["meta"]["finished"] = True
        self.write()
        return self.doc


class SectionSkipped(Exception):
    """A section that did not run: its message is the recorded status."""


def main(argv=None):
    args = parse_args(argv)
    if args._child:
        run_child(json.loads(args._child))
        return 0
    doc = Check(args).run()
    for name in SECTIONS:
        print(f"{name}: {doc[name]['status']}")
    print(f"wrote {args.out} in {doc['meta']['elapsed_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
