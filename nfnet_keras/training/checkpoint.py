"""The resumable state of a `train.py` run: what it holds, how it is written and read back.

The checkpoint (`RunDirectory.checkpoint`, an `.npz`) holds every variable a
resumed run needs (model weights and RNG states, optimizer slots, the EMA,
the step counter) as `v0, v1, ...`, with their `count` and `paths` so that a
checkpoint of another model is refused, and the `step` it was taken at. It is
replaced atomically, so a killed run leaves the previous complete checkpoint.
The run configuration (`RunDirectory.run_config`) records the settings that
define the run; a directory written by other settings is refused.

Uses numpy and `keras.ops` only; imports without TensorFlow.
"""

import json
import os

import keras
import numpy as np

from nfnet_keras.training.plan import RunError
from nfnet_keras.weights import formats

__all__ = ["prepare_model_dir", "restore_state", "save_state", "saved_step", "state_variables"]


def state_variables(trainer):
    """Everything a resumed run needs: weights, RNG states, optimizer slots, EMA, step."""
    return list(trainer.variables) + list(trainer.optimizer.variables)


def save_state(trainer, path, step):
    """Writes the training state at `step` to `path` atomically, unless a weight is NaN or inf.

    Returns:
        Whether the state was written (a diverged state keeps the previous checkpoint).
    """
    variables = state_variables(trainer)
    arrays = {f"v{i}": np.asarray(keras.ops.convert_to_numpy(v)) for i, v in enumerate(variables)}
    if not all(np.isfinite(a).all() for a in arrays.values() if a.dtype.kind == "f"):
        return False
    arrays["count"] = np.asarray(len(variables))
    arrays["paths"] = np.asarray([v.path for v in variables])
    arrays["step"] = np.asarray(step)
    formats.write_npz_atomic(path, arrays)
    return True


def restore_state(trainer, path):
    """Assigns the state saved in `path` to the trainer's (built) variables.

    Raises:
        RunError: the checkpoint holds other variables or other shapes.
    """
    arrays = formats.read_npz(path)
    variables = state_variables(trainer)
    paths = [v.path for v in variables]
    if len(variables) != int(arrays["count"]) or list(arrays["paths"]) != paths:
        raise RunError(
            f"{path} holds {int(arrays['count'])} variables, the model {len(variables)}, or their names differ: "
            "it belongs to a different run"
        )
    for i, variable in enumerate(variables):
        value = arrays[f"v{i}"]
        if tuple(value.shape) != tuple(variable.shape):
            raise RunError(f"{path}: variable {i} ({variable.path}) has shape {value.shape}, expected {variable.shape}")
        variable.assign(value)


def saved_step(path):
    """The step of the checkpoint at `path`; 0 when there is none."""
    if not os.path.exists(path):
        return 0
    return int(formats.read_npz(path)["step"])


def prepare_model_dir(run_dir, config):
    """Creates the run directory, or checks that it holds this run; returns the step to resume from.

    Args:
        run_dir: a `nfnet_keras.weights.run_directory.RunDirectory`.
        config: the values that identify the run (`plan.run_config`).

    Raises:
        RunError: the directory holds a run with other settings.
    """
    os.makedirs(run_dir.path, exist_ok=True)
    if os.path.exists(run_dir.run_config):
        with open(run_dir.run_config) as handle:
            previous = json.load(handle)
        differences = sorted(k for k in set(previous) | set(config) if previous.get(k) != config.get(k))
        if differences:
            details = "; ".join(f"{k}: {previous.get(k)!r} there, {config.get(k)!r} now" for k in differences)
            raise RunError(
                f"--model_dir {run_dir.path} holds a different run ({details}). "
                "Use another --model_dir, or the same flags to resume."
            )
    else:
        with open(run_dir.run_config, "w") as handle:
            json.dump(config, handle, indent=2)
    return saved_step(run_dir.checkpoint)
