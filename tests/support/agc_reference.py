"""Float64 numpy re-implementations of DeepMind's AGC, SGD_AGC step and EMA.

Written from the reference formulas (nfnets/optim.py, nfnets/utils.py), not
from nfnet_keras, so the tests compare two independent implementations.
"""

import numpy as np


def unitwise_norm(x):
    x = np.asarray(x, dtype=np.float64)
    if np.squeeze(x).ndim <= 1:
        return np.sqrt(np.sum(x**2))
    if x.ndim in (2, 3):
        return np.sqrt(np.sum(x**2, axis=0, keepdims=True))
    if x.ndim == 4:
        return np.sqrt(np.sum(x**2, axis=(0, 1, 2), keepdims=True))
    raise ValueError(x.shape)


def agc(grad, param, clipping=0.01, eps=1e-3):
    """Returns `(clipped_grad, trigger)` in float64."""
    grad = np.asarray(grad, dtype=np.float64)
    max_norm = np.maximum(unitwise_norm(param), eps) * clipping
    g_norm = unitwise_norm(grad)
    trigger = g_norm > max_norm
    clipped = grad * (max_norm / np.maximum(g_norm, 1e-6))
    return np.where(trigger, clipped, grad), trigger


def nfnet_sgd_step(param, grad, buf, lr, *, clip, decay, wd=2e-5, momentum=0.9,
                   nesterov=True, mode="coupled", clipping=0.01, eps=1e-3):
    """One DeepMind SGD_AGC step for one parameter; returns `(param, buf)`."""
    param = np.asarray(param, dtype=np.float64)
    grad = np.asarray(grad, dtype=np.float64)
    buf = np.asarray(buf, dtype=np.float64)
    if clip:
        grad, _ = agc(grad, param, clipping, eps)
    if decay and mode == "coupled":
        grad = grad + wd * param
    buf = momentum * buf + grad
    step = grad + momentum * buf if nesterov else buf
    new_param = param - lr * step
    if decay and mode == "decoupled":
        new_param = new_param - lr * wd * param
    return new_param, buf


def ema_update(ema, param, decay, step):
    """DeepMind's tf1_ema: `d = min(decay, (1 + t) / (10 + t))`."""
    d = min(decay, (1.0 + step) / (10.0 + step))
    return d * np.asarray(ema, np.float64) + (1.0 - d) * np.asarray(param, np.float64)
