"""int8 TFLite on this CPU: `int8` and `int8_full` against `fp32`, speed and top-1 agreement.

Exports a trained model with `export.py --tflite fp32,int8,int8_full` (once per
`--representative_counts` value: the `int8_full` calibration images), then, in
one process:

* agreement: every file's top-1 on the bundled CIFAR-10 test split (all 1,000
  images, the evaluation transform of the model) against the `fp32` file's,
  which `export.py`'s parity table shows agrees with the Keras model on all of
  them (its table is printed too). A disagreement where the file's two largest
  outputs are equal (an int8 output has 256 levels) is counted as a tie;
  disagreements are also counted by how close fp32's top two classes are (its
  logit margin). The row "fp32, int8 output" is fp32's probabilities rounded
  to `int8_full`'s output levels alone: the agreement that file's output
  resolution allows (with the number of images whose fp32 top two are
  closer than one level). With `--nearest` (the default) the same for `int8` and
  `int8_full` converted from the exported SavedModel, whose kernels the
  converter rounds to the nearest int8 level: the comparison for
  `export.py`'s own files, whose kernels are on that grid with their sums kept
  (`nfnet_keras.export.int8_weights`).
* speed: the LiteRT interpreter (`ai_edge_litert`) at each batch size and
  thread count, every flavour timed in turn within each round (fp32, int8,
  int8_full, fp32, ...) so that the machine's load falls on all alike; medians
  of milliseconds per `invoke()` and of the same-round ratios to `fp32`.

Examples (the RESULTS.md figures):

    python benchmarks/tflite_int8.py --model /tmp/work/default_run --output_dir /tmp/work/export_int8 \\
        --representative_counts 100 1000 5000 --json benchmarks/results/tflite_int8.jsonl
    # speed only, on a large model (random weights: agreement would say nothing)
    python -c "import nfnet_keras; nfnet_keras.NFNetF0(weights=None).save('/tmp/f0.keras')"
    python benchmarks/tflite_int8.py --model /tmp/f0.keras --output_dir /tmp/f0_int8 --no-agreement \\
        --representative_counts 32 --parity_count 8 --batches 1 --threads 2 --rounds 5 --seconds 2

Not a test: timings depend on the machine and its load.
"""

import argparse
import glob
import json
import os
import re
import statistics
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

FLAVOURS = ("fp32", "int8", "int8_full")
#: A parity-table row of `export.py`: artifact, input, max abs diff, top-1 agreement.
_PARITY_ROW = re.compile(r"^\| (TFLite \S+) \| [^|]+ \| (\S+) \| ([\d.]+) % \|$")


def export(model, output_dir, representative_count, parity_count, flavours=FLAVOURS):
    """Runs `export.py`; returns `({flavour: path}, {artifact: (max abs diff, agreement %)}, seconds)`."""
    start = time.perf_counter()
    command = [
        sys.executable, os.path.join(ROOT, "export.py"), "--model", model, "--export_dir", output_dir,
        "--tflite", ",".join(flavours), "--representative_count", str(representative_count),
        "--parity_count", str(parity_count), "--overwrite", "--version", "1",
    ]
    run = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if run.returncode:
        raise RuntimeError(f"export failed:\n{run.stdout[-2000:]}\n{run.stderr[-3000:]}")
    parity = {}
    for line in run.stdout.splitlines():
        match = _PARITY_ROW.match(line.strip())
        if match:
            parity[match.group(1)] = (float(match.group(2)), float(match.group(3)))
    files = {}
    for flavour in flavours:
        (path,) = glob.glob(os.path.join(output_dir, "*_tflite", "1", f"*_{flavour}.tflite"))
        files[flavour] = path
    return files, parity, time.perf_counter() - start


#: Edges of the buckets of the reference's top-1 logit margin, `log p1 - log p2`, for the disagreements.
MARGIN_EDGES = (0.0, 0.01, 0.03, 0.1, 0.3, np.inf)


def nearest_rounded(saved_model_dir, output_dir, pixels):
    """The export's int8 flavours converted from its own SavedModel: weights rounded to nearest (the comparison).

    `export.py` converts `int8` and `int8_full` from a copy whose kernels are on
    the int8 grid with their sums kept (`nfnet_keras.export.int8_weights`);
    the SavedModel it writes has the float kernels, which the converter rounds
    to the nearest level. `pixels`: the calibration images of `int8_full`.
    """
    from nfnet_keras.export import tflite  # noqa: PLC0415

    files = {}
    for flavour in tflite.INT8_FLAVOURS:
        path = os.path.join(output_dir, f"nearest_{flavour}.tflite")
        with open(path, "wb") as handle:
            handle.write(tflite.convert(saved_model_dir, flavour, pixels if flavour == "int8_full" else None))
        files[f"{flavour} (nearest)"] = path
    return files


#: The row of `reference`'s probabilities rounded to `int8_full`'s output levels and nothing else.
OUTPUT_ROUNDING = "fp32, int8 output"


def agreement(files, pixels, reference="fp32"):
    """Each file against `reference`: top-1 agreement, ties, errors, disagreements by the reference's margin.

    With an `int8_full` file, also the row `OUTPUT_ROUNDING`: the reference's
    own probabilities rounded to that file's output levels (256, scale 1/256),
    and nothing else. Two classes closer than a level tie there, so this is
    the agreement the file could reach if everything before its output were
    exact; the row also counts the images whose reference top two are closer
    than one level (`top_two_within_one_level`).
    """
    from nfnet_keras.export import tflite  # noqa: PLC0415

    outputs = {name: tflite.run(path, pixels, batch_size=50) for name, path in files.items()}
    top_two = np.sort(outputs[reference], -1)[:, -2:]
    within_one_level = None
    if "int8_full" in files:
        detail = tflite.load_interpreter(files["int8_full"]).get_output_details()[0]
        outputs[OUTPUT_ROUNDING] = tflite.dequantize(tflite.quantize(outputs[reference], detail), detail)
        within_one_level = int(np.sum(top_two[:, 1] - top_two[:, 0] < detail["quantization"][0]))
    truth = np.argmax(outputs[reference], -1)
    margin = np.log(top_two[:, 1]) - np.log(np.maximum(top_two[:, 0], 1e-30))
    buckets = list(zip(MARGIN_EDGES[:-1], MARGIN_EDGES[1:], strict=True))
    rows = {}
    for name, probabilities in outputs.items():
        top = np.argmax(probabilities, -1)
        ordered = np.sort(probabilities, -1)
        tied = ordered[:, -1] == ordered[:, -2]
        differ = top != truth
        error = probabilities - outputs[reference]
        rows[name] = {
            "agreement": float(np.mean(~differ)),
            "disagreements": int(differ.sum()),
            "of_which_ties": int((differ & tied).sum()),
            "max_abs_diff": float(np.max(np.abs(error))),
            "rms_diff": float(np.sqrt(np.mean(np.square(error)))),
            "disagreements_by_margin": [int(np.sum(differ & (margin >= lo) & (margin < hi))) for lo, hi in buckets],
            "images_by_margin": [int(np.sum((margin >= lo) & (margin < hi))) for lo, hi in buckets],
        }
    if within_one_level is not None:
        rows[OUTPUT_ROUNDING]["top_two_within_one_level"] = within_one_level
    return rows


def _interpreter(path, batch, threads, image_shape):
    from nfnet_keras.export import tflite  # noqa: PLC0415

    interpreter = tflite.load_interpreter(path, num_threads=threads)
    detail = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(detail["index"], [batch, *image_shape])
    interpreter.allocate_tensors()
    detail = interpreter.get_input_details()[0]
    data = np.random.default_rng(0).uniform(0, 255, (batch, *image_shape)).astype(np.float32)
    interpreter.set_tensor(detail["index"], tflite.quantize(data, detail))
    return interpreter


def time_invokes(interpreter, seconds):
    """Milliseconds per `invoke()`, invoking for about `seconds`."""
    interpreter.invoke()
    count, start = 0, time.perf_counter()
    while True:
        interpreter.invoke()
        count += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return 1e3 * elapsed / count


def speed(files, image_shape, batches, threads, rounds, seconds):
    """Interleaved timing; rows of medians (ms per invoke, images/s, same-round ratio to fp32)."""
    interpreters = {
        (name, b, t): _interpreter(path, b, t, image_shape)
        for name, path in files.items() for b in batches for t in threads
    }
    times = {key: [] for key in interpreters}
    for _ in range(rounds):
        for b in batches:
            for t in threads:
                for name in files:
                    times[(name, b, t)].append(time_invokes(interpreters[(name, b, t)], seconds))
    rows = []
    for (name, b, t), ms in times.items():
        ratios = [f / m for f, m in zip(times[("fp32", b, t)], ms, strict=True)]
        median = statistics.median(ms)
        rows.append({
            "flavour": name, "batch": b, "threads": t, "ms_per_invoke": median,
            "images_per_second": 1e3 * b / median, "speedup_vs_fp32": statistics.median(ratios), "runs_ms": ms,
        })
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description="int8 TFLite against fp32 on this CPU: speed and top-1 agreement.")
    parser.add_argument("--model", required=True, help="a train.py run directory or .keras file")
    parser.add_argument("--output_dir", required=True, help="export folder (one subfolder per calibration count)")
    parser.add_argument("--representative_counts", type=int, nargs="+", default=[100])
    parser.add_argument("--parity_count", type=int, default=1000)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=0.5, help="invoking time per flavour and round")
    parser.add_argument("--json", default=None, help="append the results as JSON lines here")
    parser.add_argument("--reuse", action="store_true", help="use the files of an earlier run in --output_dir")
    parser.add_argument("--agreement", action=argparse.BooleanOptionalAction, default=True,
                        help="top-1 agreement on the CIFAR-10 test images (--no-agreement: speed only)")
    parser.add_argument("--nearest", action=argparse.BooleanOptionalAction, default=True,
                        help="also agreement of the int8 flavours with weights rounded to nearest (the converter's "
                             "own rounding, from the exported SavedModel), for comparison")
    args = parser.parse_args(argv)

    from nfnet_keras.export import tflite  # noqa: PLC0415
    from nfnet_keras.models.loading import load_model  # noqa: PLC0415

    load_before = os.getloadavg()
    records = []
    files_first = None
    pixels = None
    for count in args.representative_counts:
        out = os.path.join(args.output_dir, f"calibration_{count}")
        flavours = FLAVOURS if files_first is None else ("fp32", "int8_full")
        if args.reuse and os.path.isdir(out):  # timing again: keep the files (no parity table then)
            files = {f: glob.glob(os.path.join(out, "*_tflite", "1", f"*_{f}.tflite"))[0] for f in flavours}
            parity, seconds = {}, 0.0
        else:
            files, parity, seconds = export(args.model, out, count, args.parity_count, flavours)
        if files_first is None:
            files_first = files
        details = tflite.describe(files["fp32"])
        size = details["inputs"][0]["shape_signature"][1]
        if not args.agreement:
            continue
        if pixels is None:  # the model's own evaluation transform of the parity images
            _, encoded = tflite.encoded_images(None, args.parity_count, split="test")
            preprocessing = load_model(args.model).model.preprocessing
            pixels = tflite.eval_pixels(encoded, preprocessing)
        compared = dict(files)
        if args.nearest:
            saved_model = glob.glob(os.path.join(out, "*", "1", "saved_model.pb"))[0]
            calibration = tflite.representative_pixels(preprocessing, count=count)
            compared.update(nearest_rounded(os.path.dirname(saved_model), out, calibration))
        rows = agreement(compared, pixels)
        print(f"calibration on {count} images (export {seconds:.0f} s); export.py parity vs Keras: {parity}")
        print(f"  disagreements by fp32's top-1 logit margin, buckets {MARGIN_EDGES}; images in each: "
              f"{rows['fp32']['images_by_margin']}")
        for name, row in rows.items():
            print(f"  {name:>19s}: top-1 agreement with fp32 {100 * row['agreement']:.1f} % "
                  f"({row['disagreements']} differ, {row['of_which_ties']} of them ties; by margin "
                  f"{row['disagreements_by_margin']}); |p - p_fp32| max {row['max_abs_diff']:.3g}, "
                  f"RMS {row['rms_diff']:.3g}")
            if "top_two_within_one_level" in row:
                print(f"  {'':>19s}  images whose fp32 top two are within one int8 output level: "
                      f"{row['top_two_within_one_level']}")
            records.append({"benchmark": "tflite_int8_agreement", "model": args.model,
                            "representative_count": count, "flavour": name,
                            "images": len(pixels), "image_size": int(size), **row,
                            "export_parity_vs_keras": parity.get(f"TFLite {name}")})

    image_shape = (size, size, 3)  # the calibration does not change the graph: time the first export's files
    rows = speed(files_first, image_shape, args.batches, args.threads, args.rounds, args.seconds)
    load_after = os.getloadavg()
    print(f"\nload average before {load_before}, after {load_after}")
    print("| flavour | batch | threads | ms / invoke (median) | images/s | speed-up vs fp32 (same-round median) |")
    print("|---|---|---|---|---|---|")
    for row in sorted(rows, key=lambda r: (r["batch"], r["threads"])):
        print(f"| {row['flavour']} | {row['batch']} | {row['threads']} | {row['ms_per_invoke']:.3f} | "
              f"{row['images_per_second']:.0f} | {row['speedup_vs_fp32']:.2f}x |")
        records.append({"benchmark": "tflite_int8_speed", **row})
    if args.json:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        with open(args.json, "a", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps({**record, "load_before": load_before, "load_after": load_after,
                                         "time": stamp}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
