"""One preprocessing everywhere: tf.data, `prepare_images`, the SavedModel and LiteRT agree.

For the same encoded images (JPEG and PNG, of several sizes) and the settings
the model carries (`model.preprocessing`), the evaluation pipeline
(`make_eval_dataset(source, batch, model.preprocessing)`), `prepare_images(images,
model)` + `model.predict`, the exported `serving_default` signature (decoding
and preprocessing in the graph) and the LiteRT fp32 file (on `eval_pixels`) give
the same pixels and the same probabilities, to float rounding, hence the same
top-1. Micro's settings (32 px, crop padding 4) run by default, F0's (256 px,
padding 32) with `-m slow` (its export and conversion take about a minute).
"""

import io

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import nfnet_keras
from nfnet_keras.data import make_eval_dataset, sources
from nfnet_keras.export import savedmodel
from nfnet_keras.export import tflite as litert
from nfnet_keras.models.loading import predict_probabilities
from nfnet_keras.preprocessing import EvalPreprocessing, normalize

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="export is TensorFlow-only (export.py sets the backend itself)"
)


def _encoded_images():
    """Bundled 32 px JPEGs and random photos of other sizes, as JPEG and PNG bytes."""
    _, encoded = litert.encoded_images(None, 6, split="test")
    rng = np.random.default_rng(0)
    for index, (height, width) in enumerate([(300, 200), (61, 97), (256, 256)]):
        smooth = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize((width, height))
        noisy = np.clip(np.asarray(smooth, np.int16) + rng.integers(-20, 21, (height, width, 3)), 0, 255)
        buffer = io.BytesIO()
        Image.fromarray(noisy.astype(np.uint8)).save(buffer, format="PNG" if index % 2 else "JPEG", quality=90)
        encoded.append(buffer.getvalue())
    return encoded


def _model(name, preprocessing):
    keras.utils.set_random_seed(0)
    model = nfnet_keras.create_model(name, weights=None, classes=10, classifier_activation=None)
    rng = np.random.default_rng(0)  # a head with large weights: top-1 varies from image to image
    kernel = model.get_layer("predictions").kernel
    kernel.assign(rng.standard_normal(tuple(kernel.shape)).astype(np.float32))
    assert model.preprocessing == preprocessing
    return model


@pytest.mark.parametrize(
    "name, preprocessing",
    [
        pytest.param("micro", EvalPreprocessing(32, crop_padding=4), id="micro"),
        pytest.param("F0", EvalPreprocessing(256, crop_padding=32), id="F0", marks=pytest.mark.slow),
    ],
)
def test_tf_data_prepare_images_savedmodel_and_litert_agree(name, preprocessing, tmp_path):
    model = _model(name, preprocessing)
    encoded = _encoded_images()

    prepared = nfnet_keras.prepare_images(encoded, model)
    source = sources.from_encoded(encoded, np.arange(len(encoded)) % 2, split="test")  # labels are not used
    batches = [images.numpy() for images, _ in make_eval_dataset(source, 4, model.preprocessing)]
    pixels = litert.eval_pixels(encoded, model)
    np.testing.assert_allclose(np.concatenate(batches), prepared, atol=1e-5)
    np.testing.assert_allclose(np.asarray(normalize(pixels, preprocessing.mean, preprocessing.std)), prepared, atol=1e-5)

    reference = predict_probabilities(model, prepared)
    assert len(set(reference.argmax(-1))) >= 2, "top-1 must vary for the comparison to mean anything"

    archive, _, _ = savedmodel.build_archive(model)
    archive.write_out(str(tmp_path / "saved_model"), verbose=False)
    serving = tf.saved_model.load(str(tmp_path / "saved_model")).signatures["serving_default"]
    served = serving(images=tf.constant(encoded))["probabilities"].numpy()
    tflite_path = tmp_path / "model_fp32.tflite"
    tflite_path.write_bytes(litert.convert(str(tmp_path / "saved_model"), "fp32"))
    lite = litert.run(tflite_path, pixels)

    for probabilities in (served, lite):
        np.testing.assert_allclose(probabilities, reference, atol=1e-5)
        np.testing.assert_array_equal(probabilities.argmax(-1), reference.argmax(-1))
