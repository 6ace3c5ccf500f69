"""Training and evaluation input: image sources, augmentation, the tf.data pipeline.

TensorFlow only (tf.data); it works under any Keras backend.
The bundled CIFAR-10 sample (`cifar10_sample.npz`) lives in this folder.
"""

from nfnet_keras.data.pipeline import make_eval_dataset, make_train_dataset
from nfnet_keras.data.sources import DatasetError, ImageSource, load_source

__all__ = ["DatasetError", "ImageSource", "load_source", "make_eval_dataset", "make_train_dataset"]
