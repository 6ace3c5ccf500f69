"""The NFNet training loss: softmax cross-entropy on smoothed soft labels.

DeepMind (`experiment.py` / `utils.softmax_cross_entropy`): labels are first
mixed (MixUp/CutMix), then smoothed, `y = (1 - s) * y + s / num_classes` with
`s = 0.1`, and the loss is `-sum(y * log_softmax(logits))`, averaged over the
batch, in float32.

Why `keras.losses.CategoricalCrossentropy` is reused: with
`from_logits=True, label_smoothing=s` Keras 3.15 computes exactly this.  Its
`categorical_crossentropy` smooths whatever `y_true` it receives (soft, mixed
labels included) with `y_true * (1 - s) + s / num_classes`, `num_classes`
being the last dimension, and then takes `-sum(y * log_softmax(logits))`
(`jax.nn.log_softmax` on JAX, `tf.nn.softmax_cross_entropy_with_logits` on
TF).  It is a `keras.losses.Loss`, so the "sum_over_batch_size" reduction and
the 1/num_replicas scaling under `tf.distribute` apply.  `NFNetCrossEntropy`
only fixes `from_logits=True`, the 0.1 default, the float32 computation dtype
and adds integer-label support.
"""

import keras
from keras import ops

__all__ = ["NFNetCrossEntropy"]


@keras.saving.register_keras_serializable(package="nfnet_keras")
class NFNetCrossEntropy(keras.losses.CategoricalCrossentropy):
    """Softmax cross-entropy on logits with label smoothing applied after mixing.

    `loss = -sum(y_s * log_softmax(logits))`, `y_s = (1 - s) * y + s / K`,
    averaged over the batch.  Always computed in float32 (also when the model
    runs under `mixed_bfloat16` / `mixed_float16`).

    Args:
        label_smoothing: `s`, 0.1 as in the paper.
        axis: class axis of `y_true` / `logits`.
        reduction: Keras loss reduction (default "sum_over_batch_size", the
            batch mean).
        name: loss name.
        dtype: computation dtype (float32).

    `y_true` may be one-hot or soft labels (e.g. MixUp/CutMix output) of the
    logits' shape, or integer class ids of shape `(batch,)` / `(batch, 1)`,
    which are one-hot encoded first.
    """

    def __init__(
        self,
        label_smoothing=0.1,
        axis=-1,
        reduction="sum_over_batch_size",
        name="nfnet_cross_entropy",
        dtype="float32",
    ):
        super().__init__(
            from_logits=True,
            label_smoothing=float(label_smoothing),
            axis=axis,
            reduction=reduction,
            name=name,
            dtype=dtype or "float32",
        )

    def call(self, y_true, y_pred):
        y_pred = ops.convert_to_tensor(y_pred)
        y_true = ops.convert_to_tensor(y_true)
        num_classes = y_pred.shape[self.axis]
        rank_true, rank_pred = len(y_true.shape), len(y_pred.shape)
        sparse = rank_true == rank_pred - 1 or (
            rank_true == rank_pred and y_true.shape[-1] == 1 and num_classes != 1
        )
        if sparse:
            if rank_true == rank_pred:
                y_true = ops.squeeze(y_true, axis=-1)
            y_true = ops.one_hot(
                ops.cast(y_true, "int32"), num_classes, axis=self.axis, dtype=y_pred.dtype
            )
        return super().call(y_true, y_pred)

    def get_config(self):
        config = super().get_config()
        config.pop("from_logits", None)
        config["dtype"] = self.dtype
        return config
