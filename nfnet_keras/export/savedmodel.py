"""The TF Serving servable of an NFNet: the folded model and its three signatures.

TensorFlow backend only: the SavedModel is traced from TensorFlow ops
(`keras.export.ExportArchive`), so that TF Serving, `tf.saved_model.load` and
the TFLite converter read plain TF ops.

`build_archive(model, top_k)` folds weight standardisation into plain conv
kernels (`nfnet_keras.models.fold_weight_standardization`, once, at export) and
defines the endpoints, all of which call the folded model with `training=False`
(stochastic depth and dropout off) and prepare images with the model's own
`model.preprocessing` (`S` is its `image_size`):

- `serving_default`: `images`, a batch of encoded images (`tf.string [N]`:
  JPEG, PNG, GIF, BMP or WebP bytes; each image may have its own size) ->
  `probabilities` (float32 `[N, K]`), `top_k_indices` (int32 `[N, k]`),
  `top_k_probabilities` (float32 `[N, k]`), `top_k_class_names`
  (string `[N, k]`, from `model.class_names`). The graph decodes
  (`nfnet_keras.preprocessing.decode_image`: JPEGs pixel-identical to
  Pillow), applies the evaluation transform
  (`nfnet_keras.preprocessing.eval_transform_tf`) and the model's
  normalisation (`nfnet_keras.preprocessing.normalize`): the served
  probabilities are `model.predict(nfnet_keras.prepare_images(images, model))`.
  Bytes that are not an image fail the call with `InvalidArgumentError`
  ("Unknown image file format. One of JPEG, ... required."), as a bad
  request; the serving process is unaffected.
- `predict_pixels`: `pixels`, float32 `[N, S, S, 3]` RGB on the 0..255
  scale, already resized and cropped (`nfnet_keras.preprocessing.eval_transform`),
  not normalised -> `probabilities`.
- `predict_pixels_uint8`: the same with uint8 pixels.

The probabilities are the classifier's softmax (a softmax is added when the
classifier returns logits, as `train.py`'s models do). With `jit_compile=True`
the folded model and its softmax are one XLA-compiled function that every
endpoint calls (decoding and resizing stay plain TF ops): faster on CPUs
(benchmarks/RESULTS.md), but only servers with XLA's JIT run it
(`tf.saved_model.load`; TF Serving started with `--xla_cpu_compilation_enabled`).
With `winograd=True` (what `export.py --jit_compile` chooses for CPU exports)
the wide 3x3 convolutions are folded with their kernels in Winograd's
transform domain, with the tiles that suit their output sizes at the model's
image size (`fold_weight_standardization(model, winograd=True, image_size=...)`):
faster under XLA on a CPU (benchmarks/RESULTS.md), 3-4x slower without XLA.
`describe_signatures` reads the signatures back from `saved_model.pb`.
"""

import os

import keras
import tensorflow as tf

from nfnet_keras.checks import check_integer
from nfnet_keras.export import int8_weights
from nfnet_keras.export.model import ExportError, require_tensorflow_backend
from nfnet_keras.models import folding
from nfnet_keras.models.loading import returns_logits
from nfnet_keras.preprocessing import decode_image, eval_transform_tf, normalize

__all__ = ["build_archive", "describe_signatures"]


def build_archive(model, top_k=5, jit_compile=False, winograd=False, int8_grid=False):
    """Folds the model and defines the endpoints (see the module docstring).

    Args:
        model: an `NFModel` with a classifier, computing in float32.
        top_k: number of classes in the `top_k_*` outputs (at most the number
            of classes).
        jit_compile: compile the folded model and softmax with XLA.
        winograd: fold the wide 3x3 convolutions into the Winograd form, for
            the model's image size.
        int8_grid: put the folded kernels on TFLite's int8 weight grid with
            their sums kept (`nfnet_keras.export.int8_weights`): the source of
            the int8 TFLite files, not a servable.

    Returns:
        `(archive, folded_model, k)`: a `keras.export.ExportArchive` ready for
        `write_out`, the folded Keras model it serves, and the `k` used.
    """
    require_tensorflow_backend()
    k = min(check_integer(top_k, "--top_k", error=ExportError), model.num_classes)
    preprocessing = model.preprocessing
    size = preprocessing.image_size
    folded = folding.fold_weight_standardization(model, winograd=winograd, image_size=size)
    if int8_grid:
        int8_weights.snap_kernels(folded)
    names = tf.constant(list(model.class_names), dtype=tf.string)
    logits = returns_logits(model)

    def probabilities(pixels):
        outputs = folded(normalize(pixels, preprocessing.mean, preprocessing.std), training=False)
        return tf.nn.softmax(outputs, axis=-1) if logits else tf.cast(outputs, tf.float32)

    if jit_compile:
        probabilities = tf.function(probabilities, jit_compile=True)

    def prepare(encoded):
        return eval_transform_tf(decode_image(encoded), preprocessing)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="images")])
    def serving_default(images):
        pixels = tf.map_fn(prepare, images, fn_output_signature=tf.TensorSpec([size, size, 3], tf.float32))
        probs = probabilities(pixels)
        top_probs, top_indices = tf.math.top_k(probs, k=k)
        return {
            "probabilities": probs,
            "top_k_indices": top_indices,
            "top_k_probabilities": top_probs,
            "top_k_class_names": tf.gather(names, top_indices),
        }

    @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32, name="pixels")])
    def predict_pixels(pixels):
        return {"probabilities": probabilities(pixels)}

    @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.uint8, name="pixels")])
    def predict_pixels_uint8(pixels):
        return {"probabilities": probabilities(tf.cast(pixels, tf.float32))}

    # No `archive.track(folded)`: the endpoints capture the variables they use, and tracking the
    # model as well stores every weight twice (keras.Variable wrappers and the tf.Variables the
    # traced functions capture; keras-team/keras#23553, also `model.export` in Keras 3.15).
    archive = keras.export.ExportArchive()
    archive.add_endpoint("serving_default", serving_default)
    archive.add_endpoint("predict_pixels", predict_pixels)
    archive.add_endpoint("predict_pixels_uint8", predict_pixels_uint8)
    return archive, folded, k


def describe_signatures(saved_model_dir):
    """`{signature: {"inputs": {name: (dtype, shape)}, "outputs": {...}, "method": str}}` of a SavedModel.

    Read from `saved_model.pb` (what `saved_model_cli show --all` prints), with
    unknown dimensions as -1.
    """
    from tensorflow.core.protobuf import saved_model_pb2  # noqa: PLC0415

    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(saved_model_dir, "saved_model.pb"), "rb") as handle:
        proto.ParseFromString(handle.read())
    result = {}
    for meta_graph in proto.meta_graphs:
        for key, signature in meta_graph.signature_def.items():
            if key.startswith("__"):
                continue

            def tensors(mapping):
                return {
                    name: (
                        tf.dtypes.as_dtype(info.dtype).name,
                        [int(d.size) for d in info.tensor_shape.dim] if not info.tensor_shape.unknown_rank else None,
                    )
                    for name, info in sorted(mapping.items())
                }

            result[key] = {
                "inputs": tensors(signature.inputs),
                "outputs": tensors(signature.outputs),
                "method": signature.method_name,
                "tags": list(meta_graph.meta_info_def.tags),
            }
    return result
