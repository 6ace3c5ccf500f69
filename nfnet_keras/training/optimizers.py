"""Optimizers with Adaptive Gradient Clipping (AGC), the NFNet SGD and weight EMA.

Where AGC runs
--------------
AGC, the coupled weight decay and the EMA update all live in
`update_step(gradient, variable, learning_rate)`, the one per-variable hook
that every Keras 3 backend calls with the gradient that is actually applied:

- TensorFlow + `tf.distribute.MirroredStrategy`: `update_step` runs inside
  `strategy.extended.update` *after* the cross-replica all-reduce (SUM).  The
  `_clip_gradients` hook, by contrast, sees each replica's local gradient, so
  clipping there would clip every replica separately (not what DeepMind does).
- JAX (also with `keras.distribution.DataParallel`): `update_step` is traced
  inside `stateless_apply` on the global gradient.
- `mixed_float16`: `keras.optimizers.LossScaleOptimizer` wraps these optimizers
  as its `inner_optimizer` and calls `inner.apply` with *unscaled* gradients,
  so AGC never sees loss-scaled gradients.  Model variables (and therefore the
  AGC parameter norms and every optimizer slot) stay float32 under both mixed
  policies.

Which variables are clipped or decayed is decided once, in `build(var_list)`,
from `keras.Variable.path` (regular expressions searched with `re.search`),
and stored by index; `update_step` looks the flags up by the variable's index
in the built list (`keras_internals.variable_index`: Keras offers no public
way).  (Inside `update_step` on TF the variable is a raw `tf.Variable` without
`.path`.)

Classes
-------
- `AGCMixin`: adds AGC (+ weight EMA) to any Keras optimizer.  `with_agc(cls)`
  builds and registers such a subclass; `AGCSGD`, `AGCAdam`, `AGCAdamW` are
  ready-made.
- `NFNetSGD`: DeepMind's `SGD_AGC` update (AGC -> coupled weight decay ->
  Nesterov momentum with the learning rate outside the buffer).

Weight EMA
----------
`ema_decay=0.99999` (off with `None`) keeps DeepMind's "tf1_ema" average of
the weights in optimizer variables, so it is checkpointed with the optimizer:
`decay_t = min(ema_decay, (1 + t) / (10 + t))`, `t` = the step before the
update, `ema = decay_t * ema + (1 - decay_t) * param` after each update.  The
average starts equal to the parameters (at step 0 it is taken from the
parameters as they are just before the first update, so weights loaded after
`build` are respected).  This is *not* Keras' `use_ema`: the model weights are
never overwritten (no `finalize_variable_values` at the end of `fit`).  Use
`average_variables` and `swap_average_weights(var_list)`, or the helpers of
`nfnet_keras.training.ema` built on them, to evaluate or save the averaged
weights.

Uses `keras.ops` only (and, on the TensorFlow backend alone, TensorFlow's
`executing_eagerly`, imported when needed); imports without TensorFlow.
"""

import re

import keras
from keras import ops

from nfnet_keras import keras_internals
from nfnet_keras.training import ema
from nfnet_keras.training.agc import agc_scale, unit_count

__all__ = [
    "AGCMixin",
    "with_agc",
    "AGCSGD",
    "AGCAdam",
    "AGCAdamW",
    "NFNetSGD",
    "get",
    "DEFAULT_AGC_EXCLUDE",
    "DEFAULT_DECAY_EXCLUDE",
]

#: Variables AGC skips by default: the classifier kernel only (its bias is clipped).
DEFAULT_AGC_EXCLUDE = ("predictions/kernel",)
#: Variables without weight decay by default: every gain, bias and skip gain.
DEFAULT_DECAY_EXCLUDE = ("gain$", "bias$")


def _variable_path(variable):
    """Path of a model variable, e.g. `nf_block_3/conv1/kernel`."""
    path = getattr(variable, "path", None)
    if path is None:
        # Raw tf.Variable: "nf_block_3/conv1/kernel:0" or ".../replica_1:0".
        path = str(variable.name)
        path = re.sub(r":\d+$", "", path)
        path = re.sub(r"/replica_\d+$", "", path)
    return path


def _read(variable):
    """The current value of `variable` as a tensor that later assignments do not change.

    (On TF `ops.convert_to_tensor(tf_variable)` returns the variable itself,
    whose later reads would see the update.)
    """
    return ops.copy(ops.convert_to_tensor(variable))


def _densify(gradient, shape):
    """Dense tensor from a sparse row gradient (TF `IndexedSlices` of an Embedding).

    AGC needs whole units (columns), so sparse gradients of clipped variables
    are scattered into a dense tensor (duplicate rows are summed).
    """
    if type(gradient).__name__ != "IndexedSlices":
        return gradient
    indices = ops.expand_dims(ops.cast(gradient.indices, "int32"), -1)
    return ops.scatter(indices, gradient.values, shape)


def _as_patterns(patterns):
    if patterns is None:
        return ()
    if isinstance(patterns, str):
        return (patterns,)
    return tuple(patterns)


def _matches(path, compiled):
    return any(p.search(path) is not None for p in compiled)


class AGCMixin:
    """Adds Adaptive Gradient Clipping and a weight EMA to a Keras optimizer.

    Put it first in the bases: `class MyOpt(AGCMixin, keras.optimizers.Adam)`
    (or use `with_agc(keras.optimizers.Adam)`).  Per variable, `update_step`
    does:

    1. cast the (all-reduced, unscaled) gradient to the variable dtype;
    2. AGC with the float32 master parameter, unless the variable path matches
       one of `agc_exclude` (default: the classifier kernel, `predictions/kernel`);
    3. the wrapped optimizer's own `update_step`;
    4. the EMA update, if `ema_decay` is set.

    Args:
        clipping: AGC threshold lambda (0.01 in the paper), or `None` to turn
            AGC off.
        eps: AGC floor under the parameter norm (1e-3).
        agc_exclude: regular expressions, searched in each variable path; a
            match means "not clipped".
        ema_decay: `None` (no EMA) or the EMA decay, e.g. 0.99999.
        **kwargs: arguments of the wrapped Keras optimizer.

    Attributes (after `build`):
        agc_clipped_units: float32 vector, one entry per variable: how many
            units AGC rescaled at that variable's last update.
        clip_fraction: scalar tensor, the fraction of AGC units (over all
            clipped variables) rescaled at the last step.
        average_variables: the EMA copies, aligned with the built var list.
    """

    def __init__(
        self,
        *args,
        clipping=0.01,
        eps=1e-3,
        agc_exclude=DEFAULT_AGC_EXCLUDE,
        ema_decay=None,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        if clipping is not None and not clipping > 0:
            raise ValueError(f"clipping must be > 0 or None, got {clipping}")
        if not eps >= 0:
            raise ValueError(f"eps must be >= 0, got {eps}")
        if ema_decay is not None and not 0.0 <= ema_decay <= 1.0:
            raise ValueError(f"ema_decay must be in [0, 1] or None, got {ema_decay}")
        self.clipping = None if clipping is None else float(clipping)
        self.eps = float(eps)
        self.agc_exclude = _as_patterns(agc_exclude)
        self._agc_exclude_re = [re.compile(p) for p in self.agc_exclude]
        self.ema_decay = None if ema_decay is None else float(ema_decay)

    # ------------------------------------------------------------------ build
    def build(self, variables):
        """Creates the wrapped optimizer's slots, the EMA copies and AGC flags."""
        if self.built:
            return
        super().build(variables)
        paths = [_variable_path(v) for v in variables]
        self._agc_flags = [
            self.clipping is not None and not _matches(path, self._agc_exclude_re)
            for path in paths
        ]
        self._agc_total_units = sum(
            unit_count(tuple(v.shape)) for v, flag in zip(variables, self._agc_flags) if flag
        )
        # One scalar counter per clipped variable: each update_step writes only its
        # own, so the per-variable updates stay independent (no shared read-modify-write).
        self._clip_counts = [
            self.add_variable(shape=(), dtype="float32", name=path.replace("/", "_") + "_agc_clipped")
            if flag
            else None
            for path, flag in zip(paths, self._agc_flags)
        ]
        self._ema_variables = None
        if self.ema_decay is not None:
            self._ema_variables = []
            for v in variables:
                self._ema_variables.append(
                    self.add_variable_from_reference(
                        v, name="ema", initializer=_ValueInitializer(v)
                    )
                )

    # ------------------------------------------------------------ update step
    def update_step(self, gradient, variable, learning_rate):
        """AGC on the reduced gradient, the wrapped update, then the EMA update."""
        index = keras_internals.variable_index(self, variable)
        if self._agc_flags[index]:
            gradient = _densify(gradient, tuple(variable.shape))
        gradient = ops.cast(gradient, variable.dtype)
        average_start = None
        if self._ema_variables is not None:
            average_start = self._average_start(variable, index)
        if self._agc_flags[index]:
            # The unit-shaped AGC factor, applied in the one multiply below.
            scale, trigger = agc_scale(gradient, variable, self.clipping, self.eps)
            self.assign(self._clip_counts[index], ops.sum(ops.cast(trigger, "float32")))
            gradient = ops.multiply(gradient, ops.cast(scale, gradient.dtype))
        self._base_update_step(gradient, variable, learning_rate, index)
        if self._ema_variables is not None:
            self._update_average(variable, average_start, index)

    def _base_update_step(self, gradient, variable, learning_rate, index):
        super().update_step(gradient, variable, learning_rate)

    def _average_start(self, variable, index):
        """The average the EMA update starts from: the parameter itself at step 0.

        DeepMind initialises the EMA to the parameters; taking them at the
        first step (not only at `build`) also covers weights loaded after the
        optimizer was built.  A `cond` rather than an elementwise `where`, so
        the parameter is read (and, on TF, kept from the update by a copy)
        only at step 0: the later steps cost no extra pass over the weights.
        """
        average = self._ema_variables[index]
        if average is None:
            return None
        return ops.cond(
            ops.equal(self.iterations, 0),
            lambda: _read(variable),
            lambda: ops.convert_to_tensor(average),
        )

    def _update_average(self, variable, previous, index):
        average = self._ema_variables[index]
        if average is None:
            return
        dtype = variable.dtype
        step = ops.cast(self.iterations, "float32")
        decay = ops.minimum(
            ops.cast(self.ema_decay, "float32"), (1.0 + step) / (10.0 + step)
        )
        decay = ops.cast(decay, dtype)
        current = ops.convert_to_tensor(variable)
        self.assign(
            average,
            ops.add(ops.multiply(decay, previous), ops.multiply(1 - decay, current)),
        )

    # --------------------------------------------------------------- logging
    @property
    def clip_fraction(self):
        """Fraction of AGC units rescaled at the last step (float32 scalar).

        Counts come from `agc_clipped_units`; a variable that got no gradient
        in the last step keeps its previous count.  Read it eagerly (e.g. in a
        callback) or inside the same traced step on TF; on JAX inside a
        stateless step read `agc_clipped_units` from the optimizer state.
        """
        total = max(self._agc_total_units, 1)
        return ops.sum(self.agc_clipped_units) / float(total)

    @property
    def agc_clipped_units(self):
        """float32 vector, one entry per variable: units AGC rescaled at its last update (0 if excluded)."""
        if not self.built:
            raise ValueError("the optimizer is not built yet")
        zero = ops.zeros((), "float32")
        return ops.stack([zero if c is None else ops.cast(c, "float32") for c in self._clip_counts])

    # ------------------------------------------------------------------- EMA
    @property
    def average_variables(self):
        """EMA copies of the weights, aligned with the var list of `build`."""
        if self.ema_decay is None:
            raise ValueError("this optimizer keeps no weight EMA (ema_decay=None)")
        if not self.built:
            raise ValueError("the optimizer is not built yet")
        return list(self._ema_variables)

    def swap_average_weights(self, var_list=None):
        """Swaps the model weights and their EMA in place; a second call restores.

        Call it eagerly (outside a traced function), e.g. from a callback.
        Works with mirrored variables (cross-replica context) and on JAX.

        Args:
            var_list: the model variables, in the order the optimizer was built
                with (`model.trainable_variables`); defaults to that list.
        """
        averages = self.average_variables
        if var_list is None:
            var_list = keras_internals.built_variables(self)
        ema.swap_weights(var_list, averages)

    # ---------------------------------------------------------------- config
    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "clipping": self.clipping,
                "eps": self.eps,
                "agc_exclude": list(self.agc_exclude),
                "ema_decay": self.ema_decay,
            }
        )
        return config


def _tracing_a_tensorflow_function():
    """True while TensorFlow traces a function (on other backends the optimizer is built eagerly)."""
    if keras.backend.backend() != "tensorflow":
        return False
    import tensorflow as tf  # noqa: PLC0415  (TensorFlow backend only)

    return not tf.executing_eagerly()


class _ValueInitializer:
    """Initializer returning the current value of a variable (EMA start).

    Zeros when the optimizer is built inside a traced TensorFlow function
    (Keras builds it in the first train step when no distribution strategy is
    set): TensorFlow cannot lift an initializer that reads another variable out
    of an XLA-compiled function (`jit_compile=True`; Keras' "auto" on one GPU).
    The value is never used there: the first update starts the average from
    the parameters (`AGCMixin._average_start`).
    """

    def __init__(self, variable):
        self.variable = variable

    def __call__(self, shape, dtype=None):
        if _tracing_a_tensorflow_function():
            return ops.zeros(shape, dtype=dtype or self.variable.dtype)
        value = ops.convert_to_tensor(self.variable)
        if dtype is not None:
            value = ops.cast(value, dtype)
        return ops.copy(value)


_AGC_CLASSES = {}


def with_agc(optimizer_class, name=None):
    """Returns (and registers) `optimizer_class` with AGC and the weight EMA.

    The new class is `type(name, (AGCMixin, optimizer_class), ...)`,
    registered as `nfnet_keras>{name}` so it can be saved and loaded (call
    `with_agc` for the same class before loading).  The same class object is
    returned for repeated calls.

    Args:
        optimizer_class: a Keras optimizer class, e.g. `keras.optimizers.Lion`.
        name: class name; default `"AGC" + optimizer_class.__name__`.

    Example:
        >>> AGCLion = with_agc(keras.optimizers.Lion)
        >>> opt = AGCLion(learning_rate=1e-4, clipping=0.01)
    """
    if not (isinstance(optimizer_class, type) and issubclass(optimizer_class, keras.optimizers.Optimizer)):
        raise TypeError(f"expected a keras.optimizers.Optimizer subclass, got {optimizer_class!r}")
    if issubclass(optimizer_class, AGCMixin):
        return optimizer_class
    name = name or f"AGC{optimizer_class.__name__}"
    key = (optimizer_class, name)
    if key in _AGC_CLASSES:
        return _AGC_CLASSES[key]
    doc = (
        f"`{optimizer_class.__module__}.{optimizer_class.__name__}` with "
        "Adaptive Gradient Clipping on the all-reduced gradient and an optional "
        "weight EMA.\n\n"
        "Extra arguments: `clipping=0.01`, `eps=1e-3`, "
        "`agc_exclude=('predictions/kernel',)`, `ema_decay=None`; see "
        "`nfnet_keras.training.optimizers.AGCMixin`.  All other arguments are those of "
        f"`{optimizer_class.__name__}` (its `weight_decay`, if any, is Keras' "
        "decoupled decay, applied before `update_step`)."
    )
    cls = type(name, (AGCMixin, optimizer_class), {"__doc__": doc, "__module__": __name__})
    cls = keras.saving.register_keras_serializable(package="nfnet_keras", name=name)(cls)
    _AGC_CLASSES[key] = cls
    return cls


AGCSGD = with_agc(keras.optimizers.SGD)
AGCAdam = with_agc(keras.optimizers.Adam)
AGCAdamW = with_agc(keras.optimizers.AdamW)


@keras.saving.register_keras_serializable(package="nfnet_keras")
class NFNetSGD(AGCMixin, keras.optimizers.Optimizer):
    """The NFNet paper's optimizer: DeepMind's `SGD_AGC`, per parameter.

    On the all-reduced, unscaled gradient `g` of parameter `p`:

    (a) AGC: `g = agc(g, p)` with the float32 master `p`, unless `p`'s path
        matches `agc_exclude` (default: only the classifier kernel);
    (b) coupled weight decay: `g += weight_decay * p`, except for paths matching
        `decay_exclude` (default: every `gain`, `bias` and `skip_gain`,
        including the classifier bias);
    (c) `buf = momentum * buf + g`;
    (d) Nesterov: `g = g + momentum * buf` (without Nesterov: `g = buf`);
    (e) `p -= lr(step) * g`, `lr` evaluated at the step before the update.

    Unlike `keras.optimizers.SGD`, the learning rate is kept *outside* the
    momentum buffer (identical under a constant lr, different while the
    schedule moves).  Keras' own `weight_decay` mechanism is not used
    (`self.weight_decay` of the Keras base stays `None`); the decay rate is
    `self.nf_weight_decay`.

    With `weight_decay_mode="decoupled"` step (b) is replaced by Keras-style
    decoupled decay, `p -= lr * weight_decay * p` (applied together with
    (e), AGC still uses the parameter before the update).

    Args:
        learning_rate: float, `LearningRateSchedule` (e.g.
            `nfnet_keras.training.schedules.WarmupCosineDecay`) or callable.
        momentum: momentum (0.9).
        nesterov: Nesterov momentum (True).
        weight_decay: decay rate (2e-5 in the paper), 0/None for none.
        weight_decay_mode: "coupled" (DeepMind) or "decoupled".
        decay_exclude: regexes searched in variable paths; matches get no decay.
        clipping, eps, agc_exclude, ema_decay: see `AGCMixin`.
        **kwargs: Keras optimizer base arguments (`name`, `clipnorm`,
            `loss_scale_factor`, `gradient_accumulation_steps`, ...).  Note
            that Keras' `clipnorm`/`clipvalue`/`global_clipnorm` run in
            `_clip_gradients`, i.e. per replica before the all-reduce on TF.
    """

    def __init__(
        self,
        learning_rate=0.1,
        momentum=0.9,
        nesterov=True,
        weight_decay=2e-5,
        weight_decay_mode="coupled",
        decay_exclude=DEFAULT_DECAY_EXCLUDE,
        clipping=0.01,
        eps=1e-3,
        agc_exclude=DEFAULT_AGC_EXCLUDE,
        ema_decay=None,
        name=None,
        **kwargs,
    ):
        super().__init__(
            learning_rate=learning_rate,
            clipping=clipping,
            eps=eps,
            agc_exclude=agc_exclude,
            ema_decay=ema_decay,
            name=name,
            weight_decay=None,
            **kwargs,
        )
        momentum = float(momentum)
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {momentum}")
        if weight_decay_mode not in ("coupled", "decoupled"):
            raise ValueError(
                f"weight_decay_mode must be 'coupled' or 'decoupled', got {weight_decay_mode!r}"
            )
        self.momentum = momentum
        self.nesterov = bool(nesterov)
        self.nf_weight_decay = float(weight_decay or 0.0)
        self.weight_decay_mode = weight_decay_mode
        self.decay_exclude = _as_patterns(decay_exclude)
        self._decay_exclude_re = [re.compile(p) for p in self.decay_exclude]

    def build(self, variables):
        """Creates the momentum buffers, EMA copies and per-variable flags."""
        if self.built:
            return
        super().build(variables)
        self._decay_flags = [
            self.nf_weight_decay != 0.0
            and not _matches(_variable_path(v), self._decay_exclude_re)
            for v in variables
        ]
        self.momentums = []
        if self.momentum != 0.0:
            self.momentums = self.add_optimizer_variables(variables, "momentum")

    def _base_update_step(self, gradient, variable, learning_rate, index):
        dtype = variable.dtype
        lr = ops.cast(learning_rate, dtype)
        param = ops.convert_to_tensor(variable)
        decay = self._decay_flags[index]
        wd = ops.cast(self.nf_weight_decay, dtype)
        if decay and self.weight_decay_mode == "coupled":
            gradient = ops.add(gradient, ops.multiply(wd, param))
        if self.momentum != 0.0:
            mu = ops.cast(self.momentum, dtype)
            buf = self.momentums[index]
            new_buf = ops.add(ops.multiply(mu, ops.convert_to_tensor(buf)), gradient)
            self.assign(buf, new_buf)
            if self.nesterov:
                step = ops.add(gradient, ops.multiply(mu, new_buf))
            else:
                step = new_buf
        else:
            step = gradient
        update = ops.multiply(lr, step)
        if decay and self.weight_decay_mode == "decoupled":
            update = ops.add(update, ops.multiply(ops.multiply(lr, wd), param))
        self.assign_sub(variable, update)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "momentum": self.momentum,
                "nesterov": self.nesterov,
                "weight_decay": self.nf_weight_decay,
                "weight_decay_mode": self.weight_decay_mode,
                "decay_exclude": list(self.decay_exclude),
            }
        )
        return config


_NAMES = {
    "nfnet_sgd": NFNetSGD,
    "nfnetsgd": NFNetSGD,
    "agc_sgd": AGCSGD,
    "agcsgd": AGCSGD,
    "agc_adam": AGCAdam,
    "agcadam": AGCAdam,
    "agc_adamw": AGCAdamW,
    "agcadamw": AGCAdamW,
}


def get(identifier, **kwargs):
    """Returns an optimizer instance from a name, config dict or instance.

    Names: `"nfnet_sgd"` (`NFNetSGD`), `"agc_sgd"`, `"agc_adam"`,
    `"agc_adamw"`, or `"agc_<keras name>"` (e.g. `"agc_lion"`: `with_agc`
    applied to the Keras optimizer of that name).  Any other string is passed
    to `keras.optimizers.get` (plain Keras optimizer).  `kwargs` are the
    constructor arguments (only with a name).

    Example:
        >>> opt = get("nfnet_sgd", learning_rate=schedule, ema_decay=0.99999)
    """
    if isinstance(identifier, keras.optimizers.Optimizer):
        if kwargs:
            raise ValueError("kwargs are only accepted with an optimizer name")
        return identifier
    if isinstance(identifier, dict):
        if kwargs:
            raise ValueError("kwargs are only accepted with an optimizer name")
        return keras.optimizers.deserialize(identifier)
    if not isinstance(identifier, str):
        raise ValueError(f"cannot interpret optimizer identifier {identifier!r}")
    key = identifier.lower()
    if key in _NAMES:
        return _NAMES[key](**kwargs)
    if key.startswith("agc_"):
        base = type(keras.optimizers.get(key[len("agc_"):]))
        return with_agc(base)(**kwargs)
    return type(keras.optimizers.get(identifier))(**kwargs)
