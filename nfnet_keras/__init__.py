"""nfnet-keras: Normalizer-Free Networks (NFNet-F0..F7, F0+..F7+) for Keras 3.

Models (`NFNet`, `NFNetF0` ... `NFNetF7Plus`), layers, pretrained-weight loading,
preprocessing, signal-propagation metrics and plots, and the paper's training recipe (adaptive gradient clipping,
`NFNetSGD`, warmup-cosine schedule, EMA, SAM trainer, distribution engines).
The tf.data input pipeline (`nfnet_keras.input_pipeline`, `augment`,
`datasets`) and the export to TF Serving and TFLite (`nfnet_keras.serving`,
`litert`, `export_lib`; `python export.py`) are imported on demand, since they
need TensorFlow.
"""

from nfnet_keras import agc, layers, losses, optimizers, schedules, variants
from nfnet_keras.agc import adaptive_clip_gradients, unitwise_norm
from nfnet_keras.flops import count_macs
from nfnet_keras.folding import fold_weight_standardization
from nfnet_keras.imagenet import decode_predictions, imagenet_class_names
from nfnet_keras.losses import NFNetCrossEntropy
from nfnet_keras.model import (
    NFNet,
    NFNetF0,
    NFNetF0Plus,
    NFNetF1,
    NFNetF1Plus,
    NFNetF2,
    NFNetF2Plus,
    NFNetF3,
    NFNetF3Plus,
    NFNetF4,
    NFNetF4Plus,
    NFNetF5,
    NFNetF5Plus,
    NFNetF6,
    NFNetF6Plus,
    NFNetF7,
    NFNetF7Plus,
)
from nfnet_keras.optimizers import AGCAdamW, AGCSGD, NFNetSGD, with_agc
from nfnet_keras.preprocessing import eval_transform, load_image, prepare_images, preprocess_input
from nfnet_keras.schedules import WarmupCosineDecay
from nfnet_keras.signal_metrics import (
    SignalPropagation,
    plot_signal_propagation,
    set_activation_gamma,
    set_skip_gains,
    signal_propagation,
)
from nfnet_keras.training import NFNetTrainer

__version__ = "0.1.0"
