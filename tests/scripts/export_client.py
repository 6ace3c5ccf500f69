"""A TensorFlow-only client of an exported NFNet SavedModel (run by tests/export/test_export.py).

    python tests/scripts/export_client.py SAVED_MODEL_DIR INPUTS.npz OUTPUT.json

`nfnet_keras` cannot be imported here (a meta-path blocker refuses it, since
the package is installed in editable mode), so everything below runs on
TensorFlow and the tensorflow-serving-api protos alone, as in a serving stack.
(TensorFlow itself imports Keras, one of its dependencies; the SavedModel needs
no Keras code: its graph holds TensorFlow ops only.) INPUTS.npz holds `encoded` + `offsets`
(image files, concatenated), `pixels` (float32) and `pixels_uint8`. The script:

- loads the SavedModel and calls `serving_default` on the encoded images;
- builds a `tensorflow_serving.apis.predict_pb2.PredictRequest`, serialises
  and parses it (as on the wire), and feeds the signature from its tensor
  proto, returning the result in a `PredictResponse`;
- calls `predict_pixels` and `predict_pixels_uint8`;
- sends non-image bytes and a truncated JPEG and records the errors, then
  checks that the same loaded model still answers.
"""

import importlib.abc
import json
import sys

BLOCKED = ("nfnet_keras",)


class _Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"{name} is blocked in this TF-only client", name=name)
        return None


sys.meta_path.insert(0, _Blocker())

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow_serving.apis import predict_pb2  # noqa: E402


def _split(buffer, offsets):
    raw = buffer.tobytes()
    return [raw[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]


def _error(call):
    try:
        call()
    except tf.errors.InvalidArgumentError as error:
        return {"type": type(error).__name__, "message": error.message}
    return None


def main(saved_model_dir, inputs_path, output_path):
    inputs = np.load(inputs_path)
    encoded = _split(inputs["encoded"], inputs["offsets"])
    model = tf.saved_model.load(saved_model_dir)
    serve = model.signatures["serving_default"]
    direct = serve(images=tf.constant(encoded))

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "nfnet"
    request.model_spec.signature_name = "serving_default"
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(np.asarray(encoded, dtype=object)))
    received = predict_pb2.PredictRequest.FromString(request.SerializeToString())
    signature = model.signatures[received.model_spec.signature_name]
    feed = {key: tf.constant(tf.make_ndarray(proto)) for key, proto in received.inputs.items()}
    response = predict_pb2.PredictResponse()
    for key, value in signature(**feed).items():
        response.outputs[key].CopyFrom(tf.make_tensor_proto(value.numpy()))
    served = {key: tf.make_ndarray(proto) for key, proto in response.outputs.items()}

    pixels = model.signatures["predict_pixels"](pixels=tf.constant(inputs["pixels"]))
    pixels_uint8 = model.signatures["predict_pixels_uint8"](pixels=tf.constant(inputs["pixels_uint8"]))

    not_an_image = _error(lambda: serve(images=tf.constant([encoded[0], b"this is not an image"])))
    truncated = _error(lambda: serve(images=tf.constant([encoded[0][: len(encoded[0]) // 3]])))
    after_errors = serve(images=tf.constant(encoded[:1]))["probabilities"].numpy()

    result = {
        "probabilities": direct["probabilities"].numpy().tolist(),
        "top_k_indices": direct["top_k_indices"].numpy().tolist(),
        "top_k_probabilities": direct["top_k_probabilities"].numpy().tolist(),
        "top_k_class_names": [[n.decode() for n in row] for row in direct["top_k_class_names"].numpy()],
        "request_probabilities": served["probabilities"].tolist(),
        "request_output_keys": sorted(served),
        "pixels_probabilities": pixels["probabilities"].numpy().tolist(),
        "pixels_uint8_probabilities": pixels_uint8["probabilities"].numpy().tolist(),
        "not_an_image": not_an_image,
        "truncated": truncated,
        "after_errors": after_errors.tolist(),
        "blocked_modules_loaded": sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED),
    }
    with open(output_path, "w") as handle:
        json.dump(result, handle)


if __name__ == "__main__":
    main(*sys.argv[1:])
