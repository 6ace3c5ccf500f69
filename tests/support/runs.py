"""Small classifiers and `train.py`-like run directories for the loader, predict and export tests."""

import keras
import numpy as np

import nfnet_keras
from nfnet_keras.weights.run_directory import RunDirectory


def micro_classifier(seed, classes=10):
    """A micro NFNet returning logits, with a large random head so that top-1 varies from image to image."""
    keras.utils.set_random_seed(seed)
    model = nfnet_keras.create_model("micro", classes=classes, classifier_activation=None)
    kernel = model.get_layer("predictions").kernel
    kernel.assign(np.random.default_rng(seed).standard_normal(tuple(kernel.shape)).astype(np.float32))
    return model


def write_micro_run(directory, class_names):
    """A run directory as `train.py` writes it, of two micro classifiers: `(raw, ema)`.

    `raw` (named `class_names`) is saved as the run's model, the weights of
    `ema` as its EMA weights.
    """
    raw, ema = micro_classifier(0), micro_classifier(1)
    raw.class_names = class_names
    run = RunDirectory(directory)
    raw.save(run.model)
    ema.save_weights(run.ema_weights)
    return raw, ema
