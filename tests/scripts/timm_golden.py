"""Prints timm-vs-ours relative errors of the eca_nfnet_l0 golden set on the current backend.

Usage: [KERAS_BACKEND=jax] python tests/scripts/timm_golden.py SAFETENSORS
SAFETENSORS is `support.timm_golden.timm_state_dict()` written as timm's
`model.safetensors`; it is loaded through `create_model("timm/eca_nfnet_l0",
weights=...)`. Prints one `KEY ERROR` line per output (`logits`,
`logits_odd`, `pool`), then `RESULT {json}` with the errors and the backend.
Run as a subprocess by tests/models/test_timm_nfnet.py, since the backend is
fixed at import.
"""

import json
import os
import sys

import keras
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from support.golden import relative_error  # noqa: E402
from support.timm_golden import timm_golden_outputs  # noqa: E402

import nfnet_keras  # noqa: E402


def main(path):
    ref = timm_golden_outputs()
    top = nfnet_keras.create_model(
        "timm/eca_nfnet_l0", weights=path, input_shape=(None, None, 3), classifier_activation=None
    )
    features = keras.Model(top.input, top.get_layer("avg_pool").output)
    errors = {
        "logits": relative_error(np.asarray(top(ref["x"], training=False)), ref["logits"]),
        "logits_odd": relative_error(np.asarray(top(ref["x_odd"], training=False)), ref["logits_odd"]),
        "pool": relative_error(np.asarray(features(ref["x"], training=False)), ref["pool"]),
    }
    for key, error in errors.items():
        print(key, error)
    print("RESULT " + json.dumps({"errors": errors, "backend": keras.backend.backend()}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
