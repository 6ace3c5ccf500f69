"""Classify images from the command line.

    python -m nfnet_keras.predict IMAGE [IMAGE ...]                  # NFNet-F0 with ImageNet weights
    python -m nfnet_keras.predict IMAGE ... --model runs/default      # a train.py run (its EMA weights)
    python -m nfnet_keras.predict IMAGE ... --model model.keras --noema
    python -m nfnet_keras.predict IMAGE ... --variant F1 --weights path/to/F1_haiku.npz --top 3

The model is loaded by `nfnet_keras.models.loading.load_model` (the loader of
`export.py` too). Each image is prepared with the model's own evaluation
preprocessing, and the top classes are printed with the model's class names
and their probabilities. Without `--model` or `--variant`, the published
NFNet-F0 ImageNet checkpoint is downloaded (once) and cached. The images are
read before the model is loaded, so an unreadable one fails at once.

An error (a missing or unreadable file, weights that do not fit, a failed
download) is one line on stderr, `error: ...`, and exit status 1; Ctrl-C is
`interrupted` and exit status 130 (`nfnet_keras.cli`). Set
NFNET_KERAS_TRACEBACK=1 to see the full traceback instead.

This module imports only the standard library and `nfnet_keras.cli` at the top
and parses the flags before it imports the model code. `python -m
nfnet_keras.predict` imports the package (and so Keras) first; the
repository's `python predict.py ...` runs this file without the package import
(and loads `cli.py` by its path), so its `--help` answers at once.
"""

import argparse
import importlib.util
import os
import sys

DEFAULT_VARIANT = "F0"


def _load_cli():
    """`nfnet_keras.cli`; by its path when this file runs by its path, which must not import the package."""
    if __package__:  # imported as nfnet_keras.predict: the package is there already
        return importlib.import_module("nfnet_keras.cli")
    spec = importlib.util.spec_from_file_location("nfnet_keras_cli", os.path.join(os.path.dirname(__file__), "cli.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


cli = _load_cli()


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m nfnet_keras.predict",
        description="Print the top classes of images with an NFNet.",
        epilog=cli.TRACEBACK_HELP,
    )
    parser.add_argument("images", nargs="+", help="image files (JPEG, PNG, ...)")
    parser.add_argument("--model", help="a .keras model or a train.py run directory")
    parser.add_argument(
        "--variant",
        help=f"a model name (nfnet_f0, F0, F0+, micro, ...), with --weights (default without --model: {DEFAULT_VARIANT})",
    )
    parser.add_argument(
        "--weights",
        help="with --variant: 'imagenet' (DeepMind's checkpoint, downloaded once; the default), 'none' "
        "(random initialisation) or a weights file (Keras .weights.h5, DeepMind checkpoint, timm "
        ".safetensors, .npz)",
    )
    parser.add_argument(
        "--noema",
        action="store_true",
        help="with --model: the raw weights, not the EMA weights saved beside the model",
    )
    parser.add_argument("--top", type=_positive_int, default=5, help="number of classes to print (default 5)")
    return parser


def main(argv=None):
    """Runs the command with `argv` (default: `sys.argv[1:]`); returns the exit status."""
    return cli.run_main(_predict, build_parser().parse_args(argv))


def _predict(args):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # TensorFlow's C++ INFO lines, as export.py
    # Imported only now, so that `--help` and usage errors answer without loading a backend.
    from nfnet_keras.models.loading import load_model, predict_probabilities  # noqa: PLC0415
    from nfnet_keras.preprocessing import load_image, prepare_images  # noqa: PLC0415

    pixels = [load_image(path) for path in args.images]  # a missing or broken image fails before the model loads
    variant = args.variant or (None if args.model else DEFAULT_VARIANT)
    model = load_model(args.model, variant=variant, weights=args.weights, ema=False if args.noema else None).model
    if args.top > model.num_classes:
        raise ValueError(f"--top {args.top} is more than the model's {model.num_classes} classes")
    probabilities = predict_probabilities(model, prepare_images(pixels, model))
    for path, row in zip(args.images, probabilities, strict=True):
        print(path)
        for rank, index in enumerate((-row).argsort(kind="stable")[: args.top], start=1):
            print(f"  {rank}. {model.class_names[index]:<30s} {row[index]:.4f}")


if __name__ == "__main__":
    sys.exit(main())
