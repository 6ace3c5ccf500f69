"""Renders the README's signal-propagation plot (SPP) at initialisation on real photos.

    python tools/plot_signal_propagation.py [--out docs] [--image-size 256]

Four networks, all freshly initialised (`--seed`), on the photos in
notebooks/images (scikit-image's CC0 / public-domain photos, see their NOTICE),
preprocessed as for NFNet-F0 (`nfnet_keras.prepare_images`, 256 px):

1. NFNet-F0 as built (skip gains 0, DeepMind's init),
2. the same weights with every skip gain set to 1 (`set_skip_gains`),
3. that network with gamma = 1 in every activation (`set_activation_gamma`),
4. `keras.applications.ResNet50V2(weights=None)`, a BatchNorm pre-activation
   ResNet, with BatchNorm in training mode (batch statistics), on the same
   normalised photos.

Writes `signal_propagation.png` (three panels, log scale) and
`signal_propagation.csv` (one row per model and depth: block name, the three
statistics, transition flag) to `--out`, and prints a summary. About 35 s on
2 CPU cores.
"""

import argparse
import csv
import glob
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

LABELS = (
    "NFNet-F0, skip gains 0 (default init)",
    "NFNet-F0, skip gains 1",
    "NFNet-F0, skip gains 1, gamma = 1",
    "BN ResNet50V2 (batch statistics)",
)


def compute(images, seed):
    import keras  # noqa: PLC0415

    import nfnet_keras as nk  # noqa: PLC0415
    from nfnet_keras.analysis.signal_metrics import (  # noqa: PLC0415
        set_activation_gamma,
        set_skip_gains,
        signal_propagation,
    )

    keras.utils.set_random_seed(seed)
    size = images.shape[1]
    f0 = nk.NFNetF0(weights=None, input_shape=(size, size, 3))
    results = [signal_propagation(f0, images)]
    set_skip_gains(f0, 1.0)
    results.append(signal_propagation(f0, images))
    set_activation_gamma(f0, 1.0)
    results.append(signal_propagation(f0, images))
    resnet = keras.applications.ResNet50V2(weights=None, input_shape=(size, size, 3))
    results.append(signal_propagation(resnet, images, training=True))
    return dict(zip(LABELS, results))


def write_csv(results, path):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["model", "depth", "name", "avg_sq_mean", "avg_var", "res_avg_var", "transition"])
        for label, result in results.items():
            for k, name in enumerate(result.names):
                res = "" if k == 0 else f"{result.res_avg_var[k - 1]:.6e}"
                flag = "" if k == 0 else int(result.transition[k - 1])
                writer.writerow(
                    [label, k, name, f"{result.avg_sq_mean[k]:.6e}", f"{result.avg_var[k]:.6e}", res, flag]
                )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.path.join(ROOT, "docs"))
    parser.add_argument("--images", default=os.path.join(ROOT, "notebooks", "images"))
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import nfnet_keras as nk  # noqa: PLC0415
    from nfnet_keras.analysis.signal_metrics import plot_signal_propagation  # noqa: PLC0415

    paths = sorted(glob.glob(os.path.join(args.images, "*.jpg")))
    if not paths:
        parser.error(f"no .jpg photos in {args.images}")
    images = np.asarray(nk.prepare_images(paths, args.image_size))
    start = time.time()
    results = compute(images, args.seed)
    elapsed = time.time() - start

    os.makedirs(args.out, exist_ok=True)
    write_csv(results, os.path.join(args.out, "signal_propagation.csv"))
    fig = plot_signal_propagation(
        results,
        log_scale=True,
        title=f"Signal propagation at initialisation, {len(paths)} photos at {args.image_size} px "
        "(open squares: transition blocks)",
        figsize=(15, 4.6),
    )
    png = os.path.join(args.out, "signal_propagation.png")
    fig.savefig(png, dpi=110, bbox_inches="tight")

    print(f"{len(paths)} photos ({', '.join(os.path.basename(p) for p in paths)}) at {args.image_size} px; "
          f"{elapsed:.1f} s")
    for label, result in results.items():
        print(f"{label}:")
        print("  avg_var     " + " ".join(f"{v:.3g}" for v in result.avg_var))
        print("  avg_sq_mean " + " ".join(f"{v:.3g}" for v in result.avg_sq_mean))
        print("  res_avg_var " + " ".join(f"{v:.3g}" for v in result.res_avg_var))
    print(f"wrote {png} and {os.path.join(args.out, 'signal_propagation.csv')}")


if __name__ == "__main__":
    main()
