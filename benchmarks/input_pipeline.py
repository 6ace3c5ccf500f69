"""Throughput of the NFNet `tf.data` input pipeline (images per second, and per core).

Builds the training pipeline (`nfnet_keras.data.make_train_dataset`: Inception
crop, flip, MixUp/CutMix, RandAugment) or, with `--eval`, the evaluation
pipeline (`make_eval_dataset`), or with `--plain` the plain decode-and-resize
pipeline (decode, bicubic resize to the size, normalise, batch), pulls
`--warmup` batches, then times `--batches` more. Batches stay tensors (no host
copy), so the figure is what the pipeline can feed `model.fit`.

`--compare` measures several pipelines on 1 and 2 cores: each measurement runs
in its own process pinned to the first N cores (`os.sched_setaffinity`, as
`taskset -c 0` / `taskset -c 0,1` would), in the order (A, B, ..., A, B, ...)
so that the load of the machine falls on all of them alike, and prints the
medians as a table and JSON lines (`--json` appends them to a file).
`--roots NAME=PATH ...` measures the same pipelines with the `nfnet_keras` of
other checkouts (e.g. before and after a change) in the same interleaved run.

Examples (the RESULTS.md figures):

    python benchmarks/input_pipeline.py
    python benchmarks/input_pipeline.py --source /work/shared/data/imagenette2_224 --image-size 224 --batch-size 64
    python benchmarks/input_pipeline.py --eval --image-size 32
    python benchmarks/input_pipeline.py --compare --source /work/shared/data/imagenette2_224 \\
        --sizes 192 224 --modes plain train --cores 1 2 --repeats 3 --json benchmarks/results/input_pipeline.jsonl
    python benchmarks/input_pipeline.py --compare --source /work/shared/data/imagenette2_224 --stages

Not a test: timings depend on the machine and its load.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

# The package of this checkout, also when it is not installed.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: What each `--modes` / `--stages` pipeline runs (keyword arguments of `make_train_dataset`).
MODES = {
    "plain": dict(randaugment=None, mixup_cutmix=False, random_crop=False, random_flip=False),
    "crop_flip": dict(randaugment=None, mixup_cutmix=False),
    "crop_flip_mix": dict(randaugment=None),
    "crop_flip_ra": dict(mixup_cutmix=False),
    "train": dict(),
}
#: The stage profile: each pipeline adds one stage to the one before.
STAGES = ("plain", "crop_flip", "crop_flip_mix", "train")


def _use_package(root):
    """Import `nfnet_keras` from `root` (this checkout by default)."""
    root = os.path.abspath(root or ROOT)
    if root not in sys.path:
        sys.path.insert(0, root)


def measure_throughput(dataset, num_batches=20, warmup_batches=3):
    """Times `num_batches` batches of `dataset` after `warmup_batches`.

    Returns:
        A dict: `images_per_second`, `batches_per_second`, `images`,
        `batches`, `seconds`, and `cpu_seconds` (all the process's threads)
        with `images_per_cpu_second`: the work per image, which the load of a
        shared machine changes much less than the wall time.
    """
    from nfnet_keras.checks import check_integer  # noqa: PLC0415

    num_batches = check_integer(num_batches, "num_batches")
    warmup_batches = check_integer(warmup_batches, "warmup_batches", minimum=0)
    iterator = iter(dataset)
    for _ in range(warmup_batches):
        next(iterator)
    images = 0
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(num_batches):
        batch = next(iterator)
        first = batch[0] if isinstance(batch, (tuple, list)) else batch
        images += int(first.shape[0])
    seconds = time.perf_counter() - start
    cpu_seconds = time.process_time() - cpu_start
    return {
        "images_per_second": images / seconds,
        "batches_per_second": num_batches / seconds,
        "images": images,
        "batches": num_batches,
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "images_per_cpu_second": images / cpu_seconds,
    }


def benchmark_input_pipeline(
    source=None,
    image_size=32,
    batch_size=64,
    randaugment=(4, 5),
    num_batches=20,
    warmup_batches=3,
    seed=0,
    train=True,
    **kwargs,
):
    """Builds a train (or eval) pipeline and times it with `measure_throughput`.

    Extra keyword arguments go to `make_train_dataset` / `make_eval_dataset`.
    The returned dict also has `setup_seconds` (source loading and
    verification, graph building).
    """
    from nfnet_keras.data import make_eval_dataset, make_train_dataset  # noqa: PLC0415

    start = time.perf_counter()
    if train:
        dataset = make_train_dataset(source, batch_size, image_size, randaugment=randaugment, seed=seed, **kwargs)
    else:
        dataset = make_eval_dataset(source, batch_size, image_size, **kwargs).repeat()
    setup = time.perf_counter() - start
    result = measure_throughput(dataset, num_batches=num_batches, warmup_batches=warmup_batches)
    result["setup_seconds"] = setup
    return result


def _measure_mode(spec):
    """One measurement of `spec` (a `--compare` child's job); returns its result dict."""
    _use_package(spec["root"])
    kwargs = dict(MODES[spec["mode"]])
    randaugment = kwargs.pop("randaugment", tuple(spec["randaugment"]))
    result = benchmark_input_pipeline(
        spec["source"], spec["image_size"], spec["batch_size"], randaugment, spec["batches"], spec["warmup"],
        verify=False, **kwargs,
    )
    return {**spec, **result}


def _child_command(spec):
    return [sys.executable, os.path.abspath(__file__), "--child", json.dumps(spec)]


def _run_child(spec):
    """Runs one measurement in a process pinned to the first `spec["cores"]` cores."""
    cores = set(range(int(spec["cores"])))
    run = subprocess.run(
        _child_command(spec), capture_output=True, text=True, timeout=1800,
        preexec_fn=lambda: os.sched_setaffinity(0, cores),
    )
    lines = [line for line in run.stdout.splitlines() if line.startswith("RESULT ")]
    if run.returncode or not lines:
        raise RuntimeError(f"measurement {spec} failed:\n{run.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def compare(specs, repeats, log=print):
    """Runs every spec `repeats` times, interleaved; returns `(rows of medians, all results)`."""
    results = []
    for round_index in range(repeats):
        for spec in specs:
            result = _run_child(spec)
            results.append(result)
            log(
                f"  round {round_index + 1}: {spec['label']:>8s} {spec['mode']:>13s} {spec['image_size']} px "
                f"{spec['cores']} core(s): {result['images_per_second']:7.1f} images/s, "
                f"{result['images_per_cpu_second']:7.1f} images per CPU second"
            )
    rows = []
    for spec in specs:
        mine = [r for r in results if all(r[k] == spec[k] for k in spec)]
        rate = statistics.median(r["images_per_second"] for r in mine)
        rows.append({
            **spec,
            "images_per_second": rate,
            "per_core": rate / spec["cores"],
            "images_per_cpu_second": statistics.median(r["images_per_cpu_second"] for r in mine),
            "runs": [r["images_per_second"] for r in mine],
        })
    return rows, results


def _format_table(rows):
    lines = [
        "| checkout | pipeline | size | cores | images/s (median) | per core | images per CPU second | runs (images/s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        runs = ", ".join(f"{r:.1f}" for r in row["runs"])
        lines.append(
            f"| {row['label']} | {row['mode']} | {row['image_size']} | {row['cores']} | "
            f"{row['images_per_second']:.1f} | {row['per_core']:.1f} | {row['images_per_cpu_second']:.1f} | {runs} |"
        )
    return lines


def _load_average():
    try:
        return os.getloadavg()
    except OSError:
        return None


def main(argv=None):
    parser = argparse.ArgumentParser(description="Measure the NFNet input pipeline's throughput.")
    parser.add_argument("--source", default=None, help="dataset (default: the bundled CIFAR-10 sample)")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--randaugment", type=int, nargs=2, default=(4, 5), metavar=("N", "M"))
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval", action="store_true", help="time the evaluation pipeline instead")
    parser.add_argument("--plain", action="store_true", help="time decode + bicubic resize + normalise only")
    parser.add_argument("--skip-corrupt", action="store_true")
    parser.add_argument("--compare", action="store_true", help="interleaved runs on 1 and 2 cores (module docstring)")
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="with --compare (default: --image-size)")
    parser.add_argument("--modes", nargs="+", choices=sorted(MODES), default=["plain", "train"])
    parser.add_argument("--stages", action="store_true", help=f"with --compare: --modes {' '.join(STAGES)}")
    parser.add_argument("--cores", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--roots", nargs="+", default=None, metavar="NAME=PATH",
                        help="with --compare: checkouts whose nfnet_keras to measure (default: this one)")
    parser.add_argument("--json", default=None, help="with --compare: append the medians as JSON lines here")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child is not None:  # one measurement of --compare, in its own pinned process
        print("RESULT " + json.dumps(_measure_mode(json.loads(args.child))), flush=True)
        return 0

    if args.compare:
        roots = [("this", ROOT)]
        if args.roots:
            roots = [tuple(item.split("=", 1)) for item in args.roots]
        modes = list(STAGES) if args.stages else args.modes
        specs = [
            dict(label=label, root=root, source=args.source, mode=mode, image_size=size, cores=cores,
                 batch_size=args.batch_size, randaugment=list(args.randaugment), batches=args.batches,
                 warmup=args.warmup)
            for size in (args.sizes or [args.image_size])
            for cores in args.cores
            for mode in modes
            for label, root in roots
        ]
        before = _load_average()
        rows, _ = compare(specs, args.repeats)
        after = _load_average()
        print(f"load average before {before}, after {after}")
        print("\n".join(_format_table(rows)))
        if args.json:
            with open(args.json, "a", encoding="utf-8") as handle:
                for row in rows:
                    record = {k: v for k, v in row.items() if k != "root"}
                    record.update(benchmark="input_pipeline", load_before=before, load_after=after,
                                  time=time.strftime("%Y-%m-%dT%H:%M:%S"))
                    handle.write(json.dumps(record) + "\n")
        return 0

    _use_package(None)
    from nfnet_keras.data.sources import BUNDLED_SAMPLE  # noqa: PLC0415

    kwargs = {"skip_corrupt": args.skip_corrupt}
    try:
        if args.eval:
            result = benchmark_input_pipeline(
                args.source, args.image_size, args.batch_size, None, args.batches, args.warmup, train=False, **kwargs
            )
        else:
            if args.plain:
                kwargs.update(MODES["plain"])
            result = benchmark_input_pipeline(
                args.source,
                args.image_size,
                args.batch_size,
                kwargs.pop("randaugment", tuple(args.randaugment)),
                args.batches,
                args.warmup,
                seed=args.seed,
                **kwargs,
            )
    except ValueError as err:  # bad flags or data (DatasetError is a ValueError): a message, not a traceback
        parser.error(str(err))
    kind = "eval" if args.eval else "plain" if args.plain else "train"
    print(
        f"{kind} pipeline, {args.source or BUNDLED_SAMPLE}, "
        f"{args.image_size} px, batch {args.batch_size}: {result['images_per_second']:.1f} images/s "
        f"({result['batches']} batches in {result['seconds']:.2f} s; setup {result['setup_seconds']:.2f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
