"""Deterministic timm-layout state dicts and inputs for the golden tests of timm's NFNets.

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

The NF-RegNet and NF-ResNet goldens (`GOLDEN_MODELS`) store no weights and no
inputs: `golden_timm_<model>.json` holds the recipe (`{"model", "seed",
"sizes", "timm", "state_dict": [[key, shape], ...], "params"}`), from which
`golden_state_dict(model)` draws the state dict by the rule above and
`golden_images(model, size)` the input; `golden_timm_<model>.npz` holds
timm's `logits_<size>` and `pool_<size>` for each size.
`tools/make_timm_goldens.py` writes both with timm itself.
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
    return state_dict_from_shapes(timm_spec()["state_dict"], seed)


def state_dict_from_shapes(shapes, seed):
    """Draws a timm state dict for `[(key, shape), ...]` (in state-dict order) by the module's rule."""
    state = {}
    for i, (key, shape) in enumerate(shapes):
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


#: One model of each new kind: NF-RegNet, NF-ResNet, SE- and ECA-NF-ResNet.
GOLDEN_MODELS = ("nf_regnet_b0", "nf_resnet26", "nf_seresnet26", "nf_ecaresnet26")
#: The input sides of their goldens: even and odd (timm's symmetric padding differs from SAME on even ones).
GOLDEN_SIZES = (64, 65)


def golden_paths(model):
    """`(recipe json, outputs npz)` of a model of `GOLDEN_MODELS`."""
    stem = os.path.join(FIXTURES_DIR, f"golden_timm_{model}")
    return stem + ".json", stem + ".npz"


def golden_recipe(model):
    """The golden's recipe: `{"model", "seed", "sizes", "timm", "state_dict": [(key, shape), ...], "params"}`."""
    with open(golden_paths(model)[0]) as handle:
        recipe = json.load(handle)
    recipe["state_dict"] = [(key, tuple(shape)) for key, shape in recipe["state_dict"]]
    return recipe


def golden_state_dict(model):
    """The state dict of `model`'s golden outputs, drawn from its recipe."""
    recipe = golden_recipe(model)
    return state_dict_from_shapes(recipe["state_dict"], recipe["seed"])


def golden_images(model, size):
    """Two NHWC float32 `size` x `size` inputs, N(0, 1), drawn from `model`'s recipe seed and `size`."""
    seed = golden_recipe(model)["seed"]
    return np.random.default_rng([seed, 1_000_000 + size]).standard_normal((2, size, size, 3)).astype(np.float32)


def golden_model_outputs(model):
    """timm's outputs for `golden_state_dict(model)`: `{"logits_<size>", "pool_<size>": ndarray}`."""
    with np.load(golden_paths(model)[1]) as outputs:
        return dict(outputs)


def write_safetensors(state, path):
    """Writes `state` as timm publishes it (`model.safetensors`), with the safetensors package."""
    from safetensors.numpy import save_file  # noqa: PLC0415  (only the tests that write files need it)

    save_file(state, str(path), metadata={"format": "pt"})
    return str(path)


def serve_on_a_file_hub(tmp_path, monkeypatch, repo_id, state):
    """Serves `state` as timm publishes it (`<repo_id>/model.safetensors`) from a file:// Hub; empty caches."""
    from nfnet_keras.weights import hub  # noqa: PLC0415  (only the Hub tests need it)

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf_cache"))
    monkeypatch.setenv(hub.ENDPOINT_ENV, (tmp_path / "hub").as_uri())
    path = tmp_path / "hub" / repo_id / "resolve" / "main" / "model.safetensors"
    path.parent.mkdir(parents=True)
    write_safetensors(state, path)
