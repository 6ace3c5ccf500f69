"""The resumable state of a `train.py` run: what it holds, how it is written and read back.

The checkpoint (`RunDirectory.checkpoint`, an `.npz`) holds every variable a
resumed run needs (model weights and RNG states, optimizer slots, the EMA,
the step counter) as `v0, v1, ...`, with their `count` and `paths` so that a
checkpoint of another model is refused, and the `step` it was taken at. It is
replaced atomically, so a killed run leaves the previous complete checkpoint,
and a write that fails (a full disk) leaves it too and stops the run with a
`CheckpointWriteError`. A checkpoint that cannot be read (truncated, empty,
not an `.npz`, or an `.npz` of something else) stops the run at start-up with
a `RunError` that says what to do.

The run directory's identity: `prepare_model_dir` creates the directory and
checks the run config it holds (`RunDirectory.run_config`, written by
`plan.run_config`); a directory whose checkpoint was trained with other
training flags is refused, while a config without a checkpoint (a start that
failed) is no run yet and does not block. `record_run` writes the config once
training is about to start. `finished_results` recognises a run that is done.

Uses numpy and `keras.ops` only; imports without TensorFlow.
"""

import contextlib
import errno
import json
import os
import tempfile

import keras
import numpy as np

from nfnet_keras.training.plan import OTHER_KEYS, RunError, config_differences
from nfnet_keras.weights import formats

__all__ = [
    "CheckpointWriteError",
    "finished_results",
    "prepare_model_dir",
    "record_run",
    "restore_state",
    "save_state",
    "saved_step",
    "state_variables",
]

# The arrays beside v0, v1, ... that make an .npz a checkpoint of train.py.
_CHECKPOINT_KEYS = ("count", "paths", "step")

# What to do about an OSError that stopped a checkpoint write, by errno; anything else: fix the cause.
_WRITE_REMEDIES = {
    errno.ENOSPC: "free some disk space",
    errno.EDQUOT: "free some disk space (the disk quota is full)",
    errno.EACCES: "make the directory writable",
    errno.EPERM: "make the directory writable",
    errno.EROFS: "make the directory writable (it is on a read-only file system)",
}


class CheckpointWriteError(RunError):
    """A checkpoint could not be written (full disk, I/O error, no permission); the previous one is kept."""


def state_variables(trainer):
    """Everything a resumed run needs: weights, RNG states, optimizer slots, EMA, step."""
    return list(trainer.variables) + list(trainer.optimizer.variables)


def save_state(trainer, path, step):
    """Writes the training state at `step` to `path` atomically, unless a weight is NaN or inf.

    Returns:
        Whether the state was written (a diverged state keeps the previous checkpoint).

    Raises:
        CheckpointWriteError: the file system refused the write (the previous
            checkpoint is kept intact, and no temporary file is left behind).
    """
    variables = state_variables(trainer)
    arrays = {f"v{i}": np.asarray(keras.ops.convert_to_numpy(v)) for i, v in enumerate(variables)}
    if not all(np.isfinite(a).all() for a in arrays.values() if a.dtype.kind == "f"):
        return False
    arrays["count"] = np.asarray(len(variables))
    arrays["paths"] = np.asarray([v.path for v in variables])
    arrays["step"] = np.asarray(step)
    try:
        formats.write_npz_atomic(path, arrays)
    except OSError as error:
        raise CheckpointWriteError(_write_failure_message(path, step, error)) from error
    return True


def _write_failure_message(path, step, error):
    """One line: the file, the OS's reason, the lost step, the kept checkpoint and what to do."""
    reason = " ".join((error.strerror or str(error)).split())
    remedy = _WRITE_REMEDIES.get(error.errno, "fix the cause")
    try:
        kept = saved_step(path)
    except (RunError, OSError):
        kept = None
    if kept:
        outcome = (
            f"the last good checkpoint (step {kept}) is kept; {remedy} and run the same command again to resume from it"
        )
    elif kept is None:
        outcome = f"the file there is unreadable; {remedy}, then move it away and run the same command again"
    else:
        outcome = f"no earlier checkpoint exists; {remedy} and run the same command again to start over"
    return f"could not write the checkpoint of step {step} to {os.fspath(path)}: {reason}; {outcome}"


def restore_state(trainer, path):
    """Assigns the state saved in `path` to the trainer's (built) variables.

    Raises:
        RunError: the file is not a readable checkpoint, or holds other variables or other shapes.
    """
    arrays = _read_checkpoint(path)
    variables = state_variables(trainer)
    paths = [v.path for v in variables]
    count = int(arrays["count"])
    if len(variables) != count or list(arrays["paths"]) != paths:
        raise RunError(
            f"{path} holds {count} variables, the model {len(variables)}, or their names differ: "
            "it belongs to a different run"
        )
    missing = [f"v{i}" for i in range(count) if f"v{i}" not in arrays]
    if missing:
        raise _unreadable(path, f"it lacks the arrays {', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}")
    for i, variable in enumerate(variables):
        value = arrays[f"v{i}"]
        if tuple(value.shape) != tuple(variable.shape):
            raise RunError(f"{path}: variable {i} ({variable.path}) has shape {value.shape}, expected {variable.shape}")
        variable.assign(value)


def saved_step(path):
    """The step of the checkpoint at `path`; 0 when there is none.

    Reads only the archive's directory and its small arrays, not the variables.

    Raises:
        RunError: the file is not a readable checkpoint (truncated, empty, not an
            `.npz`, or an `.npz` without a checkpoint's arrays).
    """
    if not os.path.exists(path):
        return 0
    return int(_read_checkpoint(path, keys=_CHECKPOINT_KEYS)["step"])


def _read_checkpoint(path, keys=None):
    """The arrays of the checkpoint at `path` (only `keys`, if given), checked to be one of ours."""
    try:
        arrays = formats.read_npz(path, keys=keys)
    except formats.CheckpointError as error:
        raise _unreadable(path, str(error).removeprefix(f"{os.fspath(path)}: ")) from None
    missing = [key for key in _CHECKPOINT_KEYS if key not in arrays]
    if missing:
        raise _unreadable(path, f"it is not a train.py checkpoint (it lacks {', '.join(missing)})")
    if arrays["step"].shape != () or arrays["step"].dtype.kind not in "iu":
        raise _unreadable(path, f"its step is not an integer ({arrays['step'].dtype}, shape {arrays['step'].shape})")
    return arrays


def _unreadable(path, reason):
    return RunError(
        f"cannot resume from {os.fspath(path)}: {reason}. Move it away to start from step 0, or restore a good copy."
    )


def prepare_model_dir(run_dir, config):
    """Creates the run directory, or checks that it holds this run; returns the step to resume from.

    Writes nothing but the directory: `record_run` writes the config once training
    starts, so a start that fails leaves nothing that blocks the corrected command.
    A config without a checkpoint (a start that failed before its first checkpoint)
    is no run yet and is not compared.

    Args:
        run_dir: a `nfnet_keras.weights.run_directory.RunDirectory`.
        config: the values that identify the run (`plan.run_config`).

    Raises:
        RunError: `--model_dir` is a file; the directory's checkpoint is unreadable;
            or it was trained with other training flags (naming each, both values).
    """
    if os.path.exists(run_dir.path) and not os.path.isdir(run_dir.path):
        raise RunError(f"--model_dir {run_dir.path} is a file, not a directory: name a directory for the run")
    os.makedirs(run_dir.path, exist_ok=True)
    step = saved_step(run_dir.checkpoint)
    if step and os.path.exists(run_dir.run_config):
        differences = config_differences(_read_run_config(run_dir), config)
        if differences:
            raise RunError(
                f"--model_dir {run_dir.path} holds a different run ({'; '.join(differences)}): use another "
                "--model_dir, or the same training flags to resume it (flags that do not change the training "
                f"may differ: {', '.join(f'--{key}' for key in OTHER_KEYS)})"
            )
    return step


def _read_run_config(run_dir):
    try:
        with open(run_dir.run_config) as handle:
            stored = json.load(handle)
    except ValueError:  # not JSON (UnicodeDecodeError is a ValueError too)
        stored = None
    if not isinstance(stored, dict):
        raise RunError(
            f"{run_dir.run_config} is not a run config (a JSON object), so the run in {run_dir.path} cannot be "
            "checked: delete it to resume with the current flags, or use another --model_dir"
        )
    return stored


def record_run(run_dir, config):
    """Writes the run config into the run directory atomically (call it when training is about to start)."""
    handle = tempfile.NamedTemporaryFile(  # noqa: SIM115  (closed below; renamed or removed)
        "w", dir=run_dir.path, prefix=f".{os.path.basename(run_dir.run_config)}.", suffix=".tmp", delete=False
    )
    try:
        with handle:
            json.dump(config, handle, indent=2)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, run_dir.run_config)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(handle.name)
        raise


def finished_results(run_dir):
    """The results of the finished run in `run_dir`; None when it holds no finished run.

    A run is finished when its results file exists and its checkpoint is at the
    results' `steps`.

    Raises:
        RunError: the checkpoint is unreadable.
    """
    try:
        with open(run_dir.results) as handle:
            results = json.load(handle)
    except (OSError, ValueError):
        return None
    if not isinstance(results, dict) or not isinstance(results.get("steps"), int):
        return None
    step = saved_step(run_dir.checkpoint)
    return results if step and step == results["steps"] else None
