"""Grouped 3x3 convolutions on the CPU: one grouped op versus one conv per group.

The profile behind `nfnet_keras.models.layers.ws_conv.grouped_conv_mode`: F0's 3x3
convolutions have 1, 2 or 6 groups of 128 channels.  For each of F0's shapes
at 192 px, batch 8, this times the forward pass and forward+backward (input
and kernel gradients) of

    native: one convolution with `groups` (TF `conv2d` with a grouped kernel,
            JAX `feature_group_count`),
    split:  `groups` plain convolutions on channel slices, concatenated,

on the TensorFlow backend with and without XLA, and on JAX (always XLA).
Median of `--steps` after 2 warm-ups; also prints process CPU seconds, which
are steadier than wall time on a shared machine.

    python benchmarks/conv_groups.py               # about 2 minutes on 2 cores
    python benchmarks/conv_groups.py --backend jax
    # serving's case: batch 1 at 256 px, forward only, on one thread and on two
    python benchmarks/conv_groups.py --batch_size 1 --image_size 256 --forward_only --threads 1

Not a test.
"""

import argparse
import sys
import time

import numpy as np

# (spatial size, channels, groups, stride) of F0's grouped 3x3 convs at 192 px
# (the sizes scale with `--image_size`: 256 px gives 64, 32, 16 and 8).
F0_SHAPES = [(48, 128, 1, 1), (48, 256, 2, 2), (24, 256, 2, 1), (24, 768, 6, 2), (12, 768, 6, 1), (6, 768, 6, 1)]


def measure(fn, steps):
    fn()
    fn()
    wall, cpu = [], []
    for _ in range(steps):
        c, t = time.process_time(), time.perf_counter()
        fn()
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return float(np.median(wall)) * 1e3, float(np.median(cpu)) * 1e3


def tf_cases(x, w, groups, stride):
    import tensorflow as tf

    def native(x, w):
        return tf.nn.conv2d(x, w, stride, "SAME")

    def split(x, w):
        xs, ws = tf.split(x, groups, axis=-1), tf.split(w, groups, axis=-1)
        return tf.concat([tf.nn.conv2d(a, b, stride, "SAME") for a, b in zip(xs, ws)], -1)

    x, w = tf.constant(x), tf.Variable(w)
    for name, conv in (("native", native), ("split", split)):
        for jit in (False, True):
            fwd = tf.function(lambda conv=conv: conv(x, w), jit_compile=jit)

            def fb(conv=conv):
                with tf.GradientTape() as tape:
                    tape.watch(x)
                    y = conv(x, w)
                    loss = tf.reduce_sum(y * y)
                return tape.gradient(loss, [x, w])

            # TensorFlow has no CPU kernel for a grouped convolution's gradient outside XLA.
            supported = jit or name == "split"
            yield f"tf-{name}{'-xla' if jit else ''}", fwd, tf.function(fb, jit_compile=jit) if supported else None


def jax_cases(x, w, groups, stride):
    import jax
    import jax.numpy as jnp

    def native(x, w):
        return jax.lax.conv_general_dilated(
            x, w, (stride, stride), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=groups
        )

    def split(x, w):
        xs, ws = jnp.split(x, groups, axis=-1), jnp.split(w, groups, axis=-1)
        return jnp.concatenate(
            [
                jax.lax.conv_general_dilated(a, b, (stride, stride), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
                for a, b in zip(xs, ws)
            ],
            -1,
        )

    x, w = jnp.asarray(x), jnp.asarray(w)
    for name, conv in (("native", native), ("split", split)):
        fwd = jax.jit(conv)
        grad = jax.jit(jax.grad(lambda x, w, conv=conv: jnp.sum(conv(x, w) ** 2), argnums=(0, 1)))
        yield (
            f"jax-{name}",
            lambda fwd=fwd: fwd(x, w).block_until_ready(),
            lambda grad=grad: jax.block_until_ready(grad(x, w)),
        )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=("tensorflow", "jax"), default="tensorflow")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--image_size", type=int, default=192, help="F0's input size; a multiple of 32")
    parser.add_argument("--forward_only", action="store_true", help="skip the forward+backward timings")
    parser.add_argument("--threads", type=int, help="TensorFlow's intra- and inter-op threads (default: all cores)")
    args = parser.parse_args(argv)
    if args.image_size % 32:
        parser.error(f"--image_size must be a multiple of 32, got {args.image_size}")
    if args.threads is not None:
        if args.backend != "tensorflow":
            parser.error("--threads sets TensorFlow's thread pools; it takes --backend tensorflow")
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    rng = np.random.default_rng(0)
    print("shape (HxW, C, groups, stride) | impl | fwd ms (cpu ms) | fwd+bwd ms (cpu ms)")
    totals = {}
    for size, channels, groups, stride in F0_SHAPES:
        size = size * args.image_size // 192
        x = rng.standard_normal((args.batch_size, size, size, channels)).astype("float32")
        w = (rng.standard_normal((3, 3, channels // groups, channels)) * 0.05).astype("float32")
        cases = tf_cases if args.backend == "tensorflow" else jax_cases
        for name, fwd, fb in cases(x, w, groups, stride):
            f_wall, f_cpu = measure(fwd, args.steps)
            b_wall, b_cpu = (float("nan"), float("nan")) if args.forward_only or fb is None else measure(fb, args.steps)
            totals[name] = totals.get(name, 0.0) + (f_cpu if args.forward_only else b_cpu)
            print(f"{size}x{size}, {channels}, {groups}, {stride} | {name} | "
                  f"{f_wall:.1f} ({f_cpu:.1f}) | {b_wall:.1f} ({b_cpu:.1f})", flush=True)
    print(f"\n{'forward' if args.forward_only else 'forward+backward'} CPU ms summed over the shapes "
          "(nan: no gradient kernel for that case):")
    for name, total in totals.items():
        print(f"  {name}: {total:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
