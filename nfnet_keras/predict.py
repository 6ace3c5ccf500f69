"""Classify images from the command line.

    python -m nfnet_keras.predict IMAGE [IMAGE ...] --variant F0 [--weights PATH] [--top 5]

Images are prepared with DeepMind's evaluation transform (squash-resize to
S+32, centre crop S, ImageNet normalisation) at the variant's test size, and
the top-k ImageNet classes are printed with their probabilities.  Without
`--weights` the published ImageNet checkpoint is downloaded (once) and cached.
"""

import argparse
import sys

import numpy as np


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m nfnet_keras.predict",
        description="Print the top-k ImageNet classes of images with an NFNet.",
    )
    parser.add_argument("images", nargs="+", help="image files (JPEG, PNG, ...)")
    parser.add_argument("--variant", default="F0", help="F0..F6 (default F0)")
    parser.add_argument(
        "--weights",
        default="imagenet",
        help="'imagenet' (download DeepMind's checkpoint, default) or a weights file "
        "(DeepMind checkpoint, timm .safetensors, Keras .weights.h5)",
    )
    parser.add_argument("--top", type=int, default=5, help="number of classes to print (default 5)")
    parser.add_argument("--image_size", type=int, default=None, help="input size (default: the variant's test size)")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    # Imported here so that `--help` answers without loading a backend.
    import nfnet_keras  # noqa: PLC0415
    from nfnet_keras.models import variants  # noqa: PLC0415

    if args.top < 1 or args.top > 1000:
        print(f"error: --top must be in 1..1000, got {args.top}", file=sys.stderr)
        return 2
    try:
        config = variants.get_config(args.variant)
        image_size = args.image_size or config["test_imsize"]
        images = nfnet_keras.prepare_images(args.images, image_size, crop_padding=config["eval_padding"])
        model = nfnet_keras.NFNet(
            args.variant,
            weights=args.weights,
            input_shape=(image_size, image_size, 3),
            classifier_activation="softmax",
        )
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    probabilities = np.asarray(model.predict(images, verbose=0))
    for path, top in zip(args.images, nfnet_keras.decode_predictions(probabilities, top=args.top)):
        print(path)
        for rank, (wnid, name, score) in enumerate(top, start=1):
            print(f"  {rank}. {name:<30s} {wnid}  {score:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
