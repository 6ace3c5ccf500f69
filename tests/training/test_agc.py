"""AGC (nfnet_keras.training.agc) against a float64 numpy re-implementation of DeepMind's formula."""

import zlib

import numpy as np
import pytest
from keras import ops

from support import agc_reference as ref
from nfnet_keras.training import agc

# (shape, expected unit-norm shape): scalars/vectors and anything that
# squeezes to rank <= 1 take one norm; a (1, 1, I, O) kernel stays 4-D.
SHAPES = [
    ((), ()),
    ((7,), ()),
    ((1, 7), ()),
    ((7, 1), ()),
    ((1, 1, 1, 1), ()),
    ((6, 5), (1, 5)),
    ((3, 4, 5), (1, 4, 5)),
    ((3, 3, 4, 8), (1, 1, 1, 8)),
    ((1, 1, 4, 8), (1, 1, 1, 8)),
]


def _random_case(shape, seed, factor_range):
    """A parameter and a gradient whose unit norms are `factor` x the AGC threshold."""
    rng = np.random.default_rng(seed)
    param = rng.standard_normal(shape).astype("float32")
    raw = rng.standard_normal(shape)
    threshold = 0.01 * np.maximum(ref.unitwise_norm(param), 1e-3)
    norm = ref.unitwise_norm(raw)
    factors = rng.uniform(*factor_range, size=np.shape(norm))
    grad = (raw / norm * threshold * factors).astype("float32")
    return param, grad


@pytest.mark.parametrize("shape,norm_shape", SHAPES, ids=[str(s) for s, _ in SHAPES])
def test_unitwise_norm_matches_numpy(shape, norm_shape):
    x = np.random.default_rng(0).standard_normal(shape).astype("float32")
    got = ops.convert_to_numpy(agc.unitwise_norm(x))
    want = ref.unitwise_norm(x)
    assert got.shape == norm_shape
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_unitwise_norm_rejects_rank5():
    with pytest.raises(ValueError, match="shape"):
        agc.unitwise_norm(np.ones((2, 2, 2, 2, 2), "float32"))


@pytest.mark.parametrize("shape,norm_shape", SHAPES, ids=[str(s) for s, _ in SHAPES])
@pytest.mark.parametrize("regime", ["below", "above", "mixed"])
def test_adaptive_clip_matches_numpy(shape, norm_shape, regime):
    factor_range = {"below": (0.2, 0.9), "above": (1.2, 30.0), "mixed": (0.2, 5.0)}[regime]
    param, grad = _random_case(shape, seed=zlib.crc32(f"{shape}{regime}".encode()), factor_range=factor_range)
    (got,) = agc.adaptive_clip_gradients([grad], [param])
    want, trigger = ref.agc(grad, param)
    got = ops.convert_to_numpy(got)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-12)
    mask = ops.convert_to_numpy(agc.agc_clip_mask(grad, param))
    np.testing.assert_array_equal(mask, trigger)
    if regime == "below":
        assert not trigger.any()
        np.testing.assert_array_equal(got, grad)  # untouched, bit for bit
    if regime == "above":
        assert trigger.all()
        threshold = 0.01 * np.maximum(ref.unitwise_norm(param), 1e-3)
        np.testing.assert_allclose(ref.unitwise_norm(got), threshold * np.ones_like(trigger), rtol=1e-5)


def test_mixed_regime_clips_some_units_and_keeps_others():
    param, grad = _random_case((3, 3, 16, 64), seed=3, factor_range=(0.2, 5.0))
    trigger = ops.convert_to_numpy(agc.agc_clip_mask(grad, param))
    assert 0 < trigger.sum() < trigger.size


def test_zero_parameter_uses_eps_floor():
    # A zero-initialised skip gain: threshold = clipping * eps = 1e-5.
    param = np.zeros((), "float32")
    grad = np.array(0.3, "float32")
    (got,) = agc.adaptive_clip_gradients([grad], [param], clipping=0.01, eps=1e-3)
    np.testing.assert_allclose(ops.convert_to_numpy(got), 1e-5, rtol=1e-6)
    zero_kernel = np.zeros((3, 3, 2, 4), "float32")
    grad_kernel = np.random.default_rng(1).standard_normal((3, 3, 2, 4)).astype("float32")
    (got_kernel,) = agc.adaptive_clip_gradients([grad_kernel], [zero_kernel])
    want_kernel, trigger = ref.agc(grad_kernel, zero_kernel)
    assert trigger.all()
    np.testing.assert_allclose(ops.convert_to_numpy(got_kernel), want_kernel, rtol=2e-6)
    np.testing.assert_allclose(ref.unitwise_norm(ops.convert_to_numpy(got_kernel)), 1e-5, rtol=1e-5)


def test_zero_gradient_stays_zero():
    param = np.ones((4, 3), "float32")
    (got,) = agc.adaptive_clip_gradients([np.zeros((4, 3), "float32")], [param])
    np.testing.assert_array_equal(ops.convert_to_numpy(got), 0.0)


def test_none_gradient_passes_through():
    param = np.ones((4,), "float32")
    out = agc.adaptive_clip_gradients([None, np.ones((4,), "float32")], [param, param])
    assert out[0] is None and out[1] is not None


def test_clip_fraction_counts_units():
    # 8 kernel units all clipped, 5 dense units none clipped, 1 vector clipped:
    # 9 of 14 units.
    k_param, k_grad = _random_case((3, 3, 2, 8), seed=4, factor_range=(2.0, 3.0))
    d_param, d_grad = _random_case((6, 5), seed=5, factor_range=(0.1, 0.5))
    v_param, v_grad = _random_case((5,), seed=6, factor_range=(2.0, 3.0))
    frac = agc.agc_clip_fraction([k_grad, d_grad, v_grad, None], [k_param, d_param, v_param, v_param])
    np.testing.assert_allclose(ops.convert_to_numpy(frac), 9.0 / 14.0, rtol=1e-6)
    assert [agc.unit_count(s) for s in [(3, 3, 2, 8), (6, 5), (5,), (), (2, 3, 4)]] == [8, 5, 1, 1, 12]


def test_half_precision_gradient_keeps_dtype():
    param, grad = _random_case((4, 6), seed=7, factor_range=(1.5, 4.0))
    (got,) = agc.adaptive_clip_gradients([grad.astype("float16")], [param])
    got = ops.convert_to_numpy(got)
    assert got.dtype == np.float16
    want, _ = ref.agc(grad.astype("float16"), param)
    np.testing.assert_allclose(got.astype("float64"), want, rtol=2e-3)


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="does not match"):
        agc.adaptive_clip_gradients([np.ones((3, 2), "float32")], [np.ones((2, 3), "float32")])
