"""Deterministic DeepMind-layout parameters for the golden-output tests.

Each golden set in `tests/fixtures/` holds DeepMind's Haiku outputs for parameters
built here from a spec (the checkpoint tree: module, param, shape) and a seed:
`golden_F0_seed0.npz` for NFNet-F0 (`spec_F0.json`, DeepMind's `nfnet.py`) and
`golden_dm_nf_regnet_B0_seed0.npz` for NF-RegNet-B0 (`spec_dm_nf_regnet_B0.json`,
`nf_regnet.py` with `activation='silu'`). Triple i of a spec draws from
`np.random.default_rng([seed, i])`; `w` ~ N(0, 1/fan_in), `gain` ~ 1 + 0.2 N,
`bias`/`b` ~ 0.1 N, `skip_gain` ~ 0.3 + 0.1 N, all float32 and all moved off their
inits (a zero skip gain would hide block bugs). The golden npz files hold `x`,
`logits`, `pool`, `x_odd` and `logits_odd` (and for F0 the signal metrics).
"""

import json
import os
import pickle

import numpy as np

from nfnet_keras.weights.loading import model_weights

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures")
#: registry name: (spec, golden outputs), in `DATA`.
GOLDEN_SETS = {
    "nfnet_f0": ("spec_F0.json", "golden_F0_seed0.npz"),
    "nf_regnet_b0": ("spec_dm_nf_regnet_B0.json", "golden_dm_nf_regnet_B0_seed0.npz"),
}
F0 = "nfnet_f0"


def golden_params(seed=0, model=F0):
    """`{module: {param: float32 ndarray}}` of golden set `model`, in DeepMind's checkpoint naming."""
    with open(os.path.join(DATA, GOLDEN_SETS[model][0])) as handle:
        spec = json.load(handle)
    params = {}
    for i, (module, name, shape) in enumerate(spec):
        rng = np.random.default_rng([seed, i])
        shape = tuple(shape)
        normal = rng.standard_normal(shape)
        if name == "w":
            value = normal / np.sqrt(int(np.prod(shape[:-1])))
        elif name == "gain":
            value = 1.0 + 0.2 * normal
        elif name in ("bias", "b"):
            value = 0.1 * normal
        elif name == "skip_gain":
            value = 0.3 + 0.1 * normal
        else:
            raise ValueError(f"unknown parameter {module}/{name}")
        params.setdefault(module, {})[name] = value.astype(np.float32)
    return params


def write_golden_checkpoint(path, seed=0, model=F0):
    """Writes golden set `model`'s parameters in the plain-dict pickle form of the published checkpoint."""
    with open(path, "wb") as handle:
        pickle.dump(golden_params(seed, model), handle, protocol=4)
    return path


def golden_outputs(model=F0):
    """DeepMind's outputs of golden set `model`: `{key: ndarray}`."""
    return dict(np.load(os.path.join(DATA, GOLDEN_SETS[model][1])))


def relative_error(actual, expected):
    """max |actual - expected| / max |expected| (a norm-wise relative error)."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    return float(np.max(np.abs(actual - expected)) / np.max(np.abs(expected)))


def keras_to_dm(flat, root="NFNet"):
    """Test oracle: `{keras_key: array}` -> DeepMind's `{module: {param: array}}` naming.

    `root` is the Haiku module of the family: `NFNet`, `NF_RegNet` or `NF_ResNet`.
    """
    tree = {}
    for key, value in flat.items():
        *scope, name = key.split("/")
        if scope[0] == "predictions":
            scope = ["linear"]
        elif scope[0] == "nf_block_0":
            scope[0] = "nf_block"
        if name == "kernel":
            name = "w"
        elif name == "bias" and (scope[-1].startswith("linear")):
            name = "b"
        tree.setdefault("/~/".join([root] + scope), {})[name] = value
    return tree


def write_perturbed_checkpoint(model, path, root, seed=0):
    """Writes every weight of `model`, moved off its init, as a DeepMind-layout pickle under `root`.

    Gains ~ U(0.5, 1.5), biases ~ N(0, 0.1), kernels ~ N(0, 1/fan_in). Returns the
    `{module: {param: array}}` tree written.
    """
    rng = np.random.default_rng(seed)
    flat = {}
    for key, variable in model_weights(model).items():
        shape = tuple(variable.shape)
        if key.endswith("gain"):  # skip gains and conv gains
            value = rng.uniform(0.5, 1.5, shape)
        elif key.endswith("bias"):
            value = rng.normal(0.0, 0.1, shape)
        else:
            value = rng.normal(0.0, 1.0 / np.sqrt(np.prod(shape[:-1])), shape)
        flat[key] = value.astype(np.float32)
    tree = keras_to_dm(flat, root=root)
    with open(path, "wb") as handle:
        pickle.dump(tree, handle, protocol=4)
    return tree


def keras_to_timm(flat, depths):
    """Test oracle: `{keras_key: array}` -> timm's dm_nfnet state dict (PyTorch layouts)."""
    stage_of = [(s, b) for s, d in enumerate(depths) for b in range(d)]
    convs = {"conv0": "conv1", "conv1": "conv2", "conv1b": "conv2b", "conv2": "conv3", "conv_shortcut": "downsample.conv"}
    state = {}
    for key, value in flat.items():
        parts = key.split("/")
        if parts[0].startswith("stem_conv"):
            prefix = f"stem.conv{int(parts[0][-1]) + 1}"
        elif parts[0] == "final_conv":
            prefix = "final_conv"
        elif parts[0] == "predictions":
            state[f"head.fc.{'weight' if parts[1] == 'kernel' else 'bias'}"] = value.T if value.ndim == 2 else value
            continue
        else:
            s, b = stage_of[int(parts[0].split("_")[-1])]
            block = f"stages.{s}.{b}"
            if parts[1] == "skip_gain":
                state[f"{block}.skipinit_gain"] = value
                continue
            if parts[1] == "squeeze_excite":
                fc = "fc1" if parts[2] == "linear" else "fc2"
                if parts[3] == "kernel":
                    state[f"{block}.attn_last.{fc}.weight"] = value.T[:, :, None, None]
                else:
                    state[f"{block}.attn_last.{fc}.bias"] = value
                continue
            prefix = f"{block}.{convs[parts[1]]}"
        name = parts[-1]
        if name == "kernel":
            state[f"{prefix}.weight"] = np.transpose(value, (3, 2, 0, 1))
        elif name == "gain":
            state[f"{prefix}.gain"] = value.reshape(-1, 1, 1, 1)
        else:
            state[f"{prefix}.bias"] = value
    return {k: np.array(v, order="C") for k, v in state.items()}
