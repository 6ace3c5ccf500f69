"""Writes the timm golden fixtures of the NF-RegNet and NF-ResNet tests, by running timm itself.

Needs PyTorch and timm (the fixtures were made with torch 2.13 and timm
1.0.31); nothing else in the repository imports this, and the tests only read
what it wrote. For each model of `support.timm_golden.GOLDEN_MODELS` it writes

- `tests/fixtures/golden_timm_<model>.json`: the recipe (seed, input sizes,
  timm's version, timm's state-dict keys and shapes in order, parameters);
- `tests/fixtures/golden_timm_<model>.npz`: timm's eval-mode `logits_<size>`
  and pooled features `pool_<size>` for the two inputs of each size.

The state dict and the inputs are drawn from the recipe with numpy by
`support.timm_golden` (the tests draw the same ones), so no weights are stored.

Usage: python tools/make_timm_goldens.py [--seed 0] [MODEL ...]
"""

import argparse
import json
import os
import sys

import numpy as np
import timm
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
from support import timm_golden  # noqa: E402


def write_recipe(model_name, model, seed):
    """Writes the model's recipe json from timm's own state dict (keys and shapes, in order)."""
    recipe = {
        "model": model_name,
        "seed": seed,
        "sizes": list(timm_golden.GOLDEN_SIZES),
        "timm": f"timm {timm.__version__}, torch {torch.__version__}, eval mode, float32, CPU",
        "state_dict": [[key, list(value.shape)] for key, value in model.state_dict().items()],
        "params": sum(p.numel() for p in model.parameters()),
    }
    with open(timm_golden.golden_paths(model_name)[0], "w") as handle:
        json.dump(recipe, handle)
        handle.write("\n")


def timm_outputs(model, images):
    """timm's logits and pooled features (`forward_head(pre_logits=True)`) for NHWC `images`."""
    with torch.no_grad():
        features = model.forward_features(torch.from_numpy(images.transpose(0, 3, 1, 2).copy()))
        pooled = model.forward_head(features, pre_logits=True)
        logits = model.forward_head(features)
    return logits.numpy(), pooled.numpy()


def make_golden(model_name, seed):
    model = timm.create_model(model_name).eval()
    write_recipe(model_name, model, seed)
    state = timm_golden.golden_state_dict(model_name)
    model.load_state_dict({key: torch.from_numpy(value) for key, value in state.items()}, strict=True)
    outputs = {}
    for size in timm_golden.GOLDEN_SIZES:
        logits, pooled = timm_outputs(model, timm_golden.golden_images(model_name, size))
        outputs[f"logits_{size}"], outputs[f"pool_{size}"] = logits, pooled
    np.savez_compressed(timm_golden.golden_paths(model_name)[1], **outputs)
    print(model_name, {key: value.shape for key, value in outputs.items()})


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=timm_golden.GOLDEN_MODELS)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    for model_name in args.models:
        make_golden(model_name, args.seed)


if __name__ == "__main__":
    main()
