"""Export to a TF Serving SavedModel and to TFLite/LiteRT files (what `python export.py` runs).

- `model`: the model to export (loaded like the predict command's), float32.
- `savedmodel`: the serving graph and its signatures.
- `tflite`: TFLite conversion, calibration images, running with LiteRT.
- `int8_weights`: kernels on TFLite's int8 grid with their sums kept (the int8 files' source).
- `versions`: TF Serving's version directories, written atomically.
- `run`: the whole export with its summary and parity table.

TensorFlow backend only. Nothing here imports training or data code.
"""

from nfnet_keras.export.model import ExportError, load_export_model
from nfnet_keras.export.savedmodel import build_archive, describe_signatures
from nfnet_keras.export.versions import VersionWriter, next_version

__all__ = ["ExportError", "VersionWriter", "build_archive", "describe_signatures", "load_export_model", "next_version"]
