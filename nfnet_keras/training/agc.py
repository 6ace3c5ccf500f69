"""Adaptive Gradient Clipping (AGC), exactly as in DeepMind's NFNet code.

Brock, De, Smith, Simonyan (2021), "High-Performance Large-Scale Image
Recognition Without Normalization", section 4.  The functions here are the
backend-agnostic (`keras.ops`) port of `nfnets/optim.py` (`unitwise_norm`,
`SGD_AGC.update_param`):

    p_norm   = max(unitwise_norm(param), eps)
    g_norm   = unitwise_norm(grad)
    max_norm = clipping * p_norm
    grad     = where(g_norm > max_norm, grad * max_norm / max(g_norm, 1e-6), grad)

These functions clip whatever they are given.  Inside a training step use the
optimizers of `nfnet_keras.training.optimizers`, which run AGC on the *all-reduced*
gradient (after the cross-replica sum, after loss-scale unscaling) and skip
the classifier kernel.
"""

import math

from keras import backend, ops

__all__ = [
    "unitwise_norm",
    "adaptive_clip_gradients",
    "agc_clip",
    "agc_scale",
    "agc_clip_mask",
    "agc_clip_fraction",
    "unit_count",
]

# DeepMind's "just-in-case" floor under the gradient norm in the division.
_GRAD_NORM_FLOOR = 1e-6


def _unit_axes(shape):
    """Reduction axes of `unitwise_norm` for a tensor of static `shape`.

    Returns `None` (whole tensor, no keepdims), `0` (rank 2/3) or `(0, 1, 2)`
    (rank 4).  The first test is on the squeezed rank, the others on the raw
    rank, as in the reference: a (1, 1, I, O) kernel takes the 4-D branch.
    """
    shape = tuple(shape)
    squeezed_rank = sum(1 for d in shape if d != 1)
    if squeezed_rank <= 1:
        return None
    if len(shape) in (2, 3):
        return 0
    if len(shape) == 4:
        return (0, 1, 2)
    raise ValueError(
        f"unitwise_norm: got a parameter of shape {shape}; only ranks 0-4 are "
        "supported (scalars/vectors, (I, O) or (H, I, O) linear, HWIO conv)."
    )


def unit_count(shape):
    """Number of AGC units of a tensor of static `shape`.

    1 for scalars and (squeezed) vectors, `prod(shape[1:])` for rank 2 and 3,
    `shape[3]` (output channels) for HWIO kernels.
    """
    axes = _unit_axes(shape)
    if axes is None:
        return 1
    if axes == 0:
        return int(math.prod(shape[1:]))
    return int(shape[3])


def _compute_dtype(dtype):
    # Norms of half-precision tensors are taken in float32; float32/float64
    # inputs keep their precision.
    dtype = backend.standardize_dtype(dtype)
    return "float32" if dtype in ("float16", "bfloat16") else dtype


def unitwise_norm(x):
    """Frobenius norm of each output unit of `x`, as DeepMind's `unitwise_norm`.

    - `ndim(squeeze(x)) <= 1` (scalars, vectors, gains, biases, `skip_gain`):
      one norm for the whole tensor, a scalar.
    - rank 2 (I, O) or 3: norm over axis 0, keepdims, i.e. one per output column.
    - rank 4 (H, W, I, O): norm over axes (0, 1, 2), keepdims, one per output
      channel.
    - anything else: ValueError.

    Args:
        x: tensor (or variable) with a fully known static shape.

    Returns:
        A tensor broadcastable against `x`.
    """
    x = ops.convert_to_tensor(x)
    axes = _unit_axes(x.shape)
    squared = ops.square(x)
    if axes is None:
        return ops.sqrt(ops.sum(squared))
    return ops.sqrt(ops.sum(squared, axis=axes, keepdims=True))


def agc_scale(grad, param, clipping=0.01, eps=1e-3):
    """The unit-wise factor AGC multiplies `grad` by. Returns `(scale, trigger)`.

    `scale` has the shape of `unitwise_norm(param)` and the compute dtype
    (float32 for half-precision gradients): `max_norm / max(g_norm, 1e-6)`
    where the unit is clipped and exactly 1 elsewhere, so `grad * scale` is
    DeepMind's clipped gradient.  Returning the small factor rather than the
    clipped gradient lets an optimizer fold it into its own update without a
    separate pass over the full-size gradient.  `trigger` is True where the
    unit is rescaled.
    """
    grad = ops.convert_to_tensor(grad)
    dtype = _compute_dtype(grad.dtype)
    g = ops.cast(grad, dtype)
    p = ops.cast(ops.convert_to_tensor(param), dtype)
    if tuple(g.shape) != tuple(p.shape):
        raise ValueError(
            f"gradient shape {tuple(g.shape)} does not match parameter shape "
            f"{tuple(p.shape)}"
        )
    max_norm = ops.maximum(unitwise_norm(p), ops.cast(eps, dtype)) * ops.cast(
        clipping, dtype
    )
    g_norm = unitwise_norm(g)
    trigger = ops.greater(g_norm, max_norm)
    scale = max_norm / ops.maximum(g_norm, ops.cast(_GRAD_NORM_FLOOR, dtype))
    # The choice is made on the unit-shaped scale (x1 where not clipped, which
    # is exact), so the full-size gradient is multiplied once and not also
    # passed through an elementwise select.
    return ops.where(trigger, scale, ops.ones_like(scale)), trigger


def agc_clip(grad, param, clipping=0.01, eps=1e-3):
    """AGC for one gradient. Returns `(clipped_grad, trigger)`.

    `clipped_grad` has the dtype of `grad`; `trigger` is a boolean tensor with
    one entry per unit (the shape of `unitwise_norm(param)`), True where the
    unit was rescaled.
    """
    grad = ops.convert_to_tensor(grad)
    scale, trigger = agc_scale(grad, param, clipping, eps)
    clipped = ops.cast(grad, scale.dtype) * scale
    return ops.cast(clipped, grad.dtype), trigger


def adaptive_clip_gradients(grads, params, clipping=0.01, eps=1e-3):
    """Unit-wise adaptive gradient clipping of a list of gradients.

    Every gradient is clipped (no exclusion: drop the classifier kernel from
    the lists yourself, or use an optimizer from `nfnet_keras.training.optimizers`).
    `None` gradients are passed through.

    Args:
        grads: list of gradient tensors.
        params: list of parameters (tensors or variables), aligned with `grads`.
        clipping: the clipping threshold lambda (0.01 in the paper for batch
            4096).
        eps: floor under the parameter norm, so zero-initialised parameters
            (e.g. `skip_gain`) can still move.

    Returns:
        List of clipped gradients, same dtypes as `grads`.
    """
    grads, params = list(grads), list(params)
    if len(grads) != len(params):
        raise ValueError(f"got {len(grads)} gradients for {len(params)} parameters")
    return [
        None if g is None else agc_clip(g, p, clipping, eps)[0]
        for g, p in zip(grads, params)
    ]


def agc_clip_mask(grad, param, clipping=0.01, eps=1e-3):
    """Boolean tensor, one entry per unit of `param`: True where AGC rescales.

    Its shape is that of `unitwise_norm(param)`: `()` for scalars and vectors,
    `(1, O)` for (I, O) kernels, `(1, 1, 1, O)` for HWIO kernels.
    """
    return agc_clip(grad, param, clipping, eps)[1]


def agc_clip_fraction(grads, params, clipping=0.01, eps=1e-3):
    """Fraction of units (over all given tensors) that AGC rescales.

    Each scalar or vector counts as one unit, each output column/channel of a
    kernel as one unit (see `unit_count`).  `None` gradients are skipped.

    Returns:
        A float32 scalar tensor in [0, 1].
    """
    clipped = []
    total = 0
    for g, p in zip(grads, params):
        if g is None:
            continue
        trigger = agc_clip_mask(g, p, clipping, eps)
        clipped.append(ops.sum(ops.cast(trigger, "float32")))
        total += unit_count(tuple(ops.shape(p)))
    if total == 0:
        return ops.convert_to_tensor(0.0, dtype="float32")
    return ops.sum(ops.stack(clipped)) / float(total)
