"""Prints DeepMind-vs-ours relative errors for a golden checkpoint on the current backend.

Usage: [KERAS_BACKEND=jax] python tests/scripts/golden_backend.py [--model NAME] [CHECKPOINT]
NAME is a golden set of `support.golden.GOLDEN_SETS` (default `nfnet_f0`); without
CHECKPOINT its golden parameters are written to a temporary pickle first. Prints one
`KEY ERROR` line per output (`logits`, `logits_odd`, `pool`), then `RESULT {json}` with
the same errors and the backend. Run as a subprocess by tests/weights/test_loading.py
and tests/models/test_nf_regnet.py, since the backend is fixed at import.
"""

import argparse
import json
import os
import sys
import tempfile

import keras
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from support.golden import F0, golden_outputs, relative_error, write_golden_checkpoint  # noqa: E402

import nfnet_keras


def main(model_name, checkpoint):
    ref = golden_outputs(model_name)
    top = nfnet_keras.create_model(
        model_name, weights=checkpoint, input_shape=(None, None, 3), classifier_activation=None
    )
    features = keras.Model(top.input, top.get_layer("avg_pool").output)
    errors = {}
    for key, images in (("logits", "x"), ("logits_odd", "x_odd")):
        errors[key] = relative_error(np.asarray(top(ref[images], training=False)), ref[key])
    errors["pool"] = relative_error(np.asarray(features(ref["x"], training=False)), ref["pool"])
    for key, error in errors.items():
        print(key, error)
    print("backend", keras.backend.backend())
    print("RESULT " + json.dumps({"errors": errors, "backend": keras.backend.backend()}), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=F0)
    parser.add_argument("checkpoint", nargs="?")
    args = parser.parse_args()
    if args.checkpoint:
        main(args.model, args.checkpoint)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(args.model, str(write_golden_checkpoint(os.path.join(tmp, "golden.pkl"), model=args.model)))
