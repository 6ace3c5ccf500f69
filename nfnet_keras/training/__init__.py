"""The paper's training recipe: AGC, optimizers, EMA, schedules, losses, SAM, distribution.

The recipe (`keras.ops` only; these modules import without TensorFlow):

- `agc`: adaptive gradient clipping; `optimizers`: AGC optimizers, `NFNetSGD`
  and the weight EMA update; `ema`: evaluating and saving with the EMA weights;
  `schedules`, `losses`; `sam`: `NFNetTrainer` (Keras' step, or SAM);
  `distribution`: the data-parallel engine. The protected Keras attributes the
  optimizers read are listed in `nfnet_keras.keras_internals`.

The `train.py` run (`run` needs TensorFlow for tf.data and is imported on demand):

- `plan`: sizes, steps and checkpoint chunks from the settings; `checkpoint`:
  the resumable state; `preemption`: the polite stop on SIGTERM/SIGINT;
  `callbacks`: the run's callbacks; `run`: `run(settings)`.
"""

from nfnet_keras.training.agc import adaptive_clip_gradients, unitwise_norm
from nfnet_keras.training.ema import EMACheckpoint, EMAEvaluation, ema_weights, save_ema_weights
from nfnet_keras.training.losses import NFNetCrossEntropy
from nfnet_keras.training.optimizers import AGCAdam, AGCAdamW, AGCMixin, AGCSGD, NFNetSGD, with_agc
from nfnet_keras.training.sam import NFNetTrainer
from nfnet_keras.training.schedules import WarmupCosineDecay

__all__ = [
    "AGCAdam",
    "AGCAdamW",
    "AGCMixin",
    "AGCSGD",
    "EMACheckpoint",
    "EMAEvaluation",
    "NFNetCrossEntropy",
    "NFNetSGD",
    "NFNetTrainer",
    "WarmupCosineDecay",
    "adaptive_clip_gradients",
    "ema_weights",
    "save_ema_weights",
    "unitwise_norm",
    "with_agc",
]
