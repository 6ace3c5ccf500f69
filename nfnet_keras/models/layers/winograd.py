"""3x3 stride-1 convolutions by Winograd's minimal filtering, kernels stored transformed.

F(m x m, 3x3) takes overlapping (m + 2) x (m + 2) input tiles and the 3x3
filters to an (m + 2) x (m + 2) transform domain, where the convolution of an
m x m output tile is (m + 2)^2 independent channel contractions (Lavin and
Gray 2016, "Fast Algorithms for Convolutional Neural Networks"). Two tiles:
- F(2x2, 3x3): 16 products per 4 output pixels instead of 36 (2.25x fewer
  multiply-accumulates); transforms of additions and halvings; about 5e-7 of
  the output's scale from the direct convolution in float32.
- F(4x4, 3x3): 36 products per 16 output pixels instead of 144 (4x fewer);
  larger transform coefficients (up to 8 and 1/24), about 1e-5 of the
  output's scale in float32. Its tiles pad a map whose size is not a multiple
  of 4, and it gains little on maps of a few tiles, so `winograd_tile` gives
  it only to outputs whose sides are multiples of 4 and at least 8.
`tests/models/test_winograd.py` checks both against the direct convolution.

Why it is here: in an XLA-compiled CPU servable of NFNet-F0 it makes the
whole model faster (`benchmarks/RESULTS.md`, "Winograd with stored kernels"
and "F(4x4, 3x3) tiles where they fit"), but only with the filters transformed
once, at export (`winograd_filters`): transforming variable kernels on every
call cost about what the products save. So it is an inference form of folded
convolutions (`WSConv2D(winograd=True)`), which `fold_weight_standardization(
model, winograd=True)` writes and `export.py --jit_compile` uses on CPU
exports; training always uses the direct convolution. Outside XLA (each slice
and addition its own op) it is 3-4x slower, and GPU libraries choose their own
algorithms.

Plain `keras.ops`, so the same code runs on every backend.
"""

from keras import ops

__all__ = [
    "MIN_CHANNELS_PER_GROUP",
    "TILES",
    "winograd_applies",
    "winograd_conv3x3",
    "winograd_filters",
    "winograd_tile",
]

# The narrowest groups (input channels per group) it pays for: the transforms cost
# in proportion to the channels, the products to channels x group width. Measured
# for F(2x2, 3x3) under XLA on 2 CPU cores at batch 1: 128-wide groups faster than
# the direct convolution, 64-wide 0.7-1.05x, 16-32 channels 0.6x.
MIN_CHANNELS_PER_GROUP = 128

# Output tile size m -> (B^T, G, A^T) of F(m x m, 3x3) (Lavin and Gray 2016): input
# tile d -> B^T d B, filter w -> G w G^T, product M -> output tile A^T M A.
_TRANSFORMS = {
    2: (
        ((1, 0, -1, 0), (0, 1, 1, 0), (0, -1, 1, 0), (0, 1, 0, -1)),
        ((1, 0, 0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0, 0, 1)),
        ((1, 1, 1, 0), (0, 1, -1, -1)),
    ),
    4: (
        (
            (4, 0, -5, 0, 1, 0),
            (0, -4, -4, 1, 1, 0),
            (0, 4, -4, -1, 1, 0),
            (0, -2, -1, 2, 1, 0),
            (0, 2, -1, -2, 1, 0),
            (0, 4, 0, -5, 0, 1),
        ),
        (
            (1 / 4, 0, 0),
            (-1 / 6, -1 / 6, -1 / 6),
            (-1 / 6, 1 / 6, -1 / 6),
            (1 / 24, 1 / 12, 1 / 6),
            (1 / 24, -1 / 12, 1 / 6),
            (0, 0, 1),
        ),
        ((1, 1, 1, 1, 1, 0), (0, 1, -1, 2, -2, 0), (0, 1, 1, 4, 4, 0), (0, 1, -1, 8, -8, 1)),
    ),
}
#: The output tile sizes there are transforms for.
TILES = tuple(_TRANSFORMS)
_TILE_OF_POSITIONS = {(tile + 2) ** 2: tile for tile in TILES}


def winograd_applies(kernel_size, strides, channels_per_group):
    """Whether a convolution is computed by `winograd_conv3x3` in the Winograd inference form.

    3x3, stride 1, and groups of at least `MIN_CHANNELS_PER_GROUP` input channels.
    """
    return tuple(kernel_size) == (3, 3) and tuple(strides) == (1, 1) and channels_per_group >= MIN_CHANNELS_PER_GROUP


def winograd_tile(height, width):
    """The output tile size for a `height` x `width` output: 4 where it fits, else 2.

    F(4x4, 3x3) where both sides are multiples of 4 (no padded tiles) and at
    least 8; F(2x2, 3x3) elsewhere, and where a side is None (known only when
    called: 2x2 tiles fit any size). Measured under XLA on 2 AVX-512 CPU cores
    at batch 1, groups of 128 channels, against F(2x2, 3x3)
    (`benchmarks/winograd_tiles.py`): 1.2-1.8x as fast for 12x12 to 64x64
    outputs, 0.83-0.96x at 8x8 (1.56-1.74x at batch 8), and 0.58-0.85x on 6x6
    and 10x10, whose 4x4 tiles overhang.
    """
    if None in (height, width) or height % 4 or width % 4 or min(height, width) < 8:
        return 2
    return 4


def winograd_filters(kernel, groups=1, tile=2):
    """The 3x3 kernel in the transform domain, as `winograd_conv3x3` takes it.

    Args:
        kernel: `[3, 3, C / groups, F]` (a grouped kernel: group g maps input
            channels `[g*C/groups, (g+1)*C/groups)` to output channels
            `[g*F/groups, (g+1)*F/groups)`).
        groups: channel groups.
        tile: the output tile size m of F(m x m, 3x3), one of `TILES`.

    Returns:
        `[(tile + 2)^2 * groups, C / groups, F / groups]`: `G w G^T` for each
        transform position (outer) and group (inner).
    """
    if tuple(kernel.shape[:2]) != (3, 3):
        raise ValueError(f"winograd_filters takes a 3x3 kernel, got shape {tuple(kernel.shape)}")
    if tile not in _TRANSFORMS:
        raise ValueError(f"winograd_filters takes a tile size in {TILES}, got {tile!r}")
    g = _TRANSFORMS[tile][1]
    u = []
    for row in _combine(g, [kernel[0], kernel[1], kernel[2]]):
        u += _combine(g, [row[0], row[1], row[2]])
    k, filters = kernel.shape[2], kernel.shape[3]
    n = filters // groups
    u = ops.reshape(ops.stack(u, axis=0), (len(u), k, groups, n))
    if groups > 1:
        u = ops.transpose(u, (0, 2, 1, 3))
    return ops.reshape(u, (len(g) ** 2 * groups, k, n))


def winograd_conv3x3(inputs, filters, groups=1, padding="same"):
    """A 3x3 stride-1 convolution by F(m x m, 3x3), from filters already transformed.

    `winograd_conv3x3(x, winograd_filters(w, g, m), g, p)` equals
    `ops.conv(x, w, padding=p)` with `g` groups, up to rounding; the tile size
    m is read from the filters' shape.

    Args:
        inputs: `[N, H, W, C]` with static `H`, `W` and `C` (channels last).
        filters: `[(m + 2)^2 * groups, C / groups, F / groups]` from `winograd_filters`.
        groups: channel groups.
        padding: `"same"` (one zero on each side) or `"valid"`.

    Returns:
        `[N, H', W', F]` (`H' = H` for "same", `H - 2` for "valid").
    """
    height, width, channels = inputs.shape[1], inputs.shape[2], inputs.shape[3]
    if padding not in ("same", "valid"):
        raise ValueError(f"winograd_conv3x3 takes 'same' or 'valid' padding, got {padding!r}")
    positions, rest = divmod(filters.shape[0], groups)
    tile = None if rest else _TILE_OF_POSITIONS.get(positions)
    if None in (height, width, channels, tile) or filters.shape[1] * groups != channels:
        raise ValueError(
            "winograd_conv3x3 needs a static image size and filters [(m + 2)^2 * groups, C / groups, F / groups] "
            f"for a tile size m in {TILES}; got inputs {tuple(inputs.shape)}, filters {tuple(filters.shape)}, "
            f"groups {groups}"
        )
    k = channels // groups
    input_transform, _, output_transform = _TRANSFORMS[tile]
    size = tile + 2
    pad = 1 if padding == "same" else 0
    out_h, out_w = height + 2 * pad - 2, width + 2 * pad - 2
    tiles_h, tiles_w = -(-out_h // tile), -(-out_w // tile)
    # Zeros past the bottom/right edge make every tile whole; their outputs are cut off below.
    inputs = ops.pad(
        inputs,
        [[0, 0], [pad, pad + tile * tiles_h - out_h], [pad, pad + tile * tiles_w - out_w], [0, 0]],
    )
    out_channels = filters.shape[2] * groups
    # V = B^T d B for every tile, as size^2 maps [N, tiles_h, tiles_w, C]: rows, then columns.
    v = []
    for row in _combine(input_transform, [inputs[:, r : r + tile * tiles_h : tile] for r in range(size)]):
        v += _combine(input_transform, [row[:, :, c : c + tile * tiles_w : tile] for c in range(size)])
    v = ops.reshape(ops.stack(v, axis=0), (size * size, -1, groups, k))
    if groups > 1:
        v = ops.transpose(v, (0, 2, 1, 3))
    v = ops.reshape(v, (size * size * groups, -1, k))
    m = ops.matmul(v, filters)  # [size^2 * groups, N * tiles, F / groups]
    m = ops.reshape(m, (size * size, groups, -1, out_channels // groups))
    if groups > 1:
        m = ops.transpose(m, (0, 2, 1, 3))
    m = ops.reshape(m, (size, size, -1, tiles_h, tiles_w, out_channels))
    # Y = A^T M A: rows, then columns; y[p][q] is output pixel (tile * i + p, tile * j + q) of tile (i, j).
    rows = _combine(output_transform, [m[r] for r in range(size)])
    y = [_combine(output_transform, [row[c] for c in range(size)]) for row in rows]
    y = ops.stack([ops.stack(row, axis=3) for row in y], axis=2)  # [N, th, tile, tw, tile, F]
    y = ops.reshape(y, (-1, tile * tiles_h, tile * tiles_w, out_channels))
    if (tile * tiles_h, tile * tiles_w) != (out_h, out_w):
        y = y[:, :out_h, :out_w]
    return y


def _combine(matrix, xs):
    """`matrix @ xs` for a constant matrix and a list of tensors: sums of scaled terms, zeros skipped."""
    out = []
    for coefficients in matrix:
        total = None
        for c, x in zip(coefficients, xs, strict=True):
            if c == 0:
                continue
            term = x if c == 1 else -x if c == -1 else x * c
            total = term if total is None else total + term
        out.append(total)
    return out
