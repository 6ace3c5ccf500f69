"""AGC stability benchmark: a small NFNet on real CIFAR-10 images, with and without AGC.

Trains the nano NFNet (`nfnet_keras.NFNet("nano")`, ~0.17 M parameters) twice
from the same initial weights on the same batches with `NFNetSGD` (Nesterov
0.9, coupled weight decay 2e-5, lr outside the momentum buffer), once with
AGC (`clipping=0.01` by default) and once without (`clipping=None`), at a
large learning rate, and records the training loss of every step.  Without
AGC the run diverges (loss jumps up / becomes non-finite); with AGC it trains.

Data: the JPEG copy of CIFAR-10 in /work/shared/data/cifar10_jpeg (see its
README); `--train-images` random training images and `--test-images` test
images are decoded with Pillow at 32 px.

Output (in `--out`, default benchmarks/results/): `agc_stability.csv` (step,
lr, loss with AGC, loss without AGC, clip fraction) and `agc_stability.png`
when matplotlib is installed; a summary is printed.  Not a test.

    python benchmarks/agc_stability.py            # about 2 minutes on 2 CPU cores
"""

import argparse
import csv
import io
import math
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

DATA = os.path.join(ROOT, "..", "shared", "data", "cifar10_jpeg", "cifar10_jpeg.npz")
MEAN = np.array([0.4914, 0.4822, 0.4465], "float32") * 255.0
STD = np.array([0.2470, 0.2435, 0.2616], "float32") * 255.0


def load_cifar(path, train_images, test_images, seed):
    """Decodes a random subset of CIFAR-10 (JPEG copy) to normalised float32 NHWC."""
    from PIL import Image

    d = np.load(path)
    rng = np.random.default_rng(seed)

    def decode(buf, off, indices):
        return np.stack(
            [
                np.asarray(Image.open(io.BytesIO(buf[off[i]:off[i + 1]].tobytes())).convert("RGB"))
                for i in indices
            ]
        )

    train_idx = rng.choice(len(d["y_train"]), size=train_images, replace=False)
    test_idx = rng.choice(len(d["y_test"]), size=test_images, replace=False)
    x_train = decode(d["x_train_jpeg"], d["x_train_offsets"], train_idx)
    x_test = decode(d["x_test_jpeg"], d["x_test_offsets"], test_idx)
    norm = lambda x: ((x.astype("float32") - MEAN) / STD).astype("float32")  # noqa: E731
    return norm(x_train), d["y_train"][train_idx], norm(x_test), d["y_test"][test_idx]


def batches(x, y, batch_size, steps, seed):
    """The same sequence of shuffled batches (with random flips) for every run."""
    rng = np.random.default_rng(seed)
    out = []
    order = np.array([], dtype=int)
    for _ in range(steps):
        if len(order) < batch_size:
            order = np.concatenate([order, rng.permutation(len(x))])
        idx, order = order[:batch_size], order[batch_size:]
        xb = x[idx].copy()
        flip = rng.random(batch_size) < 0.5
        xb[flip] = xb[flip, :, ::-1]
        out.append((xb, y[idx]))
    return out


def train(clipping, init_weights, data, args):
    import keras

    from nfnet_keras import NFNet
    from nfnet_keras.training.losses import NFNetCrossEntropy
    from nfnet_keras.training.optimizers import NFNetSGD
    from nfnet_keras.training.schedules import WarmupCosineDecay

    model = NFNet("nano", classes=10, input_shape=(32, 32, 3), weights=None,
                  classifier_activation=None, stochdepth_rate=0.0)
    model.set_weights(init_weights)
    schedule = WarmupCosineDecay(
        base_learning_rate=args.base_lr, global_batch_size=args.batch_size,
        total_steps=args.steps, warmup_steps=args.warmup_steps,
    )
    optimizer = NFNetSGD(learning_rate=schedule, clipping=clipping)
    model.compile(optimizer=optimizer, loss=NFNetCrossEntropy())
    losses, fractions, lrs = [], [], []
    diverged_at = None
    start = time.time()
    for step, (xb, yb) in enumerate(data):
        lrs.append(float(keras.ops.convert_to_numpy(schedule(step))))
        loss = float(model.train_on_batch(xb, yb))
        losses.append(loss)
        fractions.append(float(keras.ops.convert_to_numpy(optimizer.clip_fraction)) if clipping else 0.0)
        if not math.isfinite(loss) or loss > args.divergence_loss:
            diverged_at = step
            losses.extend([float("nan")] * (len(data) - step - 1))
            fractions.extend([float("nan")] * (len(data) - step - 1))
            lrs.extend(float(keras.ops.convert_to_numpy(schedule(s))) for s in range(step + 1, len(data)))
            break
    seconds = time.time() - start
    return model, losses, fractions, lrs, diverged_at, seconds


def evaluate(model, x, y):
    logits = model.predict(x, batch_size=500, verbose=0)
    if not np.all(np.isfinite(logits)):
        return float("nan")
    return float(np.mean(np.argmax(logits, -1) == y))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=DATA)
    parser.add_argument("--train-images", type=int, default=4096)
    parser.add_argument("--test-images", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--base-lr", type=float, default=0.4,
                        help="lr per 256 images (the paper: 0.1); the peak is base_lr * batch / 256")
    parser.add_argument("--warmup-steps", type=float, default=10)
    parser.add_argument("--clipping", type=float, default=0.01)
    parser.add_argument("--divergence-loss", type=float, default=20.0,
                        help="stop a run once its loss exceeds this (chance level is ln 10 = 2.3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results"))
    args = parser.parse_args(argv)

    import keras

    from nfnet_keras import NFNet

    t0 = time.time()
    x_train, y_train, x_test, y_test = load_cifar(args.data, args.train_images, args.test_images, args.seed)
    print(f"decoded {len(x_train)} train / {len(x_test)} test images in {time.time() - t0:.1f}s")
    data = batches(x_train, y_train, args.batch_size, args.steps, args.seed)
    keras.utils.set_random_seed(args.seed)
    init = NFNet("nano", classes=10, input_shape=(32, 32, 3), weights=None,
                 classifier_activation=None, stochdepth_rate=0.0).get_weights()

    runs = {}
    for label, clipping in (("agc", args.clipping), ("no_agc", None)):
        model, losses, fractions, lrs, diverged_at, seconds = train(clipping, init, data, args)
        accuracy = evaluate(model, x_test, y_test) if diverged_at is None else float("nan")
        runs[label] = dict(losses=losses, fractions=fractions, lrs=lrs, diverged_at=diverged_at,
                           seconds=seconds, accuracy=accuracy)
        print(f"{label:7s} clipping={clipping}: {seconds:.0f}s, "
              + (f"diverged at step {diverged_at}" if diverged_at is not None else "no divergence"))

    os.makedirs(args.out, exist_ok=True)
    csv_path = os.path.join(args.out, "agc_stability.csv")
    with open(csv_path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["step", "learning_rate", "loss_agc", "loss_no_agc", "clip_fraction_agc"])
        for step in range(args.steps):
            writer.writerow([step, runs["agc"]["lrs"][step], runs["agc"]["losses"][step],
                             runs["no_agc"]["losses"][step], runs["agc"]["fractions"][step]])
    print(f"wrote {csv_path}")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4))
        ax.plot(runs["agc"]["losses"], label=f"AGC (clipping={args.clipping})")
        ax.plot(runs["no_agc"]["losses"], label="no AGC")
        ax.set_xlabel("step")
        ax.set_ylabel("training loss")
        ax.set_yscale("log")
        ax.set_title(f"nano NFNet, CIFAR-10 subset, batch {args.batch_size}, "
                     f"peak lr {args.base_lr * args.batch_size / 256:g}")
        ax.legend()
        png_path = os.path.join(args.out, "agc_stability.png")
        fig.savefig(png_path, dpi=120, bbox_inches="tight")
        print(f"wrote {png_path}")
    except ImportError:
        print("matplotlib not installed: CSV only")

    def tail(losses, n=20):
        finite = [v for v in losses[-n:] if math.isfinite(v)]
        return float(np.mean(finite)) if finite else float("nan")

    print("\nsummary")
    print(f"  images {len(x_train)} train / {len(x_test)} test, batch {args.batch_size}, steps {args.steps}, "
          f"peak lr {args.base_lr * args.batch_size / 256:g}, warmup {args.warmup_steps} steps, cosine to 0")
    for label in ("agc", "no_agc"):
        r = runs[label]
        finite = [v for v in r["losses"] if math.isfinite(v)]
        print(f"  {label:7s} first loss {r['losses'][0]:.3f}  min loss {min(finite):.3f}  "
              f"mean loss of last 20 steps {tail(r['losses']):.3f}  "
              f"diverged at {r['diverged_at']}  test accuracy {r['accuracy']:.3f}  ({r['seconds']:.0f}s)")
    fractions = [v for v in runs["agc"]["fractions"] if math.isfinite(v)]
    print(f"  AGC clip fraction: mean {np.mean(fractions):.3f}, max {np.max(fractions):.3f}")
    print(f"  total {time.time() - t0:.0f}s")
    return runs


if __name__ == "__main__":
    main()
