"""Figure 2 of Brock et al. (2021) in miniature: accuracy against batch size, with and without AGC.

The paper trains NF-ResNet-50 on ImageNet at batch sizes 256 ... 4096 with the
learning rate scaled linearly (0.1 * batch / 256), with and without Adaptive
Gradient Clipping, beside a BatchNorm ResNet-50: without AGC the NF-ResNet
falls behind at large batch sizes, with AGC it matches the BatchNorm network.
Here the same study runs on real CIFAR-10 (the JPEG copy in
/work/shared/data/cifar10_jpeg) at 32 px with three networks of one shape:

    nf_agc     `NFResNet` with stage widths `--widths` (32 ... 256), a stem of a
               quarter of the first stage's width (NF-ResNet-50's ratio), blocks
               per stage `--depths` (3, 4, 6, 3: NF-ResNet-50's pattern), trained
               with `NFNetSGD`, clipping 0.01 (the classifier kernel excluded,
               as NFNetSGD does);
    nf_no_agc  the same network and optimizer with `clipping=None`;
    bn         a pre-activation BatchNorm ResNet of the same shape (same stem,
               widths, depths, strides, bottleneck and projection shortcuts),
               built here from plain Keras layers, with `NFNetSGD(clipping=None)`.

At every batch size each network starts from the same initial weights (one
draw per architecture) and sees the same images in the same order with the
same flips: each epoch is one seeded permutation of the training images, cut
into consecutive batches (the last partial batch is dropped), and the flip of
an image is keyed by (epoch, image).  Every run has the same number of epochs,
Nesterov SGD (momentum 0.9, coupled weight decay `--weight_decay`), peak
learning rate `--base_lr * batch / 256` reached by a linear warmup of
`--warmup_epochs`, then a cosine decay to 0, and label-smoothed (0.1)
cross-entropy.  A run whose loss becomes non-finite stops there (its later
epochs are NaN in the CSV).

The defaults are the study in docs/measurements.md (1,256 s on 2 CPU cores, the
machine partly shared): NF-ResNet-50's depth pattern, all 49,152 = 12 x 4096
training images, 6 epochs (72 steps at batch 4096, 1,152 at 256), half an epoch
of warmup, weight decay 5e-5.  The steps run as a plain TF graph: XLA was half
as fast on this CPU (`--jit`).

Output (in `--out`, default benchmarks/results/): `agc_batch_size.csv` (one row
per run and epoch: mean training loss over the epoch, test accuracy after it,
mean AGC clip fraction, seconds, the first epoch's including the tracing) and
`agc_batch_size.png` (final test accuracy and loss against batch size, and
per-epoch curves per batch size) when matplotlib is installed; a summary and
the wall time are printed.  Not a test.

    python benchmarks/agc_batch_size.py --smoke        # under 90 s on 2 CPU cores
    python benchmarks/agc_batch_size.py --out docs     # the study (see docs/measurements.md)
"""

import argparse
import csv
import logging
import math
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for path in (ROOT, HERE):
    if path not in sys.path:
        sys.path.insert(0, path)

from agc_stability import DATA, load_cifar  # noqa: E402  (the sibling benchmark's CIFAR-10 loader)

MODELS = ("nf_agc", "nf_no_agc", "bn")
LABELS = {"nf_agc": "NF-ResNet, AGC", "nf_no_agc": "NF-ResNet, no AGC", "bn": "BN-ResNet"}
#: The preset `--smoke` applies: tiny, finishes in well under 90 s on 2 cores.
SMOKE = dict(train_images=512, test_images=256, epochs=1, batch_sizes=(64, 256), widths=(8, 16, 32, 64),
             depths=(1, 1, 1, 1), warmup_epochs=0.5, eager=True)
CSV_COLUMNS = ["model", "batch_size", "epoch", "steps", "peak_learning_rate", "train_loss", "test_accuracy",
               "clip_fraction", "seconds"]


def int_list(text):
    """`"3,4,6,3"` -> `(3, 4, 6, 3)`."""
    return tuple(int(v) for v in text.split(",") if v.strip())


def epoch_order(num_images, epochs, seed):
    """Per epoch, a permutation of the training images and a flip flag per image (shared by every run)."""
    rng = np.random.default_rng(seed)
    orders = [rng.permutation(num_images) for _ in range(epochs)]
    flips = [rng.random(num_images) < 0.5 for _ in range(epochs)]
    return orders, flips


def epoch_batches(x, y, order, flips, batch_size):
    """The epoch's consecutive batches of `order` (last partial batch dropped), flipped as `flips` says."""
    for start in range(0, len(order) - batch_size + 1, batch_size):
        idx = order[start:start + batch_size]
        xb = x[idx]
        flip = flips[idx]
        xb[flip] = xb[flip, :, ::-1]
        yield xb, y[idx]


def nf_resnet(args):
    """The small NF-ResNet: DeepMind's NF-ResNet with the stage widths, depths and stem of `args`."""
    from nfnet_keras.models.nf_resnet import NFResNet

    return NFResNet("50", classes=10, input_shape=(32, 32, 3), classifier_activation=None, stochdepth_rate=0.0,
                    widths=args.widths, depths=args.depths, strides=args.strides, width_multiplier=1,
                    stem_width=args.stem_width)


def bn_resnet(args):
    """A pre-activation BatchNorm ResNet of the NF-ResNet's shape, from plain Keras layers.

    The same 7x7 stride-2 stem and 3x3 stride-2 max-pool, bottleneck blocks
    (1x1 -> 3x3 with the stage stride -> 1x1, bottleneck 0.25 of the block's
    output width) with a strided 1x1 projection shortcut taken from the
    activated input where the shape changes, BN-ReLU before every conv
    (BatchNorm decay 0.9 and eps 1e-5, Haiku's ResNet values), a final BN-ReLU,
    global average pooling and a classifier initialised N(0, 0.01) like the
    NF-ResNet's.
    """
    import keras

    layers = keras.layers

    def conv(channels, kernel, stride, name):
        return layers.Conv2D(channels, kernel, strides=stride, padding="same", use_bias=False,
                             kernel_initializer="he_normal", name=name)

    def bn_relu(x, name):
        x = layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=f"{name}_bn")(x)
        return layers.ReLU(name=f"{name}_relu")(x)

    inputs = keras.Input((32, 32, 3))
    x = conv(args.stem_width, 7, 2, "initial_conv")(inputs)
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)
    channels, index = args.stem_width, 0
    for width, depth, stage_stride in zip(args.widths, args.depths, args.strides):
        for j in range(depth):
            name = f"block_{index}"
            stride = stage_stride if j == 0 else 1
            out = bn_relu(x, f"{name}_preact")
            shortcut = conv(width, 1, stride, f"{name}_shortcut")(out) if stride > 1 or channels != width else x
            mid = max(int(width * 0.25), 1)
            out = conv(mid, 1, 1, f"{name}_conv0")(out)
            out = conv(mid, 3, stride, f"{name}_conv1")(bn_relu(out, f"{name}_conv0"))
            out = conv(width, 1, 1, f"{name}_conv2")(bn_relu(out, f"{name}_conv1"))
            x = layers.Add(name=f"{name}_add")([shortcut, out])
            channels, index = width, index + 1
    x = bn_relu(x, "final")
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = layers.Dense(10, kernel_initializer=keras.initializers.RandomNormal(0.0, 0.01), name="predictions")(x)
    return keras.Model(inputs, outputs, name="bn_resnet")


BUILDERS = {"nf_agc": nf_resnet, "nf_no_agc": nf_resnet, "bn": bn_resnet}


def evaluate(model, x, y):
    """Top-1 accuracy; NaN when the logits are not finite (a diverged run)."""
    logits = model.predict(x, batch_size=1000, verbose=0)
    if not np.all(np.isfinite(logits)):
        return float("nan")
    return float(np.mean(np.argmax(logits, -1) == y))


def train(label, batch_size, init_weights, data, order, args):
    """One run; returns its per-epoch rows for the CSV and whether it diverged."""
    import keras

    from nfnet_keras.training.losses import NFNetCrossEntropy
    from nfnet_keras.training.optimizers import DEFAULT_AGC_EXCLUDE, DEFAULT_DECAY_EXCLUDE, NFNetSGD
    from nfnet_keras.training.schedules import WarmupCosineDecay

    x_train, y_train, x_test, y_test = data
    orders, flips = order
    steps_per_epoch = len(x_train) // batch_size
    model = BUILDERS[label](args)
    model.set_weights(init_weights)
    schedule = WarmupCosineDecay(
        base_learning_rate=args.base_lr, global_batch_size=batch_size, steps_per_epoch=steps_per_epoch,
        epochs=args.epochs, warmup_epochs=args.warmup_epochs,
    )
    clipping = args.clipping if label == "nf_agc" else None
    # BatchNorm's scale and offset get no weight decay, like the NF gains and biases.
    decay_exclude = DEFAULT_DECAY_EXCLUDE + (("gamma$", "beta$") if label == "bn" else ())
    optimizer = NFNetSGD(learning_rate=schedule, clipping=clipping, weight_decay=args.weight_decay,
                         decay_exclude=decay_exclude, agc_exclude=args.agc_exclude or DEFAULT_AGC_EXCLUDE)
    model.compile(optimizer=optimizer, loss=NFNetCrossEntropy(), jit_compile=args.jit, run_eagerly=args.eager)
    rows, diverged = [], False
    for epoch in range(args.epochs):
        start = time.time()
        losses, fractions = [], []
        if not diverged:
            for xb, yb in epoch_batches(x_train, y_train, orders[epoch], flips[epoch], batch_size):
                loss = float(model.train_on_batch(xb, yb))
                losses.append(loss)
                if clipping:
                    fractions.append(float(keras.ops.convert_to_numpy(optimizer.clip_fraction)))
                if not math.isfinite(loss):
                    diverged = True
                    break
        accuracy = float("nan") if diverged else evaluate(model, x_test, y_test)
        rows.append(dict(
            model=label, batch_size=batch_size, epoch=epoch + 1, steps=(epoch + 1) * steps_per_epoch,
            peak_learning_rate=schedule.peak_value,
            train_loss=float("nan") if diverged else float(np.mean(losses)),
            test_accuracy=accuracy,
            clip_fraction=float(np.mean(fractions)) if fractions and not diverged else float("nan"),
            seconds=time.time() - start,
        ))
        r = rows[-1]
        print(f"    {label} batch {batch_size} epoch {epoch + 1}: loss {r['train_loss']:.3f} "
              f"accuracy {r['test_accuracy']:.3f} ({r['seconds']:.1f}s)", flush=True)
    return rows, diverged


def write_csv(rows, path):
    """One row per run and epoch, floats to 6 significant digits."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


def plot(rows, args, path):
    """Final accuracy and loss against batch size (Figure 2's axes), then per-epoch curves per batch size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    sizes = list(args.batch_sizes)
    fig, axes = plt.subplots(2, len(sizes) + 1, figsize=(4 * (len(sizes) + 1), 7), squeeze=False)
    colors = {"nf_agc": "tab:blue", "nf_no_agc": "tab:orange", "bn": "tab:green"}

    def run(label, size):
        return [r for r in rows if r["model"] == label and r["batch_size"] == size]

    for label in args.models:
        finals = [run(label, size)[-1] for size in sizes]
        for ax, key in ((axes[0, 0], "test_accuracy"), (axes[1, 0], "train_loss")):
            values = [r[key] for r in finals]
            ax.plot(sizes, values, "o-", color=colors[label], label=LABELS[label])
            diverged = [s for s, v in zip(sizes, values) if not math.isfinite(v)]
            if diverged and key == "test_accuracy":
                # A diverged run has no accuracy: mark it at chance level.
                ax.plot(diverged, [0.1] * len(diverged), "x", color=colors[label], markersize=10)
        for column, size in enumerate(sizes, start=1):
            epochs = [r["epoch"] for r in run(label, size)]
            axes[0, column].plot(epochs, [r["test_accuracy"] for r in run(label, size)], "o-",
                                 color=colors[label], label=LABELS[label])
            axes[1, column].plot(epochs, [r["train_loss"] for r in run(label, size)], "o-",
                                 color=colors[label], label=LABELS[label])
    for ax in axes[:, 0]:
        ax.set_xscale("log", base=2)
        ax.set_xticks(sizes, [str(s) for s in sizes])
        ax.set_xlabel("batch size")
    axes[0, 0].set_ylabel("final test accuracy (x: diverged)")
    axes[1, 0].set_ylabel("final-epoch training loss")
    axes[0, 0].legend(fontsize=8)
    for column, size in enumerate(sizes, start=1):
        for ax in axes[:, column]:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes[0, column].set_title(f"batch {size}, peak lr {args.base_lr * size / 256:g}")
        axes[0, column].set_ylabel("test accuracy")
        axes[1, column].set_ylabel("training loss")
        axes[1, column].set_xlabel("epoch")
    fig.suptitle(f"NF-ResNet depths {list(args.depths)}, widths {list(args.widths)}: CIFAR-10 (JPEG), "
                 f"{args.train_images} train / {args.test_images} test images, {args.epochs} epochs")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=DATA)
    parser.add_argument("--train_images", type=int, default=49152, help="random training images (12 x 4096)")
    parser.add_argument("--test_images", type=int, default=10000)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch_sizes", type=int_list, default=(256, 1024, 4096))
    parser.add_argument("--widths", type=int_list, default=(32, 64, 128, 256), help="stage output channels")
    parser.add_argument("--depths", type=int_list, default=(3, 4, 6, 3),
                        help="blocks per stage (NF-ResNet-50's pattern; 1,1,1,1 takes 2/3 of the time)")
    parser.add_argument("--strides", type=int_list, default=(1, 2, 2, 2), help="stage strides")
    parser.add_argument("--stem_width", type=int, default=None,
                        help="stem channels; default a quarter of the first stage's (NF-ResNet-50's ratio)")
    parser.add_argument("--base_lr", type=float, default=0.1, help="lr per 256 images; peak = base_lr * batch / 256")
    parser.add_argument("--warmup_epochs", type=float, default=0.5)
    parser.add_argument("--weight_decay", type=float, default=5e-5)
    parser.add_argument("--clipping", type=float, default=0.01)
    parser.add_argument("--agc_exclude", type=lambda text: tuple(v for v in text.split(",") if v),
                        default=None,
                        help="comma-separated regexes of variable paths AGC skips (NFNetSGD's default: the "
                             "classifier kernel); adding skip_gain lets the zero-initialised skip gains grow")
    parser.add_argument("--models", default=",".join(MODELS), help="which of nf_agc,nf_no_agc,bn to train")
    parser.add_argument("--jit", action="store_true",
                        help="compile the steps with XLA (on the 2-core CPU the plain graph was twice as fast)")
    parser.add_argument("--eager", action="store_true",
                        help="run eagerly (same numbers; for runs of a few steps, where tracing costs most)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="a tiny run that checks the script (< 90 s)")
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results"))
    args = parser.parse_args(argv)
    if args.smoke:
        for key, value in SMOKE.items():
            setattr(args, key, value)
    args.models = tuple(m for m in args.models.split(",") if m)
    unknown = sorted(set(args.models) - set(MODELS))
    if unknown:
        parser.error(f"unknown --models {unknown}; choose from {','.join(MODELS)}")
    if not len(args.widths) == len(args.depths) == len(args.strides):
        parser.error("--widths, --depths and --strides need one entry per stage each")
    if args.stem_width is None:
        args.stem_width = max(args.widths[0] // 4, 1)
    if max(args.batch_sizes) > args.train_images:
        parser.error(f"batch size {max(args.batch_sizes)} exceeds --train_images {args.train_images}")
    return args


def main(argv=None):
    args = parse_args(argv)
    # Each run builds new train and predict functions; TF's retracing warning says nothing here.
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    import keras

    t0 = time.time()
    data = load_cifar(args.data, args.train_images, args.test_images, args.seed)
    print(f"decoded {len(data[0])} train / {len(data[2])} test images in {time.time() - t0:.1f}s", flush=True)
    order = epoch_order(len(data[0]), args.epochs, args.seed)
    keras.utils.set_random_seed(args.seed)
    nf_init = nf_resnet(args)
    bn_init = bn_resnet(args)
    print(f"NF-ResNet {nf_init.count_params():,} parameters, BN-ResNet {bn_init.count_params():,} "
          f"(stem {args.stem_width}, widths {list(args.widths)}, depths {list(args.depths)}, "
          f"strides {list(args.strides)})", flush=True)
    init = {"nf_agc": nf_init.get_weights(), "nf_no_agc": nf_init.get_weights(), "bn": bn_init.get_weights()}

    rows, summary = [], []
    for batch_size in args.batch_sizes:
        for label in args.models:
            start = time.time()
            run_rows, diverged = train(label, batch_size, init[label], data, order, args)
            rows.extend(run_rows)
            seconds = time.time() - start
            last = run_rows[-1]
            summary.append((label, batch_size, last, diverged, seconds))
            print(f"{label:9s} batch {batch_size:5d} peak lr {last['peak_learning_rate']:<6g} "
                  f"{run_rows[0]['steps'] * args.epochs:5d} steps: final loss {last['train_loss']:.3f} "
                  f"test accuracy {last['test_accuracy']:.3f}"
                  + (" DIVERGED" if diverged else "") + f"  ({seconds:.0f}s)", flush=True)

    os.makedirs(args.out, exist_ok=True)
    csv_path = os.path.join(args.out, "agc_batch_size.csv")
    write_csv(rows, csv_path)
    print(f"wrote {csv_path}")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("matplotlib not installed: CSV only")
    else:
        png_path = os.path.join(args.out, "agc_batch_size.png")
        plot(rows, args, png_path)
        print(f"wrote {png_path}")

    print("\nsummary (final epoch; best test accuracy over epochs in brackets)")
    for label, batch_size, last, diverged, seconds in summary:
        accuracies = [r["test_accuracy"] for r in rows if r["model"] == label and r["batch_size"] == batch_size]
        best = max((a for a in accuracies if math.isfinite(a)), default=float("nan"))
        print(f"  {label:9s} batch {batch_size:5d}: loss {last['train_loss']:.3f}  accuracy "
              f"{last['test_accuracy']:.3f} [{best:.3f}]  clip fraction {last['clip_fraction']:.3f}"
              + ("  diverged" if diverged else "") + f"  {seconds:.0f}s")
    print(f"  wall time {time.time() - t0:.0f}s")
    return rows


if __name__ == "__main__":
    main()
