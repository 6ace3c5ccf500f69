"""3x3 stride-1 convolutions as Winograd's minimal filtering F(2x2, 3x3).

Each 4x4 input tile (tiles overlap by two pixels) and each 3x3 filter go to
a 4x4 transform domain where the convolution of a 2x2 output tile is 16
independent channel contractions: 16 matrix products per call instead of
nine, so 2.25x fewer multiply-accumulates than the direct convolution (Lavin
and Gray 2016, "Fast Algorithms for Convolutional Neural Networks"). The
transforms are additions and halvings only (F(2x2, 3x3) has the smallest
rounding error of the Winograd family: about 5e-7 of the output's scale in
float32 against the direct convolution, `tests/models/test_winograd.py`).

Why it is here: on a CPU under XLA the transforms fuse into a few loops and
the products run at the matrix-multiply rate, which makes NFNet-F0's 3x3
layers 1.3-1.6x faster at batch 1 than XLA's direct convolution
(`benchmarks/RESULTS.md`). Outside XLA (a plain TensorFlow graph runs each
slice and addition as its own op) it is 3x slower, and GPU libraries have
their own Winograd kernels: `conv_modes.conv3x3_mode` chooses.

Plain `keras.ops`, so the same code runs (and differentiates) on every
backend.
"""

from keras import ops

__all__ = ["MIN_CHANNELS_PER_GROUP", "winograd_conv3x3", "winograd_filters"]

# The narrowest groups (input channels per group) it pays for: the transforms cost
# in proportion to the channels, the products to channels x group width. Measured
# under XLA on 2 CPU cores at batch 1: 128-wide groups 1.3-1.6x faster than the
# direct convolution, 64-wide 0.7-1.05x, 16-32 channels 0.6x.
MIN_CHANNELS_PER_GROUP = 128


def winograd_filters(kernel, groups=1):
    """The 3x3 kernel in the transform domain, as the products of `winograd_conv3x3` take it.

    Args:
        kernel: `[3, 3, C / groups, F]`.
        groups: channel groups (group g maps input channels `[g*C/groups,
            (g+1)*C/groups)` to output channels `[g*F/groups, (g+1)*F/groups)`).

    Returns:
        `[16 * groups, C / groups, F / groups]`: `G w G^T` for each of the 16
        transform positions (outer) and groups (inner).
    """
    # Additions and halvings, not a contraction over the 3 taps: XLA:CPU runs
    # such a small-dimension dot far slower than the fused elementwise form.
    rows = _filter_rows([kernel[0], kernel[1], kernel[2]])
    u = []
    for row in rows:
        u += _filter_rows([row[0], row[1], row[2]])
    k, filters = kernel.shape[2], kernel.shape[3]
    n = filters // groups
    u = ops.reshape(ops.stack(u, axis=0), (16, k, groups, n))
    if groups > 1:
        u = ops.transpose(u, (0, 2, 1, 3))
    return ops.reshape(u, (16 * groups, k, n))


def winograd_conv3x3(inputs, kernel, groups=1, padding="same"):
    """`ops.conv(inputs, kernel, padding=padding)` for a 3x3 kernel, stride 1, by F(2x2, 3x3).

    Args:
        inputs: `[N, H, W, C]` with static `H` and `W` (channels last).
        kernel: `[3, 3, C / groups, F]`.
        groups: channel groups, as for a grouped convolution.
        padding: `"same"` (one zero on each side) or `"valid"`.

    Returns:
        `[N, H', W', F]`, the convolution's output (`H' = H` for "same",
        `H - 2` for "valid").
    """
    height, width, channels = inputs.shape[1], inputs.shape[2], inputs.shape[3]
    if tuple(kernel.shape[:2]) != (3, 3) or padding not in ("same", "valid"):
        raise ValueError(f"winograd_conv3x3 takes a 3x3 kernel and same/valid padding, got {kernel.shape}, {padding!r}")
    pad = 1 if padding == "same" else 0
    out_h, out_w = height + 2 * pad - 2, width + 2 * pad - 2
    tiles_h, tiles_w = -(-out_h // 2), -(-out_w // 2)
    # Zeros past the bottom/right edge make every tile whole; their outputs are cut off below.
    inputs = ops.pad(
        inputs,
        [[0, 0], [pad, pad + 2 * tiles_h - out_h], [pad, pad + 2 * tiles_w - out_w], [0, 0]],
    )
    k = channels // groups
    filters = kernel.shape[3]
    # V = B^T d B for every tile, as 16 maps [N, tiles_h, tiles_w, C].
    rows = _input_rows([inputs[:, r : r + 2 * tiles_h : 2] for r in range(4)])
    v = []
    for row in rows:
        v += _input_rows([row[:, :, c : c + 2 * tiles_w : 2] for c in range(4)])
    v = ops.reshape(ops.stack(v, axis=0), (16, -1, groups, k))
    if groups > 1:
        v = ops.transpose(v, (0, 2, 1, 3))
    v = ops.reshape(v, (16 * groups, -1, k))
    m = ops.matmul(v, winograd_filters(kernel, groups))  # [16 * groups, N * tiles, F / groups]
    m = ops.reshape(m, (16, groups, -1, filters // groups))
    if groups > 1:
        m = ops.transpose(m, (0, 2, 1, 3))
    m = ops.reshape(m, (4, 4, -1, tiles_h, tiles_w, filters))
    # Y = A^T M A: rows, then columns; y[p][q] is output pixel (2i + p, 2j + q) of tile (i, j).
    rows = _output_rows([m[0], m[1], m[2], m[3]])
    y = [_output_rows([row[0], row[1], row[2], row[3]]) for row in rows]
    y = ops.stack([ops.stack(y[0], axis=3), ops.stack(y[1], axis=3)], axis=2)  # [N, th, 2, tw, 2, F]
    y = ops.reshape(y, (-1, 2 * tiles_h, 2 * tiles_w, filters))
    if (2 * tiles_h, 2 * tiles_w) != (out_h, out_w):
        y = y[:, :out_h, :out_w]
    return y


def _filter_rows(g):
    """G applied to the three taps of a row (or column): [g0, (g0 + g1 + g2) / 2, (g0 - g1 + g2) / 2, g2]."""
    return [g[0], (g[0] + g[1] + g[2]) * 0.5, (g[0] - g[1] + g[2]) * 0.5, g[2]]


def _input_rows(d):
    """B^T applied to four rows (or columns) of a tile: [d0 - d2, d1 + d2, d2 - d1, d1 - d3]."""
    return [d[0] - d[2], d[1] + d[2], d[2] - d[1], d[1] - d[3]]


def _output_rows(m):
    """A^T applied to four rows (or columns): [m0 + m1 + m2, m1 - m2 - m3]."""
    return [m[0] + m[1] + m[2], m[1] - m[2] - m[3]]
