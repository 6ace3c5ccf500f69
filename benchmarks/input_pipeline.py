"""Throughput of the NFNet `tf.data` input pipeline (images per second).

Builds the training pipeline (`nfnet_keras.data.make_train_dataset`: Inception
crop, flip, MixUp/CutMix, RandAugment) or, with `--eval`, the evaluation
pipeline (`make_eval_dataset`), pulls `--warmup` batches, then times
`--batches` more. Batches stay tensors (no host copy), so the figure is what
the pipeline can feed `model.fit`.

Examples (the RESULTS.md figures):

    python benchmarks/input_pipeline.py
    python benchmarks/input_pipeline.py --source path/to/imagenette2_224 --image-size 192 --batch-size 32
    python benchmarks/input_pipeline.py --eval --image-size 32

Not a test: timings depend on the machine and its load.
"""

import argparse
import os
import sys
import time

# The package of this checkout, also when it is not installed.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from nfnet_keras.checks import check_integer
from nfnet_keras.data import make_eval_dataset, make_train_dataset
from nfnet_keras.data.sources import BUNDLED_SAMPLE


def measure_throughput(dataset, num_batches=20, warmup_batches=3):
    """Times `num_batches` batches of `dataset` after `warmup_batches`.

    Returns:
        A dict: `images_per_second`, `batches_per_second`, `images`,
        `batches`, `seconds`.
    """
    num_batches = check_integer(num_batches, "num_batches")
    warmup_batches = check_integer(warmup_batches, "warmup_batches", minimum=0)
    iterator = iter(dataset)
    for _ in range(warmup_batches):
        next(iterator)
    images = 0
    start = time.perf_counter()
    for _ in range(num_batches):
        batch = next(iterator)
        first = batch[0] if isinstance(batch, (tuple, list)) else batch
        images += int(first.shape[0])
    seconds = time.perf_counter() - start
    return {
        "images_per_second": images / seconds,
        "batches_per_second": num_batches / seconds,
        "images": images,
        "batches": num_batches,
        "seconds": seconds,
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
    start = time.perf_counter()
    if train:
        dataset = make_train_dataset(source, batch_size, image_size, randaugment=randaugment, seed=seed, **kwargs)
    else:
        dataset = make_eval_dataset(source, batch_size, image_size, **kwargs).repeat()
    setup = time.perf_counter() - start
    result = measure_throughput(dataset, num_batches=num_batches, warmup_batches=warmup_batches)
    result["setup_seconds"] = setup
    return result


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
    parser.add_argument("--skip-corrupt", action="store_true")
    args = parser.parse_args(argv)
    kwargs = {"skip_corrupt": args.skip_corrupt}
    try:
        if args.eval:
            result = benchmark_input_pipeline(
                args.source, args.image_size, args.batch_size, None, args.batches, args.warmup, train=False, **kwargs
            )
        else:
            result = benchmark_input_pipeline(
                args.source,
                args.image_size,
                args.batch_size,
                tuple(args.randaugment),
                args.batches,
                args.warmup,
                seed=args.seed,
                **kwargs,
            )
    except ValueError as err:  # bad flags or data (DatasetError is a ValueError): a message, not a traceback
        parser.error(str(err))
    print(
        f"{'eval' if args.eval else 'train'} pipeline, {args.source or BUNDLED_SAMPLE}, "
        f"{args.image_size} px, batch {args.batch_size}: {result['images_per_second']:.1f} images/s "
        f"({result['batches']} batches in {result['seconds']:.2f} s; setup {result['setup_seconds']:.2f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
