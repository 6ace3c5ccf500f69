"""The paper's training recipe: AGC, optimizers, EMA, schedules, losses, SAM, distribution.

These modules use `keras.ops` only and import without TensorFlow. The
`train.py` run itself (`nfnet_keras.training.run`) needs TensorFlow for tf.data
and is imported on demand.
"""

from nfnet_keras.training.agc import adaptive_clip_gradients, unitwise_norm
from nfnet_keras.training.losses import NFNetCrossEntropy
from nfnet_keras.training.optimizers import AGCAdam, AGCAdamW, AGCMixin, AGCSGD, NFNetSGD, with_agc
from nfnet_keras.training.sam import NFNetTrainer
from nfnet_keras.training.schedules import WarmupCosineDecay

__all__ = [
    "AGCAdam",
    "AGCAdamW",
    "AGCMixin",
    "AGCSGD",
    "NFNetCrossEntropy",
    "NFNetSGD",
    "NFNetTrainer",
    "WarmupCosineDecay",
    "adaptive_clip_gradients",
    "unitwise_norm",
    "with_agc",
]
