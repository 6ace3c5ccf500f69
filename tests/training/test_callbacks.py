"""The train.py run's callbacks: Checkpoint at each chunk end, LogOptimizer's extra logs."""

import keras
import numpy as np

from nfnet_keras.models import get_spec
from nfnet_keras.training import checkpoint
from nfnet_keras.training.callbacks import Checkpoint, LogOptimizer
from nfnet_keras.training.optimizers import NFNetSGD
from nfnet_keras.training.plan import RunPlan
from nfnet_keras.training.sam import NFNetTrainer

# 5 steps in chunks of 2, 2 and 1.
PLAN = RunPlan(get_spec("nano"), 32, 32, steps_per_epoch=10, total_steps=5, chunk=2, warmup_epochs=0.0,
               warmup_shortened=False)  # fmt: skip


def _trainer():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="predictions")])
    trainer = NFNetTrainer(model)
    trainer.compile(optimizer=NFNetSGD(0.1, clipping=0.01), loss="mse")
    trainer.fit(np.ones((4, 3), "float32"), np.ones((4, 2), "float32"), epochs=1, verbose=0)
    return trainer


def test_checkpoint_of_the_shorter_last_chunk_records_the_last_step(tmp_path):
    path = tmp_path / "checkpoint.npz"
    callback = Checkpoint(path, PLAN)
    callback.set_model(_trainer())
    callback.on_epoch_end(0, {"loss": 0.5})
    assert checkpoint.saved_step(path) == 2
    callback.on_epoch_end(2, {"loss": 0.5})
    assert checkpoint.saved_step(path) == 5


def test_checkpoint_skips_a_chunk_that_ended_with_a_nan_loss(tmp_path):
    path = tmp_path / "checkpoint.npz"
    callback = Checkpoint(path, PLAN)
    callback.set_model(_trainer())
    callback.on_epoch_end(0, {"loss": 0.5})
    callback.on_epoch_end(1, {"loss": float("nan")})
    assert checkpoint.saved_step(path) == 2


def test_log_optimizer_adds_the_learning_rate_and_the_clip_fraction():
    trainer = _trainer()
    callback = LogOptimizer()
    callback.set_model(trainer)
    logs = {}
    callback.on_epoch_end(0, logs)
    assert logs["learning_rate"] == np.float32(0.1)
    assert logs["clip_fraction"] == float(keras.ops.convert_to_numpy(trainer.optimizer.clip_fraction)) > 0.0
