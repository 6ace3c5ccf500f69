"""TFLite / LiteRT files of an exported NFNet: conversion, calibration images, running.

Conversion is TensorFlow-only: `convert` runs `tf.lite.TFLiteConverter.from_saved_model`
on the SavedModel written by `nfnet_keras.export.savedmodel` (its `predict_pixels`
signature). The converter never sees the Keras model: building it from
concrete functions with `trackable_obj=model` silently gives wrong outputs
in TF 2.21, and `from_saved_model` does not.

Running needs only `ai_edge_litert` (the LiteRT interpreter, no TensorFlow):
`run` and `describe`. The same code works on a phone's LiteRT runtime with
the details `describe` prints.

Every file has one signature, `predict_pixels`: input `pixels`, RGB on the
0..255 scale, already squash-resized and centre-cropped to `S x S` by the
model's evaluation transform (`eval_pixels`) but not normalised (the model normalises),
shape `[1, S, S, 3]` (the batch dimension is resizable: signature
`[-1, S, S, 3]`); output `probabilities` `[1, K]`. Flavours (`FLAVOURS`):

- `fp32`: float32 weights and compute.
- `fp16`: float16 weights (half the size), float32 input/output; CPUs
  dequantise the weights to float32, GPU delegates compute in float16.
- `int8`: dynamic-range quantisation: int8 weights (tensors of at least 1024
  elements), activations quantised on the fly, float32 input/output.
- `int8_full`: full-integer quantisation calibrated on a representative
  dataset: int8 weights and activations, **int8 input and output**. Quantise
  the pixels with the input's `(scale, zero_point)`: `q = round(x / scale) +
  zero_point`, clipped to [-128, 127]; dequantise the output with
  `(q - zero_point) * scale`. `run` does both.

`export.py` converts `int8` and `int8_full` from a copy of the SavedModel
whose kernels are already on the converter's int8 grid, each rounded so that
its sums keep their nearest level (`nfnet_keras.export.int8_weights`; the
converter then stores exactly those integers; what that gains:
benchmarks/RESULTS.md, "Where the int8 agreement goes"). `convert` itself
converts what it is given.

Calibration and parity images (`encoded_images`) come from a folder (the image
files a folder dataset reads) or from the CIFAR-10 sample bundled with the
package, through `nfnet_keras.data.sources`: the encoded files, not the
training input pipeline.
"""

import os

import numpy as np

from nfnet_keras.checks import check_integer
from nfnet_keras.data import sources
from nfnet_keras.preprocessing import eval_transform, load_image

__all__ = [
    "FLAVOURS",
    "INT8_FLAVOURS",
    "SIGNATURE",
    "parse_flavours",
    "convert",
    "encoded_images",
    "representative_pixels",
    "eval_pixels",
    "load_interpreter",
    "quantize",
    "dequantize",
    "run",
    "describe",
    "format_details",
]

#: TFLite flavours and what they hold.
FLAVOURS = {
    "fp32": "float32 weights and compute",
    "fp16": "float16 weights, float32 input/output",
    "int8": "dynamic-range int8 weights, float32 input/output",
    "int8_full": "full-integer int8 weights and activations, int8 input/output",
}
#: The flavours with int8 weights (converted from the int8 source; see the module docstring).
INT8_FLAVOURS = ("int8", "int8_full")
#: The SavedModel signature the TFLite files are converted from (float32 pixels in).
SIGNATURE = "predict_pixels"


def parse_flavours(values):
    """`["fp32", "int8_full"]`, `"fp32,fp16"` or `"all"` -> a tuple of flavours, in `FLAVOURS` order.

    Raises:
        ValueError: for an unknown flavour.
    """
    if values is None:
        return ()
    if isinstance(values, str):
        values = values.split(",")
    wanted = [str(v).strip().lower() for v in values if str(v).strip()]
    if "all" in wanted:
        return tuple(FLAVOURS)
    unknown = [v for v in wanted if v not in FLAVOURS]
    if unknown:
        raise ValueError(
            f"unknown TFLite format(s) {unknown}; choose from {', '.join(FLAVOURS)} (comma-separated) or 'all'"
        )
    return tuple(f for f in FLAVOURS if f in wanted)


def convert(saved_model_dir, flavour, representative_data=None, signature_key=SIGNATURE):
    """Converts one signature of a SavedModel to a TFLite flatbuffer (TensorFlow needed).

    Args:
        saved_model_dir: a SavedModel written by `nfnet_keras.export.savedmodel`.
        flavour: a key of `FLAVOURS`.
        representative_data: for `int8_full`, float32 pixels `(N, S, S, 3)` on
            the 0..255 scale (`representative_pixels`), fed one at a time.
        signature_key: the signature to convert.

    Returns:
        The `.tflite` file contents (`bytes`).
    """
    import tensorflow as tf  # noqa: PLC0415

    if flavour not in FLAVOURS:
        parse_flavours([flavour])  # raises with the list of flavours
    converter = tf.lite.TFLiteConverter.from_saved_model(os.fspath(saved_model_dir), signature_keys=[signature_key])
    if flavour == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif flavour == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif flavour == "int8_full":
        if representative_data is None or len(representative_data) == 0:
            raise ValueError("int8_full needs representative images (representative_pixels)")
        data = np.asarray(representative_data, dtype=np.float32)

        def representative_dataset():
            for image in data:
                yield [image[None]]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative_dataset
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    return converter.convert()


def _spread(items, count):
    """`count` items spread evenly over `items` (all of them when there are fewer)."""
    if count >= len(items):
        return list(items)
    return [items[i] for i in np.linspace(0, len(items) - 1, count).round().astype(int)]


def encoded_images(folder=None, count=100, split="train"):
    """`(names, encoded bytes)` of up to `count` images spread over a folder or the bundled sample.

    Args:
        folder: a folder searched recursively for image files, as the folder
            datasets read them (`nfnet_keras.data.sources.list_images`); None:
            the bundled CIFAR-10 sample.
        count: how many images (evenly spaced over the sorted list, so every
            class folder contributes).
        split: the bundled sample's split (`"train"` or `"test"`).

    Raises:
        ValueError: for a missing folder, one without images, or `count < 1`.
    """
    check_integer(count, "the number of images")
    if folder is None:
        encoded = sources.bundled_cifar10_sample().examples(split)
        indices = _spread(list(range(len(encoded))), count)
        return [f"cifar10_sample/{split}/{i}" for i in indices], [bytes(encoded[i]) for i in indices]
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise ValueError(f"image folder not found: {folder}")
    files = sources.list_images(folder)
    if not files:
        raise ValueError(f"{folder}: no image files ({', '.join(sources.IMAGE_EXTENSIONS)}) found")
    chosen = _spread(files, count)
    contents = []
    for path in chosen:
        with open(path, "rb") as handle:
            contents.append(handle.read())
    return chosen, contents


def eval_pixels(encoded, preprocessing):
    """Decoded pixels after the evaluation transform, `(N, S, S, 3)` float32 on 0..255 (not normalised).

    Args:
        encoded: encoded images (bytes or paths).
        preprocessing: the model they are for (its `model.preprocessing`) or an
            `EvalPreprocessing`.
    """
    import keras  # noqa: PLC0415

    batch = [keras.ops.convert_to_numpy(eval_transform(load_image(item), preprocessing)) for item in encoded]
    return np.stack(batch).astype(np.float32, copy=False)


def representative_pixels(preprocessing, folder=None, count=100):
    """Calibration pixels for `int8_full`: `count` images of `folder` or of the bundled sample's train split."""
    _, encoded = encoded_images(folder, count, split="train")
    return eval_pixels(encoded, preprocessing)


def load_interpreter(path, num_threads=None):
    """An `ai_edge_litert` interpreter for `path` (no TensorFlow needed)."""
    from ai_edge_litert.interpreter import Interpreter  # noqa: PLC0415

    return Interpreter(model_path=os.fspath(path), num_threads=num_threads)


def quantize(x, detail):
    """Float `x` as the tensor of `detail` (an interpreter's tensor details) takes it.

    `round(x / scale) + zero_point`, clipped to the integer type, for a
    quantised tensor; a cast for a float one.
    """
    scale, zero_point = detail["quantization"]
    dtype = np.dtype(detail["dtype"])
    if dtype.kind == "f" or scale == 0:
        return x.astype(dtype)
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale) + zero_point, info.min, info.max).astype(dtype)


def dequantize(q, detail):
    """The float32 values of `q`, a tensor of `detail`: `(q - zero_point) * scale` where quantised."""
    scale, zero_point = detail["quantization"]
    if np.dtype(detail["dtype"]).kind == "f" or scale == 0:
        return q.astype(np.float32)
    return ((q.astype(np.float32) - zero_point) * scale).astype(np.float32)


def run(path, pixels, batch_size=16, num_threads=None):
    """Runs a `.tflite` file on float pixels `(N, S, S, 3)`; returns float32 probabilities `(N, K)`.

    Quantised inputs and outputs (`int8_full`) are quantised and dequantised
    with the tensors' `(scale, zero_point)`. Batches of `batch_size` when the
    batch dimension is resizable, else one image at a time.
    """
    interpreter = load_interpreter(path, num_threads=num_threads)
    pixels = np.asarray(pixels, dtype=np.float32)
    input_detail = interpreter.get_input_details()[0]
    resizable = int(input_detail["shape_signature"][0]) == -1
    step = batch_size if resizable else int(input_detail["shape"][0])
    outputs = []
    current = None
    for start in range(0, len(pixels), step):
        chunk = pixels[start : start + step]
        if resizable and current != len(chunk):
            interpreter.resize_tensor_input(input_detail["index"], [len(chunk), *pixels.shape[1:]])
            interpreter.allocate_tensors()
            current = len(chunk)
        elif current is None:
            interpreter.allocate_tensors()
            current = len(chunk)
        detail = interpreter.get_input_details()[0]
        interpreter.set_tensor(detail["index"], quantize(chunk, detail))
        interpreter.invoke()
        output_detail = interpreter.get_output_details()[0]
        outputs.append(dequantize(interpreter.get_tensor(output_detail["index"]), output_detail))
    return np.concatenate(outputs, axis=0)


def describe(path):
    """`{"inputs": [...], "outputs": [...], "signatures": {...}}` of a `.tflite` file.

    Each tensor: `signature_name` (its name in the file's signature, e.g.
    `pixels`), `name` (the tensor's own name), `dtype`, `shape` (as
    allocated), `shape_signature` (-1: resizable) and `quantization`
    `(scale, zero_point)` (`(0.0, 0)`: not quantised).
    """
    interpreter = load_interpreter(path)
    signatures = interpreter.get_signature_list()
    names = {}
    for key in signatures:
        runner = interpreter.get_signature_runner(key)
        for details in (runner.get_input_details(), runner.get_output_details()):
            names.update({d["index"]: name for name, d in details.items()})

    def tensors(details):
        return [
            {
                "signature_name": names.get(d["index"], d["name"]),
                "name": d["name"],
                "dtype": np.dtype(d["dtype"]).name,
                "shape": [int(s) for s in d["shape"]],
                "shape_signature": [int(s) for s in d["shape_signature"]],
                "quantization": (float(d["quantization"][0]), int(d["quantization"][1])),
            }
            for d in details
        ]

    return {
        "inputs": tensors(interpreter.get_input_details()),
        "outputs": tensors(interpreter.get_output_details()),
        "signatures": signatures,
    }


def format_details(details):
    """One line per signature, input and output tensor of `describe`'s result."""
    lines = [
        f"signature {key!r}: inputs {value['inputs']}, outputs {value['outputs']}"
        for key, value in details["signatures"].items()
    ]
    for kind in ("inputs", "outputs"):
        for tensor in details[kind]:
            scale, zero_point = tensor["quantization"]
            quant = f"; quantised: real = {scale:.6g} * (q - ({zero_point}))" if scale else ""
            lines.append(
                f"  {kind[:-1]:<6s} {tensor['signature_name']} (tensor {tensor['name']}): {tensor['dtype']} "
                f"{tensor['shape_signature']}{quant}"
            )
    return lines
