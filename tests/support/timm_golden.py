"""Deterministic timm-layout state dicts for the golden tests of timm's NFNets.

`tests/fixtures/golden_timm_eca_nfnet_l0_seed0.npz` holds timm 1.0.31's
`eca_nfnet_l0` outputs (PyTorch, eval mode) for the state dict that
`timm_state_dict()` rebuilds from `spec_timm_eca_nfnet_l0.json` (`{"model",
"state_dict": [[key, shape], ...] in state-dict order, "params"}`). Entry i
draws from `np.random.default_rng([seed, i])`: weights of rank >= 2
N(0, 1) / sqrt(fan_in) with fan_in the product of all but the first dimension
(OIHW convs, (out, in) Linear, (1, 1, k) ECA conv1d), gains 1 + 0.2 N, all
else (biases) 0.1 N; drawn in float64, stored as float32. The npz keys: `x`
(2, 224, 224, 3) NHWC normalised input, `logits`, `pool` (pooled features
before the classifier), `x_odd` (2, 227, 227, 3), `logits_odd`.
"""

import json
import os

import numpy as np

from support import FIXTURES_DIR

SPEC = os.path.join(FIXTURES_DIR, "spec_timm_eca_nfnet_l0.json")
GOLDEN = os.path.join(FIXTURES_DIR, "golden_timm_eca_nfnet_l0_seed0.npz")


def timm_spec():
    """The spec: `{"model", "state_dict": [(key, shape), ...], "params"}`."""
    with open(SPEC) as handle:
        spec = json.load(handle)
    spec["state_dict"] = [(key, tuple(shape)) for key, shape in spec["state_dict"]]
    return spec


def timm_state_dict(seed=0):
    """`{timm_key: float32 ndarray}` in PyTorch layouts, the parameters of the golden outputs."""
    state = {}
    for i, (key, shape) in enumerate(timm_spec()["state_dict"]):
        normal = np.random.default_rng([seed, i]).standard_normal(shape)
        leaf = key.rsplit(".", 1)[-1]
        if leaf == "weight" and len(shape) >= 2:
            value = normal / np.sqrt(np.prod(shape[1:]))
        elif leaf == "gain":
            value = 1.0 + 0.2 * normal
        elif leaf in ("weight", "bias"):
            value = 0.1 * normal
        else:
            raise ValueError(f"no golden rule for {key}")
        state[key] = value.astype(np.float32)
    return state


def timm_golden_outputs():
    """timm's outputs for `timm_state_dict(seed=0)`: `{key: ndarray}`."""
    return dict(np.load(GOLDEN))


def write_safetensors(state, path):
    """Writes `state` as timm publishes it (`model.safetensors`), with the safetensors package."""
    from safetensors.numpy import save_file  # noqa: PLC0415  (only the tests that write files need it)

    save_file(state, str(path), metadata={"format": "pt"})
    return str(path)
