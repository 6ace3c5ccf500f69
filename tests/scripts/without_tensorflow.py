"""Imports the backend-neutral subpackages and trains one step with TensorFlow blocked.

    KERAS_BACKEND=jax python tests/scripts/without_tensorflow.py

Prints one line `RESULT {json}` (see tests/test_package.py).
"""

import importlib.abc
import json
import sys


class _Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "tensorflow":
            raise ModuleNotFoundError(f"{name} is blocked in this process", name=name)
        return None


sys.meta_path.insert(0, _Blocker())

import keras  # noqa: E402
import numpy as np  # noqa: E402

import nfnet_keras  # noqa: E402
import nfnet_keras.analysis  # noqa: E402, F401
import nfnet_keras.models  # noqa: E402, F401
import nfnet_keras.preprocessing  # noqa: E402
import nfnet_keras.training  # noqa: E402
import nfnet_keras.weights  # noqa: E402, F401

model = nfnet_keras.create_model("nano", classes=3, classifier_activation=None)
model.compile(
    optimizer=nfnet_keras.training.NFNetSGD(learning_rate=0.1, clipping=0.01, ema_decay=0.99),
    loss=nfnet_keras.training.NFNetCrossEntropy(),
)
images = np.random.default_rng(0).uniform(0, 255, (2, 40, 40, 3)).astype(np.float32)
batch = nfnet_keras.prepare_images(images, model)
loss = model.train_on_batch(batch, keras.utils.to_categorical([0, 2], 3))
print(
    "RESULT "
    + json.dumps(
        {
            "backend": keras.backend.backend(),
            "loss_is_finite": bool(np.isfinite(loss)),
            "batch_shape": list(batch.shape),
            "tensorflow_loaded": "tensorflow" in sys.modules,
        }
    ),
    flush=True,
)
