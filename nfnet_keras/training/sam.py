"""Training model for NFNets: Keras' train step plus optional SAM.

`NFNetTrainer(model, sam_rho=0.0)` wraps any built Keras model (for example
`nfnet_keras.NFNet(...)`) in a `keras.Model` whose `train_step` is

* with `sam_rho == 0`: exactly Keras' own step (the parent class' `train_step`
  is called, so the updated weights are identical to training `model`
  directly);
* with `sam_rho > 0`: sharpness-aware minimisation (Foret et al., 2021; the
  NFNet paper uses it for F6+SAM):

  1. `g1 = dL/dw` at the current weights `w`;
  2. `e = rho * g1 / ||g1||`, with `||.||` the global L2 norm over all
     trainable variables of the *global* gradient (on the TensorFlow backend
     under a `tf.distribute` strategy, `g1` is all-reduced across replicas
     before the norm; on JAX the gradient of the jitted step is already the
     global one);
  3. `g2 = dL/dw` evaluated at `w + e`;
  4. `optimizer.apply(g2)` to the *unperturbed* `w`.

  `w + e` is never written to the variables: the second pass runs through
  `stateless_call`, which maps every trainable variable to its perturbed
  value for the duration of the call. "Restoring w" is therefore exact (no
  `w + e - e` round-off) and needs no extra assignments, which also keeps
  mirrored variables untouched inside a replica context.

Everything the optimizer does (AGC, coupled weight decay, Nesterov momentum,
EMA of `NFNetSGD`; loss-scale unscaling of `LossScaleOptimizer`) happens in
`optimizer.apply`, so it composes with SAM unchanged: it receives `g2`.

Mixed precision: under `mixed_float16` the loss of both passes is multiplied
by the loss scale (`optimizer.scale_loss`); `e` is scale invariant
(`g / ||g||`), and a non-finite or zero norm gives `e = 0`, so an overflowed
first pass makes the second pass produce the same non-finite gradient that
`LossScaleOptimizer` then skips. (The norm of the loss-scaled `g1` is
taken in float32; it would overflow only for gradients around 1e5 times the
usual size at scale 2**15, and then that step has `e = 0`.)
`mixed_bfloat16` needs no scaling;
variables, gradients and `e` stay float32.

Randomness (dropout, stochastic depth): the second pass reuses the
non-trainable state from *before* the first pass, including every
`SeedGenerator` state, so both passes draw **the same** dropout /
stochastic-depth masks (the perturbation is evaluated on the same
sub-network). Non-trainable updates of the second pass (RNG advance, any
moving statistics) are discarded; those of the first pass are kept, exactly
as in Keras' step. Metrics and the reported loss are those of the first pass
(at `w`), updated the way Keras updates them.

Backends: TensorFlow (`tf.GradientTape`, `tf.distribute` aware) and JAX
(stateless `train_step(state, data)`, works under `keras.distribution`).
With `sam_rho == 0` any backend works; `sam_rho > 0` raises on other
backends.

The SAM step uses public Keras API only (`compute_loss`, `compute_metrics`,
`keras.StatelessScope`, the JAX trainer's `compute_loss_and_updates`, the
`"loss"` metric in `model.metrics`) and does not modify any Keras code.
"""

import keras
from keras import ops

__all__ = ["NFNetTrainer", "global_norm"]

_SAM_BACKENDS = ("tensorflow", "jax")


def global_norm(tensors):
    """Global L2 norm `sqrt(sum_i ||t_i||^2)` in float32, skipping `None`s.

    Args:
        tensors: list of tensors (gradients), `None` entries are ignored.

    Returns:
        Scalar float32 tensor.
    """
    total = ops.convert_to_tensor(0.0, dtype="float32")
    for t in tensors:
        if t is None:
            continue
        t = ops.cast(t, "float32")
        total = total + ops.sum(ops.square(t))
    return ops.sqrt(total)


def _sam_scale(norm, rho):
    """`rho / norm`, or 0 when the norm is zero or not finite (see module doc)."""
    ok = ops.logical_and(ops.isfinite(norm), ops.greater(norm, 0.0))
    safe = ops.where(ok, norm, ops.ones_like(norm))
    return ops.where(ok, ops.cast(rho, "float32") / safe, ops.zeros_like(norm))


def _perturb(values, grads, scale):
    """`w + scale * g` per variable, in each variable's dtype (`None` g: `w`)."""
    out = []
    for w, g in zip(values, grads):
        if g is None:
            out.append(w)
        else:
            e = ops.cast(ops.cast(g, "float32") * scale, w.dtype)
            out.append(w + e)
    return out


def _first_batch_dim(x):
    """Batch size of the first non-`None` input (the weight of the batch's loss in the running mean)."""
    leaf = next(i for i in keras.tree.flatten(x) if i is not None)
    return ops.shape(leaf)[0]


def _scope_values(scope, variables):
    """The values `variables` have in a `keras.StatelessScope` (their own where it wrote none)."""
    values = []
    for variable in variables:
        value = scope.get_current_value(variable)
        values.append(variable.value if value is None else value)
    return values


@keras.saving.register_keras_serializable(package="nfnet_keras")
class NFNetTrainer(keras.Model):
    """A `keras.Model` that trains `model`, optionally with SAM.

    `fit`, `evaluate`, `predict`, `save`/`load_model`, `save_weights` work as
    for any Keras model; inference simply calls `model`. The wrapped model is
    available as `trainer.model` (export or deploy that one: its weight names
    are the plain NFNet ones).

    Create the trainer (and the model) inside the distribution scope
    (`nfnet_keras.training.distribution.get_distribution(...).scope()`), then
    `compile` with the optimizer (e.g. `nfnet_keras.training.optimizers.NFNetSGD`).

    Example:

    ```python
    model = nfnet_keras.NFNet("nano", classes=10, input_shape=(32, 32, 3),
                              weights=None, classifier_activation=None)
    trainer = NFNetTrainer(model, sam_rho=0.05)
    trainer.compile(optimizer=opt, loss=keras.losses.CategoricalCrossentropy(
        from_logits=True, label_smoothing=0.1), metrics=["accuracy"])
    trainer.fit(ds, epochs=...)
    ```

    Args:
        model: a built `keras.Model` (or layer) mapping inputs to outputs.
        sam_rho: SAM neighbourhood radius `rho >= 0`; `0` disables SAM (the
            step is then exactly Keras' default `train_step`).
        **kwargs: passed to `keras.Model` (`name`, `dtype`, ...).
    """

    def __init__(self, model, sam_rho=0.0, **kwargs):
        super().__init__(**kwargs)
        sam_rho = float(sam_rho)
        if not sam_rho >= 0.0:
            raise ValueError(f"sam_rho must be >= 0, got {sam_rho}")
        backend = keras.backend.backend()
        if sam_rho > 0.0 and backend not in _SAM_BACKENDS:
            raise ValueError(
                f"SAM (sam_rho > 0) is implemented for the {_SAM_BACKENDS} "
                f"backends, not for KERAS_BACKEND={backend!r}."
            )
        self.model = model
        self.sam_rho = sam_rho
        if getattr(model, "built", False):
            self.built = True

    # ----------------------------------------------------------- Keras Model
    def build(self, input_shape):
        """Builds the wrapped model if it is not built yet."""
        if not self.model.built:
            self.model.build(input_shape)
        self.built = True

    def call(self, inputs, training=None):
        """Forward pass: `model(inputs, training=training)`."""
        return self.model(inputs, training=training)

    def get_config(self):
        """Serialisable config: the wrapped model's config and `sam_rho`."""
        return {
            "name": self.name,
            "trainable": self.trainable,
            "model": keras.saving.serialize_keras_object(self.model),
            "sam_rho": self.sam_rho,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        """Inverse of `get_config`."""
        config = dict(config)
        model = keras.saving.deserialize_keras_object(
            config.pop("model"), custom_objects=custom_objects
        )
        return cls(model=model, **config)

    # ------------------------------------------------------------ train step
    def train_step(self, *args, **kwargs):
        """One step: Keras' own for `sam_rho == 0`, else SAM (module doc).

        Signature follows the backend: `train_step(data)` on TensorFlow,
        `train_step(state, data) -> (logs, state)` on JAX.
        """
        if self.sam_rho == 0.0 or not self.trainable_weights:
            return super().train_step(*args, **kwargs)
        backend = keras.backend.backend()
        if backend == "jax":
            return self._jax_sam_train_step(*args, **kwargs)
        if backend == "tensorflow":
            return self._tf_sam_train_step(*args, **kwargs)
        raise ValueError(f"SAM is not implemented for KERAS_BACKEND={backend!r}")

    def _loss_metric(self):
        """Keras' running mean of the loss: the metric named `"loss"` of a compiled model."""
        return next(metric for metric in self.metrics if metric.name == "loss")

    def _perturbed_loss(self, trainable_values, non_trainable_values, x, y, sample_weight):
        """Loss at the given variable values, with zero side effects.

        Used for the second SAM pass on TensorFlow (JAX uses Keras'
        `compute_loss_and_updates`, which does the same). The forward pass and
        the loss run in one stateless scope that maps the variables to the
        given values and collects the forward-pass losses, so activity and
        weight regularisers both see the perturbed weights; every write
        (RNG advance, metric update) stays in the scope and is dropped.
        """
        mapping = list(zip(self.trainable_variables, trainable_values))
        mapping += list(zip(self.non_trainable_variables, non_trainable_values))
        with keras.StatelessScope(state_mapping=mapping, collect_losses=True):
            y_pred = self.call(x, training=True)
            return self.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True)

    def _update_metrics(self, metrics_variables, loss, x, y, y_pred, sample_weight):
        """Stateless metric update of the JAX step: `(logs, new metrics_variables)`.

        The loss mean is weighted by the batch size, as in Keras' own step.
        """
        mapping = list(zip(self.metrics_variables, metrics_variables))
        with keras.StatelessScope(state_mapping=mapping) as scope:
            self._loss_metric().update_state(loss, sample_weight=_first_batch_dim(x))
            logs = self.compute_metrics(x, y, y_pred, sample_weight)
        return logs, _scope_values(scope, self.metrics_variables)

    def _tf_sam_train_step(self, data):
        import tensorflow as tf

        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        trainable = self.trainable_variables
        # State before the first pass: the second pass reuses it (same RNG
        # draws, see module doc). Reads are ordered before the first pass'
        # writes by tf.function's automatic control dependencies.
        non_trainable_before = [tf.identity(ops.convert_to_tensor(v)) for v in self.non_trainable_variables]

        with tf.GradientTape() as tape:
            y_pred = self(x, training=True)
            loss = self.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True)
            strategy = tf.distribute.get_strategy()
            replicas = strategy.num_replicas_in_sync
            unscaled = loss * ops.cast(replicas, loss.dtype) if replicas > 1 else loss
            self._loss_metric().update_state(unscaled, sample_weight=_first_batch_dim(x))
            scaled_loss = self.optimizer.scale_loss(loss)
        grads = tape.gradient(scaled_loss, trainable)
        grads = [None if g is None else tf.convert_to_tensor(g) for g in grads]

        # Global gradient: Keras' losses divide by the replica count, so the
        # SUM over replicas is the global-batch mean gradient.
        if replicas > 1:
            present = [i for i, g in enumerate(grads) if g is not None]
            reduced = tf.distribute.get_replica_context().all_reduce(
                tf.distribute.ReduceOp.SUM, [grads[i] for i in present]
            )
            for i, g in zip(present, reduced):
                grads[i] = g
        scale = _sam_scale(global_norm(grads), self.sam_rho)
        weights = [ops.convert_to_tensor(v) for v in trainable]
        perturbed = _perturb(weights, grads, scale)

        with tf.GradientTape() as tape2:
            tape2.watch(perturbed)
            loss2 = self._perturbed_loss(perturbed, non_trainable_before, x, y, sample_weight)
            loss2 = self.optimizer.scale_loss(loss2)
        grads2 = tape2.gradient(loss2, perturbed)
        self.optimizer.apply_gradients(zip(grads2, trainable))
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    def _jax_sam_train_step(self, state, data):
        import jax

        (
            trainable_variables,
            non_trainable_variables,
            optimizer_variables,
            metrics_variables,
        ) = state
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        grad_fn = jax.value_and_grad(self.compute_loss_and_updates, has_aux=True)
        (_, aux), grads = grad_fn(
            trainable_variables,
            non_trainable_variables,
            metrics_variables,
            x,
            y,
            sample_weight,
            training=True,
            optimizer_variables=optimizer_variables,
        )
        unscaled_loss, y_pred, new_non_trainable, new_metrics = aux

        # Inside jit over the global batch, `grads` is the global gradient.
        scale = _sam_scale(global_norm(grads), self.sam_rho)
        perturbed = _perturb(trainable_variables, grads, scale)
        # Same non-trainable state as the first pass (same RNG draws); the
        # second pass' state and metric updates are dropped.
        (_, _), grads2 = grad_fn(
            perturbed,
            non_trainable_variables,
            metrics_variables,
            x,
            y,
            sample_weight,
            training=True,
            optimizer_variables=optimizer_variables,
        )
        trainable_variables, optimizer_variables = self.optimizer.stateless_apply(
            optimizer_variables, grads2, trainable_variables
        )
        logs, new_metrics = self._update_metrics(new_metrics, unscaled_loss, x, y, y_pred, sample_weight)
        return logs, (
            trainable_variables,
            new_non_trainable,
            optimizer_variables,
            new_metrics,
        )
