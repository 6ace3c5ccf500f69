"""NFNet learning-rate schedule: linear warmup then cosine decay (DeepMind's).

DeepMind (`nfnets/optim.py`, `WarmupCosineDecay`; config in
`experiment_nfnets.py`):

    max_lr       = base_lr * global_batch / 256              (0.1 * 4096 / 256 = 1.6)
    warmup_steps = warmup_epochs * num_train_examples / global_batch   (1563.92, fractional)
    num_steps    = num_train_examples * epochs // global_batch         (112,602)
    warmup(t)    = start + (max - start) * t / warmup_steps
    cosine(t)    = 0.5 * (max - min) * (1 + cos(pi * (t - warmup_steps) / (num_steps - warmup_steps))) + min
    lr(t)        = warmup(t) if t <= warmup_steps else cosine(t)

so step 0 has learning rate `start` (0).  Keras evaluates the schedule at the
optimizer's iteration count *before* the update, as DeepMind does.
"""

import math

import keras
from keras import ops

from nfnet_keras.checks import check_integer

__all__ = ["WarmupCosineDecay"]


@keras.saving.register_keras_serializable(package="nfnet_keras")
class WarmupCosineDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup from `start_value` to the batch-scaled peak, then cosine to `min_value`.

    Args:
        base_learning_rate: learning rate per `reference_batch_size` images
            (0.1); the peak is `base_learning_rate * global_batch_size /
            reference_batch_size`.
        global_batch_size: the global (all-replica) batch size.
        steps_per_epoch: optimizer steps per epoch, may be fractional
            (DeepMind: `num_train_examples / global_batch_size`).  Give this or
            `num_train_examples`.
        total_steps: length of the schedule in steps; or give `epochs`.
        epochs: number of epochs; `total_steps = num_train_examples * epochs //
            global_batch_size` (with `num_train_examples`) or
            `floor(epochs * steps_per_epoch)`.
        warmup_epochs: warmup length in epochs (5); `warmup_steps =
            warmup_epochs * steps_per_epoch`, fractional like DeepMind's 1563.92.
        warmup_steps: warmup length in steps, instead of `warmup_epochs`.
        num_train_examples: training-set size, an alternative to
            `steps_per_epoch` (ImageNet: 1,281,167).
        start_value: learning rate at step 0 (0).
        min_value: learning rate at the end (0).
        reference_batch_size: batch size of `base_learning_rate` (256).
        name: schedule name.

    Beyond `total_steps` the learning rate stays at `min_value` (DeepMind's
    formula would rise again; in range the two are identical).  With zero
    warmup steps the cosine starts at step 0.

    Example (DeepMind's F0 recipe):
        >>> WarmupCosineDecay(0.1, global_batch_size=4096,
        ...                   num_train_examples=1281167, epochs=360)
    """

    def __init__(
        self,
        base_learning_rate=0.1,
        global_batch_size=256,
        steps_per_epoch=None,
        total_steps=None,
        epochs=None,
        warmup_epochs=5,
        warmup_steps=None,
        num_train_examples=None,
        start_value=0.0,
        min_value=0.0,
        reference_batch_size=256,
        name="warmup_cosine_decay",
    ):
        super().__init__()
        global_batch_size = check_integer(global_batch_size, "global_batch_size")
        reference_batch_size = check_integer(reference_batch_size, "reference_batch_size")
        if steps_per_epoch is None and num_train_examples is not None:
            steps_per_epoch = num_train_examples / global_batch_size
        if total_steps is None:
            if epochs is None:
                raise ValueError("give total_steps or epochs")
            if num_train_examples is not None:
                total_steps = (num_train_examples * epochs) // global_batch_size
            elif steps_per_epoch is not None:
                total_steps = math.floor(epochs * steps_per_epoch)
            else:
                raise ValueError("epochs needs steps_per_epoch or num_train_examples")
        if warmup_steps is None:
            if warmup_epochs and steps_per_epoch is None:
                raise ValueError("warmup_epochs needs steps_per_epoch or num_train_examples")
            warmup_steps = (warmup_epochs or 0) * (steps_per_epoch or 0)
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
        if total_steps <= warmup_steps:
            raise ValueError(
                f"total_steps ({total_steps}) must exceed warmup_steps ({warmup_steps})"
            )
        self.base_learning_rate = float(base_learning_rate)
        self.global_batch_size = int(global_batch_size)
        self.steps_per_epoch = None if steps_per_epoch is None else float(steps_per_epoch)
        self.total_steps = int(total_steps)
        self.warmup_steps = float(warmup_steps)
        self.start_value = float(start_value)
        self.min_value = float(min_value)
        self.reference_batch_size = int(reference_batch_size)
        self.name = name
        self.peak_value = (
            self.base_learning_rate * self.global_batch_size / self.reference_batch_size
        )

    def __call__(self, step):
        step = ops.cast(step, "float32")
        total = float(self.total_steps)
        warm = self.warmup_steps
        step = ops.minimum(step, total)
        cos_pos = (step - warm) / (total - warm)
        cosine = (
            0.5 * (self.peak_value - self.min_value) * (1.0 + ops.cos(math.pi * cos_pos))
            + self.min_value
        )
        if warm == 0.0:
            return cosine
        warmup = (self.peak_value - self.start_value) * (step / warm) + self.start_value
        return ops.where(ops.less_equal(step, warm), warmup, cosine)

    def get_config(self):
        return {
            "base_learning_rate": self.base_learning_rate,
            "global_batch_size": self.global_batch_size,
            "steps_per_epoch": self.steps_per_epoch,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "start_value": self.start_value,
            "min_value": self.min_value,
            "reference_batch_size": self.reference_batch_size,
            "name": self.name,
        }
