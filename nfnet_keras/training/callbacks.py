"""The callbacks of a `train.py` run: checkpoints, throughput, optimizer logging.

Each Keras "epoch" of the run is one checkpoint chunk (`nfnet_keras.training.plan`).
The EMA callbacks (`EMAEvaluation`, `EMACheckpoint`) are in `nfnet_keras.training.ema`.

Uses numpy and `keras.ops` only; imports without TensorFlow.
"""

import time

import keras
import numpy as np

from nfnet_keras.training import checkpoint

__all__ = ["Checkpoint", "LogOptimizer", "Throughput"]


class Checkpoint(keras.callbacks.Callback):
    """Writes the whole training state atomically at the end of every chunk; never a NaN state.

    Args:
        path: the checkpoint file (`RunDirectory.checkpoint`).
        plan: the run's `RunPlan`, which says at which step each chunk ends.
    """

    def __init__(self, path, plan):
        super().__init__()
        self.path = path
        self.plan = plan

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None or not np.isfinite(loss) or self.model.stop_training:
            return
        checkpoint.save_state(self.model, self.path, self.plan.chunk_end(epoch))


class Throughput(keras.callbacks.Callback):
    """Training images per second over every chunk after the first (which compiles).

    Args:
        batch_size: images per step (the global batch).
    """

    def __init__(self, batch_size):
        super().__init__()
        self.batch_size = batch_size
        self.images = []
        self.seconds = []
        self.start = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.time()

    def on_test_begin(self, logs=None):  # the chunk's validation is not training time
        self.seconds.append(time.time() - self.start)
        self.images.append(self.params["steps"] * self.batch_size)

    def images_per_second(self):
        """The rate over the chunks after the first (over the first when there is no other); NaN before any."""
        first = 1 if len(self.seconds) > 1 else 0
        seconds = sum(self.seconds[first:])
        return sum(self.images[first:]) / seconds if seconds else float("nan")


class LogOptimizer(keras.callbacks.Callback):
    """Adds the learning rate and the AGC clip fraction to the epoch logs (TensorBoard, CSV)."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        optimizer = getattr(self.model.optimizer, "inner_optimizer", self.model.optimizer)
        lr = optimizer.learning_rate
        logs["learning_rate"] = float(keras.ops.convert_to_numpy(lr))
        fraction = getattr(optimizer, "clip_fraction", None)
        if fraction is not None:
            logs["clip_fraction"] = float(keras.ops.convert_to_numpy(fraction))
