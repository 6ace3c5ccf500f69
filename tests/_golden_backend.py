"""Prints DeepMind-vs-ours relative errors for the golden F0 checkpoint on the current backend.

Usage: KERAS_BACKEND=jax python tests/_golden_backend.py CHECKPOINT
(run as a subprocess by test_weights.py, since the backend is fixed at import).
"""

import sys

import keras
import numpy as np
from golden import golden_outputs, relative_error

import nfnet_keras


def main(checkpoint):
    ref = golden_outputs()
    top = nfnet_keras.NFNetF0(weights=checkpoint, input_shape=(None, None, 3), classifier_activation=None)
    features = keras.Model(top.input, top.get_layer("avg_pool").output)
    for key, images in (("logits", "x"), ("logits_odd", "x_odd")):
        print(key, relative_error(np.asarray(top(ref[images], training=False)), ref[key]))
    print("pool", relative_error(np.asarray(features(ref["x"], training=False)), ref["pool"]))
    print("backend", keras.backend.backend())


if __name__ == "__main__":
    main(sys.argv[1])
