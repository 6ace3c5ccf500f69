"""Export an NFNet for TF Serving (SavedModel) and for mobile (TFLite / LiteRT).

    python export.py --model runs/default/model.keras --export_dir exports --name nfnet
    python export.py --model runs/default/model.keras --tflite all          # + fp32, fp16, int8, int8_full
    python export.py --variant F0 --weights imagenet --tflite fp16,int8
    python export.py --variant F0 --weights path/to/F0_haiku.npz            # or a .weights.h5, timm .safetensors

Writes the SavedModel to <export_dir>/<name>/<version>/ (the layout TF Serving
watches: point model_base_path at <export_dir>/<name>), and the TFLite files to
<export_dir>/<name>_tflite/<version>/<name>_<flavour>.tflite. The version is
the next free integer unless --version is given; an existing version is refused
unless --overwrite. Everything is written to a hidden staging directory first and
renamed into place at the end, so a failed export leaves no partial version.

SavedModel signatures (all run the model with inference-time folding: each
weight-standardised conv is a plain conv, stochastic depth and dropout are off):
  serving_default       images: string [N] (JPEG/PNG/GIF/BMP/WebP bytes; decode, the
                        reference evaluation resize + centre crop and the normalisation
                        run in the graph) -> probabilities [N, K], top_k_indices,
                        top_k_probabilities, top_k_class_names [N, k]
  predict_pixels        pixels: float32 [N, S, S, 3], RGB 0..255, already resized and
                        cropped (nfnet_keras.preprocessing.eval_transform), not normalised -> probabilities
  predict_pixels_uint8  the same with uint8 pixels
The TFLite files hold predict_pixels (int8_full: int8 input and output, quantised
with the tensors' scale and zero point; printed in the summary).

The model is loaded as the predict command loads it (nfnet_keras.models.loading):
a .keras file or train.py run directory, with the EMA weights saved beside it when
they are there (--noema: the raw weights), or --variant NAME with --weights. The model
carries its evaluation preprocessing and class names (train.py stores its dataset's
names); --image_size, --crop_padding and --class_names FILE override them.

The command ends with a parity table: max |difference| of the probabilities and top-1
agreement of every artifact against the Keras model, on real images (--parity_images
FOLDER, or the bundled CIFAR-10 test images). Exporting needs the TensorFlow backend
(set here). The artifacts do not need nfnet_keras: the SavedModel runs on TensorFlow
(TF Serving), the .tflite files on the LiteRT runtime (ai-edge-litert) alone.

An error (a missing or unreadable file, a bad flag value, an existing version, a
failed weights download) is one line on stderr, `error: ...`, and exit status 1;
Ctrl-C is `interrupted` and exit status 130. Set NFNET_KERAS_TRACEBACK=1 to see the
full traceback instead (nfnet_keras/cli.py).
"""

import importlib.util
import os
import sys

from absl import app, flags, logging

FLAGS = flags.FLAGS
_NAMES = []


def _define(kind, name, default, help_text):
    getattr(flags, f"DEFINE_{kind}")(name, default, help_text)
    _NAMES.append(name)


_define("string", "model", None, "A .keras model, or a train.py run directory (e.g. runs/default).")
_define("string", "variant", None, "A model name (nfnet_f0, F0, F0+, micro, ...) with --weights.")
_define(
    "string",
    "weights",
    None,
    "With --variant: 'imagenet' (default), 'none' (random init) or a weights file "
    "(Keras .weights.h5, DeepMind checkpoint, timm .safetensors, .npz).",
)
_define("boolean", "ema", None, "Export the EMA weights saved beside --model; default: when they are there.")
_define("integer", "image_size", None, "Input size S (default: the model's own).")
_define("integer", "crop_padding", None, "Evaluation resize to S + padding, then centre crop S (default: the model's).")
_define("string", "class_names", None, "Text file with one class name per line (default: the model's own).")
_define("integer", "classes", None, "Number of classes with --weights none (default 1000).")
_define("string", "export_dir", "exports", "Base folder of the exports.")
_define("string", "name", None, "Model name: the folder under --export_dir (default: the Keras model's name).")
_define("integer", "version", None, "TF Serving version number (default: the next free one).")
_define("boolean", "overwrite", False, "Replace an existing version.")
_define("integer", "top_k", 5, "Classes in the top_k_* outputs of serving_default.")
_define("list", "tflite", [], "TFLite flavours to write: fp32, fp16, int8 (dynamic range), int8_full, or all.")
_define("string", "representative_images", None, "Image folder for int8_full calibration (default: bundled sample).")
_define("integer", "representative_count", 100, "Calibration images for int8_full.")
_define("boolean", "parity", True, "Check every artifact against the Keras model and print the table.")
_define("string", "parity_images", None, "Image folder for the parity check (default: bundled CIFAR-10 test images).")
_define("integer", "parity_count", 100, "Images in the parity check.")
_define(
    "string",
    "grouped_conv",
    None,
    "Grouped convolutions written into the SavedModel: split (one conv per group, fast on CPUs) or native "
    "(one grouped conv: for GPU and TPU servers). Default: this machine's form (NFNET_GROUPED_CONV or auto).",
)
_define(
    "boolean",
    "jit_compile",
    False,
    "Compile the model inside the signatures with XLA: faster on CPUs, but only for servers with XLA's JIT "
    "(tf.saved_model.load; TF Serving with --xla_cpu_compilation_enabled). Not with --tflite.",
)
_define(
    "boolean",
    "winograd",
    None,
    "Store the wide 3x3 convolutions' kernels in Winograd's form, F(4x4, 3x3) where 4x4 tiles fit their "
    "outputs and F(2x2, 3x3) elsewhere (same outputs up to float32 rounding; faster under XLA on CPUs). "
    "Default: on for --jit_compile exports with split grouped convolutions.",
)


def _load_cli():
    """`nfnet_keras/cli.py` by its path: importing the package would import Keras before the backend is set."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "nfnet_keras", "cli.py")
    spec = importlib.util.spec_from_file_location("nfnet_keras_cli", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    backend = os.environ.get("KERAS_BACKEND")
    if backend and backend != "tensorflow":
        print(f"Note: exporting with the TensorFlow backend (KERAS_BACKEND={backend} is ignored).", file=sys.stderr)
    os.environ["KERAS_BACKEND"] = "tensorflow"  # before Keras is imported
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # TensorFlow's C++ INFO lines
    logging.set_verbosity(logging.WARNING)  # TensorFlow's Python INFO lines (SavedModel writing)
    from nfnet_keras.export import run as export_lib  # noqa: PLC0415

    export_lib.run({name: FLAGS[name].value for name in _NAMES})


if __name__ == "__main__":
    cli = _load_cli()  # user errors: one line and exit status 1 (bugs keep their traceback)
    app.run(lambda argv: sys.exit(cli.run_main(main, argv)))
