"""The export behind `export.py`: SavedModel, TFLite files, summary and parity table.

`run(settings)` takes the command-line settings (a dict with the keys of
`export.py`'s flags), writes

- `<export_dir>/<name>/<version>/`: the SavedModel (`nfnet_keras.export.savedmodel`),
- `<export_dir>/<name>_tflite/<version>/<name>_<flavour>.tflite` for each
  requested TFLite flavour (`nfnet_keras.export.tflite`; `int8` and `int8_full` from a
  temporary second SavedModel whose kernels are on the int8 grid with their sums kept,
  `nfnet_keras.export.int8_weights`),

each through a staging directory renamed into place at the end
(`nfnet_keras.export.versions`), prints what it
wrote (paths, sizes, signatures, TFLite tensor details, how long each step
took) and a parity table against the Keras model on real images, and returns
the same as a dict. TensorFlow backend only.
"""

import collections
import contextlib
import os
import tempfile
import time

import numpy as np
import tensorflow as tf

from nfnet_keras.checks import check_integer
from nfnet_keras.export import savedmodel, versions
from nfnet_keras.export import tflite as litert
from nfnet_keras.export.model import ExportError, load_export_model, require_tensorflow_backend
from nfnet_keras.models import folding
from nfnet_keras.models.layers.ws_conv import grouped_conv_mode, grouped_conv_override
from nfnet_keras.models.loading import predict_probabilities
from nfnet_keras.preprocessing import prepare_images, preprocess_input

__all__ = ["DEFAULTS", "run", "parity_table", "format_summary", "directory_size"]

#: Settings `run` accepts, with their defaults (the flags of `export.py`).
DEFAULTS = {
    "model": None,
    "variant": None,
    "weights": None,
    "ema": None,
    "image_size": None,
    "crop_padding": None,
    "class_names": None,
    "classes": None,
    "export_dir": "exports",
    "name": None,
    "version": None,
    "overwrite": False,
    "top_k": 5,
    "tflite": (),
    "representative_images": None,
    "representative_count": 100,
    "parity": True,
    "parity_images": None,
    "parity_count": 100,
    "grouped_conv": None,
    "jit_compile": False,
    "winograd": None,
}


def _check_folder(path, flag):
    if path is not None and not os.path.isdir(path):
        raise ExportError(f"--{flag}: folder not found: {path}")


def _check_export_dir(path):
    """Refuses an export folder that is a file or lies under one (before the model is loaded)."""
    probe = os.path.abspath(path)
    while not os.path.exists(probe):  # the nearest part of the path that exists
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        raise ExportError(f"--export_dir {path}: {probe} is a file, not a folder")


def run(settings, print_fn=print):
    """Exports as `settings` say; returns the results dict (see the module docstring).

    Raises:
        ExportError: for bad input, before anything is written.
        OSError: for a file that cannot be read or written, and
            `nfnet_keras.weights.loading.WeightsDownloadError` for ImageNet
            weights that cannot be downloaded.
    """
    unknown = sorted(set(settings) - set(DEFAULTS))
    if unknown:
        raise ExportError(f"unknown export settings {unknown}")
    settings = {**DEFAULTS, **settings}
    require_tensorflow_backend()
    # ---- cheap checks first -----------------------------------------------------
    try:
        flavours = litert.parse_flavours(settings["tflite"])
    except ValueError as error:
        raise ExportError(str(error)) from error
    for key in ("top_k", "version", "representative_count", "parity_count"):
        check_integer(settings[key], f"--{key}", error=ExportError, allow_none=key == "version")
    if settings["name"] is not None:
        versions.check_name(settings["name"])
    if settings["grouped_conv"] not in (None, "split", "native"):
        raise ExportError(f"--grouped_conv must be split or native, got {settings['grouped_conv']!r}")
    if settings["grouped_conv"] == "native" and flavours:
        raise ExportError("--grouped_conv native is for GPU and TPU SavedModel servers; export the TFLite files without it")
    if settings["jit_compile"] and flavours:
        raise ExportError("--jit_compile is for SavedModel servers with XLA; export the TFLite files without it")
    with grouped_conv_override(settings["grouped_conv"]):
        grouped_conv = grouped_conv_mode()
    # Winograd pays where the servable is XLA-compiled with the grouped convs in the CPU form.
    winograd_suits = bool(settings["jit_compile"]) and grouped_conv == "split"
    winograd = winograd_suits if settings["winograd"] is None else bool(settings["winograd"])
    if winograd and not winograd_suits:
        raise ExportError(
            "--winograd is for XLA-compiled CPU servables: it needs --jit_compile and --grouped_conv split"
        )
    _check_export_dir(settings["export_dir"])
    if "int8_full" in flavours:
        _check_folder(settings["representative_images"], "representative_images")
    if settings["parity"]:
        _check_folder(settings["parity_images"], "parity_images")
    timings = {}

    started = time.time()
    loaded = load_export_model(
        model_path=settings["model"],
        variant=settings["variant"],
        weights=settings["weights"],
        ema=settings["ema"],
        image_size=settings["image_size"],
        crop_padding=settings["crop_padding"],
        class_names_file=settings["class_names"],
        classes=settings["classes"],
    )
    timings["load the model"] = time.time() - started
    model, preprocessing = loaded.model, loaded.model.preprocessing
    name = versions.check_name(settings["name"] or model.name)
    export_dir = os.path.abspath(settings["export_dir"])
    base = os.path.join(export_dir, name)
    tflite_base = os.path.join(export_dir, f"{name}_tflite")
    version = settings["version"] or versions.next_version(base, tflite_base)
    saved_model_dir = os.path.join(base, str(version))
    tflite_dir = os.path.join(tflite_base, str(version))
    targets = [saved_model_dir] + ([tflite_dir] if flavours else [])

    tflite_files = {}
    with versions.VersionWriter(targets, overwrite=settings["overwrite"]) as writer, contextlib.ExitStack() as stack:
        step = time.time()
        staged = writer.staging(saved_model_dir)
        # The convolutions are traced (in build_archive and write_out) in the form asked for.
        with grouped_conv_override(settings["grouped_conv"]):
            archive, folded, top_k = savedmodel.build_archive(model, top_k=settings["top_k"],
                                                              jit_compile=settings["jit_compile"], winograd=winograd)
            archive.write_out(staged, verbose=False)
        timings["fold, trace and write the SavedModel"] = time.time() - step
        if "int8_full" in flavours:
            step = time.time()
            calibration = litert.representative_pixels(
                preprocessing,
                folder=settings["representative_images"],
                count=settings["representative_count"],
            )
            timings[f"read {len(calibration)} representative images"] = time.time() - step
        int8_source = None
        if any(flavour in litert.INT8_FLAVOURS for flavour in flavours):
            step = time.time()
            int8_source = os.path.join(stack.enter_context(tempfile.TemporaryDirectory()), "int8_source")
            with grouped_conv_override(settings["grouped_conv"]):
                int8_archive, _, _ = savedmodel.build_archive(model, top_k=settings["top_k"], int8_grid=True)
                int8_archive.write_out(int8_source, verbose=False)
            timings["kernels on the int8 grid, trace and write the int8 source"] = time.time() - step
        for flavour in flavours:
            step = time.time()
            source = int8_source if flavour in litert.INT8_FLAVOURS else staged
            contents = litert.convert(source, flavour, calibration if flavour == "int8_full" else None)
            file_name = f"{name}_{flavour}.tflite"
            with open(os.path.join(writer.staging(tflite_dir), file_name), "wb") as handle:
                handle.write(contents)
            tflite_files[flavour] = os.path.join(tflite_dir, file_name)
            timings[f"TFLite {flavour}"] = time.time() - step

    winograd_convs = folding.winograd_convs(folded)
    results = {
        "source": loaded.source,
        "image_size": preprocessing.image_size,
        "crop_padding": preprocessing.crop_padding,
        "resize": preprocessing.resize,
        "grouped_conv": grouped_conv,
        "jit_compile": bool(settings["jit_compile"]),
        "winograd_convs": len(winograd_convs),
        # Output tile size -> how many of them compute with it.
        "winograd_tiles": dict(sorted(collections.Counter(winograd_convs.values()).items())),
        "num_classes": model.num_classes,
        "top_k": top_k,
        "version": version,
        "saved_model": {
            "path": saved_model_dir,
            "bytes": directory_size(saved_model_dir),
            "signatures": savedmodel.describe_signatures(saved_model_dir),
        },
        "tflite": {
            flavour: {"path": path, "bytes": os.path.getsize(path), "details": litert.describe(path)}
            for flavour, path in tflite_files.items()
        },
        "timings": timings,
    }
    if settings["parity"]:
        step = time.time()
        results["parity"] = parity_table(
            model,
            folded,
            saved_model_dir,
            tflite_files,
            folder=settings["parity_images"],
            count=settings["parity_count"],
        )
        results["parity_images"] = settings["parity_images"] or "the bundled CIFAR-10 sample, test split"
        timings["parity check"] = time.time() - step
    results["wall_time_seconds"] = time.time() - started
    for line in format_summary(results):
        print_fn(line)
    return results


def directory_size(path):
    """Total size in bytes of the files under `path`."""
    total = 0
    for root, _, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    return total


def _call(signature, key, inputs, batch_size=16):
    outputs = [
        signature(**{key: tf.constant(inputs[start : start + batch_size])})["probabilities"].numpy()
        for start in range(0, len(inputs), batch_size)
    ]
    return np.concatenate(outputs, axis=0)


def _row(artifact, inputs, probabilities, reference):
    return {
        "artifact": artifact,
        "inputs": inputs,
        "images": int(len(reference)),
        "max_abs_diff": float(np.max(np.abs(probabilities - reference))),
        "top1_agreement": float(np.mean(np.argmax(probabilities, -1) == np.argmax(reference, -1))),
    }


def parity_table(model, folded, saved_model_dir, tflite_files, folder=None, count=100):
    """Max |probability difference| and top-1 agreement of every artifact against the Keras model.

    The reference is the (unfolded) Keras model with the exported weights on
    `nfnet_keras.prepare_images(images, model)` of the same encoded images; the
    uint8 endpoint is compared with the Keras model on the same rounded pixels.
    Images: `count` spread over `folder`, or over the bundled CIFAR-10 test split.
    """
    preprocessing = model.preprocessing
    _, encoded = litert.encoded_images(folder, count, split="test")
    inputs = prepare_images(encoded, model)
    reference = predict_probabilities(model, inputs)
    pixels = litert.eval_pixels(encoded, preprocessing)
    pixels_uint8 = np.clip(np.round(pixels), 0, 255).astype(np.uint8)
    normalized_uint8 = np.asarray(preprocess_input(pixels_uint8, mean=preprocessing.mean, std=preprocessing.std))
    reference_uint8 = predict_probabilities(model, normalized_uint8)
    loaded = tf.saved_model.load(saved_model_dir)
    signatures = loaded.signatures
    rows = [
        _row("Keras, folded", "normalised pixels", predict_probabilities(folded, inputs), reference),
        _row(
            "SavedModel serving_default",
            "encoded images",
            _call(signatures["serving_default"], "images", np.asarray(encoded, dtype=object)),
            reference,
        ),
        _row(
            "SavedModel predict_pixels",
            "float32 pixels",
            _call(signatures["predict_pixels"], "pixels", pixels),
            reference,
        ),
        _row(
            "SavedModel predict_pixels_uint8",
            "uint8 pixels (vs Keras on the same)",
            _call(signatures["predict_pixels_uint8"], "pixels", pixels_uint8),
            reference_uint8,
        ),
    ]
    for flavour, path in tflite_files.items():
        kind = "int8 pixels (quantised)" if flavour == "int8_full" else "float32 pixels"
        rows.append(_row(f"TFLite {flavour}", kind, litert.run(path, pixels), reference))
    return rows


def _megabytes(size):
    return f"{size / 1e6:.1f} MB"


def _shape(shape):
    return "unknown rank" if shape is None else "[" + ", ".join(str(d) for d in shape) + "]"


# How the summary names each `EvalPreprocessing.resize` mode.
_RESIZE_WORDS = {"squash": "squash-resize", "shorter_side": "shorter side resized"}


# What each grouped-convolution form written into the SavedModel is fast on.
_GROUPED_CONV_WORDS = {"split": "one conv per group: fast on CPUs", "native": "one grouped conv: for GPU/TPU servers"}


def format_summary(results):
    """The printed summary of `run`, as a list of lines."""
    lines = [
        f"Exported {results['source']}",
        f"  input {results['image_size']}x{results['image_size']} ({_RESIZE_WORDS[results['resize']]} to "
        f"{results['image_size'] + results['crop_padding']}, centre crop), {results['num_classes']} classes, "
        f"top-{results['top_k']}",
        "",
        f"SavedModel (TF Serving version {results['version']}): {results['saved_model']['path']}  "
        f"{_megabytes(results['saved_model']['bytes'])}, grouped convolutions {results['grouped_conv']} "
        f"({_GROUPED_CONV_WORDS[results['grouped_conv']]})"
        + (", XLA-compiled (needs a server with XLA's JIT)" if results["jit_compile"] else "")
        + (f", {results['winograd_convs']} wide 3x3 convolutions by Winograd ("
           + ", ".join(f"F({m}x{m}, 3x3): {n}" for m, n in results["winograd_tiles"].items()) + ")"
           if results.get("winograd_convs") else ""),
    ]
    signatures = results["saved_model"]["signatures"]
    for key in sorted(signatures, key=lambda k: (k != "serving_default", k)):
        signature = signatures[key]
        lines.append(f"  signature {key!r} ({signature['method']}, tags {signature['tags']})")
        for kind in ("inputs", "outputs"):
            for tensor, (dtype, shape) in signature[kind].items():
                lines.append(f"    {kind[:-1]:<6s} {tensor}: {dtype} {_shape(shape)}")
    for flavour, info in results["tflite"].items():
        lines.append("")
        lines.append(f"TFLite {flavour} ({litert.FLAVOURS[flavour]}): {info['path']}  {_megabytes(info['bytes'])}")
        lines.extend("  " + line for line in litert.format_details(info["details"]))
    if "parity" in results:
        rows = results["parity"]
        lines.append("")
        lines.append(
            f"Parity against the Keras model on {rows[0]['images']} images ({results['parity_images']}); "
            "probabilities:"
        )
        lines.append("| artifact | input | max abs diff | top-1 agreement |")
        lines.append("|---|---|---|---|")
        for row in rows:
            lines.append(
                f"| {row['artifact']} | {row['inputs']} | {row['max_abs_diff']:.2e} "
                f"| {100 * row['top1_agreement']:.1f} % |"
            )
    lines.append("")
    lines.append("Time: " + "; ".join(f"{k} {v:.1f} s" for k, v in results["timings"].items()))
    lines.append(f"Wall time {results['wall_time_seconds']:.1f} s.")
    return lines
