"""The tiny network of the optimizer / AGC tests (helper, not a test module).

`build_model()` returns the nano NFNet (logits, stochastic depth and dropout
off, so one training step is deterministic) with every `skip_gain` set to
0.5: at DeepMind's init (0) the residual branches get zero gradients, which
would leave most AGC units untouched.
"""

import keras
import numpy as np

INPUT_SHAPE = (32, 32, 3)
CLASSES = 10


def build_model(seed=0, input_shape=INPUT_SHAPE, classes=CLASSES, skip_gain=0.5):
    """The nano NFNet with deterministic weights for `seed`."""
    from nfnet_keras.models.nfnet import NFNet

    keras.utils.set_random_seed(seed)
    model = NFNet(
        "nano",
        classes=classes,
        input_shape=input_shape,
        weights=None,
        classifier_activation=None,
        drop_rate=0.0,
        stochdepth_rate=0.0,
    )
    for v in model.trainable_variables:
        if v.path.endswith("skip_gain"):
            v.assign(np.full(tuple(v.shape), skip_gain, dtype="float32"))
    return model


def fixed_batch(batch_size=16, seed=1, input_shape=INPUT_SHAPE, classes=CLASSES, scale=1.0):
    """A fixed batch of images (N(0, scale)) and one-hot labels."""
    rng = np.random.default_rng(seed)
    x = (scale * rng.standard_normal((batch_size,) + tuple(input_shape))).astype("float32")
    y = np.eye(classes, dtype="float32")[rng.integers(0, classes, batch_size)]
    return x, y
