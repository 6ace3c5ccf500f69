"""Everything about the weight EMA except its update: swap it in, evaluate with it, save it.

DeepMind evaluates both the raw parameters and their exponential moving
average (`ema_` metrics). In nfnet_keras the average lives in the optimizer
(`nfnet_keras.training.optimizers.NFNetSGD(ema_decay=...)` or any
`with_agc(...)` optimizer), which updates it after every step and exposes it
as `optimizer.average_variables`; `optimizer.swap_average_weights(var_list)`
swaps it with the model weights in place (a second call swaps back). This
module holds the one swap (`swap_weights`) and what is built on it:

- `ema_weights(model)`: context manager, EMA weights in the model inside the
  `with` block, raw weights restored afterwards (also on exceptions).
- `EMAEvaluation(validation_data)`: callback logging `val_ema_<metric>` each
  epoch (swap in, `evaluate`, swap back).
- `save_ema_weights(model, filepath)` and `EMACheckpoint(filepath)`: write the
  EMA weights as a `.weights.h5` file (by default those of the wrapped network
  of an `NFNetTrainer`, so the file loads straight into `nfnet_keras.NFNet`).

Checkpoints: the averages are optimizer variables, so a full `.keras` save
(`model.save(...)`, `keras.callbacks.ModelCheckpoint(..., save_weights_only=
False)`) keeps the raw weights *and* the EMA (and momentum, step counter);
`keras.saving.load_model` restores both. A `.weights.h5` file holds the layer
weights only.

Keras' own `keras.callbacks.SwapEMAWeights` cannot be reused: it requires
Keras' `use_ema=True` machinery, which `NFNetSGD` deliberately does not use
(Keras' `use_ema` overwrites the model weights with the average at the end of
`fit`). For a plain Keras optimizer with `use_ema=True` the helpers here swap
its averages instead (read through `nfnet_keras.keras_internals`).

Uses `keras.ops` only; imports without TensorFlow.
"""

import contextlib

import keras
from keras import ops

from nfnet_keras.checks import check_integer
from nfnet_keras import keras_internals
from nfnet_keras.training import distribution
from nfnet_keras.training.sam import NFNetTrainer

__all__ = [
    "EMACheckpoint",
    "EMAEvaluation",
    "ema_optimizer",
    "ema_weights",
    "save_ema_weights",
    "swap_weights",
]


def swap_weights(variables, averages):
    """Swaps each variable with its average in place (a second call swaps back).

    Call it eagerly (outside a traced function). Works with mirrored variables
    (cross-replica context) and on JAX.

    Args:
        variables: the model variables.
        averages: their averages, aligned with `variables`; `None` entries are skipped.

    Raises:
        ValueError: the lists differ in length, or a variable and its average in shape.
    """
    variables, averages = list(variables), list(averages)
    if len(variables) != len(averages):
        raise ValueError(f"got {len(variables)} variables, the optimizer holds {len(averages)} averages")
    for variable, average in zip(variables, averages):
        if average is None:
            continue
        if tuple(variable.shape) != tuple(average.shape):
            raise ValueError(
                f"shape mismatch: variable {getattr(variable, 'path', variable.name)} "
                f"{tuple(variable.shape)} vs average {tuple(average.shape)}"
            )
        # Copies: on TensorFlow a converted variable still reads the variable.
        model_value = ops.copy(ops.convert_to_tensor(variable))
        average_value = ops.copy(ops.convert_to_tensor(average))
        variable.assign(average_value)
        average.assign(model_value)


def ema_optimizer(optimizer):
    """The optimizer that holds the weight EMA (unwraps `LossScaleOptimizer`).

    Raises:
        ValueError: if it keeps no EMA.
    """
    if optimizer is None:
        raise ValueError("the model has no optimizer: compile it with an EMA optimizer first")
    inner = getattr(optimizer, "inner_optimizer", None)
    if inner is not None:
        optimizer = inner
    if hasattr(optimizer, "swap_average_weights"):
        if getattr(optimizer, "ema_decay", 0) is None:
            raise ValueError(
                f"{type(optimizer).__name__} keeps no weight EMA: pass ema_decay=... (e.g. 0.99999)"
            )
        return optimizer
    if getattr(optimizer, "use_ema", False):
        return optimizer
    raise ValueError(
        f"{type(optimizer).__name__} keeps no weight EMA: use nfnet_keras.training.optimizers.NFNetSGD("
        "ema_decay=...) (or a Keras optimizer with use_ema=True)"
    )


def _swap(optimizer, var_list):
    """Swaps `var_list` with the averages `optimizer` keeps for them."""
    if hasattr(optimizer, "swap_average_weights"):
        optimizer.swap_average_weights(var_list)
        return
    averages = keras_internals.moving_average_variables(optimizer)
    swap_weights(var_list, [averages[keras_internals.variable_index(optimizer, v)] for v in var_list])


@contextlib.contextmanager
def ema_weights(model, optimizer=None, var_list=None):
    """Context manager: the model holds its EMA weights inside the block.

    Call eagerly (not inside a traced function). The raw weights are restored
    on exit, also when the block raises.

    Args:
        model: the model that was compiled with the EMA optimizer.
        optimizer: defaults to `model.optimizer`.
        var_list: the variables the optimizer was built with; defaults to
            `model.trainable_variables`.
    """
    opt = ema_optimizer(optimizer if optimizer is not None else model.optimizer)
    if not opt.built:
        raise ValueError("the optimizer is not built yet (train for a step or call optimizer.build)")
    variables = list(model.trainable_variables if var_list is None else var_list)
    _swap(opt, variables)
    try:
        yield model
    finally:
        _swap(opt, variables)


def save_ema_weights(model, filepath, target=None, optimizer=None, overwrite=True):
    """Write the EMA weights to `filepath` (`.weights.h5`); only process 0 writes.

    Args:
        model: the compiled (trainer) model whose optimizer holds the EMA.
        filepath: must end in `.weights.h5`.
        target: the model whose `save_weights` is called; defaults to the
            wrapped network of an `NFNetTrainer` (loadable with
            `NFNet(...).load_weights(filepath)`), else `model`.
        optimizer: defaults to `model.optimizer`.
        overwrite: passed to `save_weights`.
    """
    if target is None:
        target = model.model if isinstance(model, NFNetTrainer) else model
    with ema_weights(model, optimizer=optimizer):
        if distribution.is_chief():
            target.save_weights(filepath, overwrite=overwrite)


class EMAEvaluation(keras.callbacks.Callback):
    """Evaluates with the EMA weights at the end of epochs; logs `val_ema_*`.

    (Not registered for serialisation: it holds the validation data.)

    At each `frequency`-th epoch end: swap the EMA weights in, run
    `model.evaluate(validation_data)`, swap the raw weights back, and add the
    results to the epoch logs as `<prefix><name>` (e.g. `val_ema_loss`,
    `val_ema_accuracy`). Callbacks placed *after* this one in the list (e.g.
    `ModelCheckpoint(monitor="val_ema_accuracy")`) and the `History` see
    them.

    Args:
        validation_data: what `evaluate` accepts: a `tf.data.Dataset`, a
            `PyDataset`, or a tuple `(x, y)` / `(x, y, sample_weight)`.
        batch_size: for array inputs.
        steps: number of evaluation steps (datasets).
        frequency: evaluate every `frequency` epochs (and never in between).
        prefix: name prefix of the logged metrics.
        verbose: `evaluate` verbosity.
    """

    def __init__(self, validation_data, batch_size=None, steps=None, frequency=1, prefix="val_ema_", verbose=0):
        super().__init__()
        self.validation_data = validation_data
        self.batch_size = batch_size
        self.steps = steps
        self.frequency = check_integer(frequency, "frequency")
        self.prefix = prefix
        self.verbose = verbose

    def evaluate_ema(self):
        """Evaluates the model with EMA weights now; returns `{prefix+name: value}`."""
        data = self.validation_data
        if isinstance(data, (tuple, list)):
            x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(tuple(data))
        else:
            x, y, sample_weight = data, None, None
        with ema_weights(self.model):
            results = self.model.evaluate(
                x,
                y,
                sample_weight=sample_weight,
                batch_size=self.batch_size,
                steps=self.steps,
                verbose=self.verbose,
                return_dict=True,
            )
        return {self.prefix + k: float(v) for k, v in results.items()}

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.frequency:
            return
        results = self.evaluate_ema()
        if logs is not None:
            logs.update(results)


@keras.saving.register_keras_serializable(package="nfnet_keras")
class EMACheckpoint(keras.callbacks.Callback):
    """Saves the EMA weights (`.weights.h5`) at the end of epochs.

    Args:
        filepath: `.weights.h5` path; may contain `{epoch}` (1-based, like
            `ModelCheckpoint`) and epoch-log keys, e.g.
            `"ema_{epoch:03d}.weights.h5"`.
        frequency: save every `frequency` epochs.
        target: model whose weights are written; default: the wrapped
            network of an `NFNetTrainer`, else the model (see
            `save_ema_weights`).

    Only process 0 writes in a multi-process JAX run.
    """

    def __init__(self, filepath, frequency=1, target=None):
        super().__init__()
        if not str(filepath).endswith(".weights.h5"):
            raise ValueError(f"filepath must end in .weights.h5, got {filepath!r}")
        self.filepath = str(filepath)
        self.frequency = check_integer(frequency, "frequency")
        self.target = target
        self.last_filepath = None

    def get_config(self):
        """Config (`filepath`, `frequency`); a custom `target` is not serialised."""
        return {"filepath": self.filepath, "frequency": self.frequency}

    @classmethod
    def from_config(cls, config):
        """Inverse of `get_config`."""
        return cls(**config)

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.frequency:
            return
        path = self.filepath.format(epoch=epoch + 1, **(logs or {}))
        save_ema_weights(self.model, path, target=self.target)
        self.last_filepath = path
