"""3x3 stride-1 convolutions by Winograd's minimal filtering F(2x2, 3x3), kernels stored transformed.

Each 4x4 input tile (tiles overlap by two pixels) and each 3x3 filter go to a
4x4 transform domain, where the convolution of a 2x2 output tile is 16
independent channel contractions: 16 products per output tile instead of 36,
2.25x fewer multiply-accumulates (Lavin and Gray 2016, "Fast Algorithms for
Convolutional Neural Networks"). The transforms are additions and halvings
only; F(2x2, 3x3) has the smallest rounding error of the Winograd family
(about 5e-7 of the output's scale in float32 against the direct convolution,
`tests/models/test_winograd.py`).

Why it is here: in an XLA-compiled CPU servable of NFNet-F0 it makes the
whole model about 1.1x faster at batch 1 (`benchmarks/RESULTS.md`, "Winograd
with stored kernels"), but only with the filters transformed once, at export
(`winograd_filters`): transforming variable kernels on every call cost about
what the products save. So it is an inference form of folded convolutions
(`WSConv2D(winograd=True)`), which `fold_weight_standardization(model,
winograd=True)` writes and `export.py --jit_compile` uses on CPU exports;
training always uses the direct convolution. Outside XLA (each slice and
addition its own op) it is 3-4x slower, and GPU libraries choose their own
algorithms.

Plain `keras.ops`, so the same code runs on every backend.
"""

from keras import ops

__all__ = ["MIN_CHANNELS_PER_GROUP", "winograd_applies", "winograd_conv3x3", "winograd_filters"]

# The narrowest groups (input channels per group) it pays for: the transforms cost
# in proportion to the channels, the products to channels x group width. Measured
# under XLA on 2 CPU cores at batch 1: 128-wide groups faster than the direct
# convolution, 64-wide 0.7-1.05x, 16-32 channels 0.6x.
MIN_CHANNELS_PER_GROUP = 128


def winograd_applies(kernel_size, strides, channels_per_group):
    """Whether a convolution is computed by `winograd_conv3x3` in the Winograd inference form.

    3x3, stride 1, and groups of at least `MIN_CHANNELS_PER_GROUP` input channels.
    """
    return tuple(kernel_size) == (3, 3) and tuple(strides) == (1, 1) and channels_per_group >= MIN_CHANNELS_PER_GROUP


def winograd_filters(kernel, groups=1):
    """The 3x3 kernel in the transform domain, as `winograd_conv3x3` takes it.

    Args:
        kernel: `[3, 3, C / groups, F]` (a grouped kernel: group g maps input
            channels `[g*C/groups, (g+1)*C/groups)` to output channels
            `[g*F/groups, (g+1)*F/groups)`).
        groups: channel groups.

    Returns:
        `[16 * groups, C / groups, F / groups]`: `G w G^T` for each of the 16
        transform positions (outer) and groups (inner).
    """
    if tuple(kernel.shape[:2]) != (3, 3):
        raise ValueError(f"winograd_filters takes a 3x3 kernel, got shape {tuple(kernel.shape)}")
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


def winograd_conv3x3(inputs, filters, groups=1, padding="same"):
    """A 3x3 stride-1 convolution by F(2x2, 3x3), from filters already transformed.

    `winograd_conv3x3(x, winograd_filters(w, g), g, p)` equals
    `ops.conv(x, w, padding=p)` with `g` groups, up to rounding.

    Args:
        inputs: `[N, H, W, C]` with static `H`, `W` and `C` (channels last).
        filters: `[16 * groups, C / groups, F / groups]` from `winograd_filters`.
        groups: channel groups.
        padding: `"same"` (one zero on each side) or `"valid"`.

    Returns:
        `[N, H', W', F]` (`H' = H` for "same", `H - 2` for "valid").
    """
    height, width, channels = inputs.shape[1], inputs.shape[2], inputs.shape[3]
    k = channels // groups
    if padding not in ("same", "valid"):
        raise ValueError(f"winograd_conv3x3 takes 'same' or 'valid' padding, got {padding!r}")
    if None in (height, width, channels) or tuple(filters.shape[:2]) != (16 * groups, k):
        raise ValueError(
            f"winograd_conv3x3 needs a static image size and filters [16 * groups, C / groups, F / groups]; "
            f"got inputs {tuple(inputs.shape)}, filters {tuple(filters.shape)}, groups {groups}"
        )
    pad = 1 if padding == "same" else 0
    out_h, out_w = height + 2 * pad - 2, width + 2 * pad - 2
    tiles_h, tiles_w = -(-out_h // 2), -(-out_w // 2)
    # Zeros past the bottom/right edge make every tile whole; their outputs are cut off below.
    inputs = ops.pad(
        inputs,
        [[0, 0], [pad, pad + 2 * tiles_h - out_h], [pad, pad + 2 * tiles_w - out_w], [0, 0]],
    )
    out_channels = filters.shape[2] * groups
    # V = B^T d B for every tile, as 16 maps [N, tiles_h, tiles_w, C].
    rows = _input_rows([inputs[:, r : r + 2 * tiles_h : 2] for r in range(4)])
    v = []
    for row in rows:
        v += _input_rows([row[:, :, c : c + 2 * tiles_w : 2] for c in range(4)])
    v = ops.reshape(ops.stack(v, axis=0), (16, -1, groups, k))
    if groups > 1:
        v = ops.transpose(v, (0, 2, 1, 3))
    v = ops.reshape(v, (16 * groups, -1, k))
    m = ops.matmul(v, filters)  # [16 * groups, N * tiles, F / groups]
    m = ops.reshape(m, (16, groups, -1, out_channels // groups))
    if groups > 1:
        m = ops.transpose(m, (0, 2, 1, 3))
    m = ops.reshape(m, (4, 4, -1, tiles_h, tiles_w, out_channels))
    # Y = A^T M A: rows, then columns; y[p][q] is output pixel (2i + p, 2j + q) of tile (i, j).
    rows = _output_rows([m[0], m[1], m[2], m[3]])
    y = [_output_rows([row[0], row[1], row[2], row[3]]) for row in rows]
    y = ops.stack([ops.stack(y[0], axis=3), ops.stack(y[1], axis=3)], axis=2)  # [N, th, 2, tw, 2, F]
    y = ops.reshape(y, (-1, 2 * tiles_h, 2 * tiles_w, out_channels))
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
