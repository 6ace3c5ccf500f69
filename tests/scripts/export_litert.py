"""Runs exported .tflite files with ai_edge_litert alone (run by tests/export/test_export.py).

    python tests/scripts/export_litert.py INPUTS.npz OUTPUT.npz FILE.tflite [FILE.tflite ...]

TensorFlow, Keras and nfnet_keras are blocked from import: this is what an
app with only the LiteRT runtime does. INPUTS.npz holds `pixels`, float32
(N, S, S, 3) on the 0..255 scale (resized and cropped, not normalised).
Quantised inputs/outputs are converted with the tensors' scale and zero
point. OUTPUT.npz gets the probabilities under each file's stem, and
`tensorflow_loaded` (whether TensorFlow ended up in sys.modules).
"""

import importlib.abc
import os
import sys

BLOCKED = ("tensorflow", "keras", "nfnet_keras")


class _Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"{name} is blocked in this LiteRT-only process", name=name)
        return None


sys.meta_path.insert(0, _Blocker())

import numpy as np  # noqa: E402
from ai_edge_litert.interpreter import Interpreter  # noqa: E402


def _probabilities(path, pixels):
    interpreter = Interpreter(model_path=path)
    signature = interpreter.get_signature_runner("predict_pixels")
    input_detail = signature.get_input_details()["pixels"]
    output_detail = signature.get_output_details()["probabilities"]
    rows = []
    for image in pixels:  # one image per call, the allocated batch size
        x = image[None]
        scale, zero_point = input_detail["quantization"]
        if scale:
            info = np.iinfo(input_detail["dtype"])
            x = np.clip(np.round(x / scale) + zero_point, info.min, info.max)
        y = signature(pixels=x.astype(input_detail["dtype"]))["probabilities"]
        scale, zero_point = output_detail["quantization"]
        rows.append((y.astype(np.float32) - zero_point) * scale if scale else y.astype(np.float32))
    return np.concatenate(rows, axis=0)


def main(inputs_path, output_path, *paths):
    pixels = np.load(inputs_path)["pixels"]
    results = {os.path.splitext(os.path.basename(p))[0]: _probabilities(p, pixels) for p in paths}
    results["tensorflow_loaded"] = np.asarray("tensorflow" in sys.modules)
    np.savez(output_path, **results)


if __name__ == "__main__":
    main(*sys.argv[1:])
