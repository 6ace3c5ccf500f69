"""Prints DeepMind-vs-ours relative errors for the golden F0 checkpoint on the current backend.

Usage: [KERAS_BACKEND=jax] python tests/scripts/golden_backend.py [CHECKPOINT]
Without CHECKPOINT the golden parameters are written to a temporary pickle first.
Run as a subprocess by tests/weights/test_loading.py, since the backend is fixed at import.
"""

import os
import sys
import tempfile

import keras
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from support.golden import golden_outputs, relative_error, write_golden_checkpoint  # noqa: E402

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
    if len(sys.argv) > 1:
        main(sys.argv[1])
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(str(write_golden_checkpoint(os.path.join(tmp, "F0_golden.npz"))))
