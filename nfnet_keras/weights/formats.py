"""Safe readers for the checkpoint files that NFNet weights come in.

DeepMind publishes the NFNet-F0..F6 weights as ``{V}_haiku.npz``. Despite the
suffix those files are not NumPy zips but ``dill`` pickles of a Haiku parameter
tree. Loading a pickle with ``pickle.load`` or ``dill.load`` runs whatever
callables the file names, so a file fetched from the internet (a tampered
mirror, a poisoned cache, a man-in-the-middle) could run arbitrary code on the
user's machine. A checksum narrows the risk but does not remove it: the check
has to be right, and the cache must be trusted.

This module therefore never unpickles with the stock machinery. It uses a
``pickle.Unpickler`` subclass whose ``find_class`` resolves only a short
allowlist of names, each to a *replacement* written here rather than the
real global:

* NumPy's array/scalar/dtype reconstruction hooks, re-implemented on top of
  ``np.frombuffer`` with validated shapes, byte counts and dtypes. Only
  float16, bfloat16, float32 and float64 data is accepted, so object arrays
  (which can carry further pickled objects) are refused;
* Haiku's ``FlatMapping``/``FlatMap``/``frozendict`` and
  ``collections.OrderedDict``, all of which become plain ``dict``;
* ``dill._dill._create_array`` (a checked re-implementation), and the two
  helpers that protocol-2 pickles use to spell byte strings.

Everything else (``os.system``, ``builtins.eval``, ``getattr``, ...) is refused
in ``find_class``, before anything in the file runs. The replacements hand out
objects without a ``__dict__`` whose attributes cannot be set, so a hostile
stream cannot tamper with them through ``BUILD`` either. Haiku, JAX and dill
are not needed to read the files.

The module also reads safetensors files with its own parser (no pickle, no
third-party code), reads ``.npz`` files with ``allow_pickle=False``, sniffs a
file's format from its magic bytes, and writes ``.npz`` caches atomically.
Every failure raises :class:`CheckpointError`, whose message names the file.
"""

import errno
import json
import math
import os
import pickle
import secrets
import zipfile

import numpy as np

__all__ = [
    "CheckpointError",
    "check_float32",
    "load_haiku_pickle",
    "read_npz",
    "read_safetensors",
    "sniff_format",
    "write_npz_atomic",
]

ACCEPTED_FORMATS = ("pickle", "npz", "keras_zip", "h5", "safetensors")

_ZIP_MAGIC = b"PK\x03\x04"
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
# The safetensors reference implementation refuses headers above 100 MB.
_MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024


class CheckpointError(ValueError):
    """A checkpoint file is unreadable, malformed or unsafe.

    The message always names the file and the problem.
    """


# --------------------------------------------------------------------------
# Format sniffing
# --------------------------------------------------------------------------


def sniff_format(path):
    """Returns the format of the checkpoint at ``path``, judged by its bytes.

    One of:

    * ``"pickle"``: a protocol 2+ pickle (first byte ``0x80``). DeepMind's
      ``{V}_haiku.npz`` files are in this class despite their suffix.
    * ``"npz"``: a zip archive whose members are all ``.npy`` files.
    * ``"keras_zip"``: a zip archive holding ``config.json`` or
      ``model.weights.h5`` (a ``.keras`` file).
    * ``"h5"``: an HDF5 file (for instance a Keras ``.weights.h5``).
    * ``"safetensors"``: an 8-byte little-endian header length ``N`` that
      fits in the file, followed by a JSON object.

    The file name plays no part.

    Raises:
      CheckpointError: the file is empty, too short, an unrecognised zip
        archive, or in none of the formats above.
    """
    name = os.fspath(path)
    with open(name, "rb") as fh:
        head = fh.read(9)
        size = os.fstat(fh.fileno()).st_size
    if len(head) < 2:
        raise CheckpointError(
            f"{name}: file is empty or too short ({size} bytes) to be a checkpoint"
        )
    # safetensors is tested first: a header length such as 640 begins with
    # the bytes 0x80 0x02, which would also pass for a pickle's PROTO opcode.
    if len(head) == 9 and head[8:9] == b"{":
        header_len = int.from_bytes(head[:8], "little")
        if 2 <= header_len <= min(size - 8, _MAX_SAFETENSORS_HEADER):
            return "safetensors"
    if head[0] == 0x80 and 2 <= head[1] <= 5:
        return "pickle"
    if head[:4] == _ZIP_MAGIC:
        return _sniff_zip(name)
    if head[:8] == _HDF5_MAGIC:
        return "h5"
    raise CheckpointError(
        f"{name}: unrecognised checkpoint format (first bytes {head[:8]!r}); "
        f"accepted formats: {', '.join(ACCEPTED_FORMATS)}"
    )


def _sniff_zip(name):
    try:
        with zipfile.ZipFile(name) as archive:
            members = archive.namelist()
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise CheckpointError(
            f"{name}: zip archive is truncated or corrupt ({exc})"
        ) from exc
    if "config.json" in members or "model.weights.h5" in members:
        return "keras_zip"
    if all(member.endswith(".npy") for member in members):
        return "npz"
    shown = ", ".join(members[:5]) + (", ..." if len(members) > 5 else "")
    raise CheckpointError(
        f"{name}: zip archive is neither an .npz (only .npy members) nor a "
        f".keras file (config.json, model.weights.h5); members: {shown}"
    )


# --------------------------------------------------------------------------
# Restricted unpickler
# --------------------------------------------------------------------------

# Leaf dtypes a parameter tree may hold.
_FLOAT_SPECS = {"f2": np.float16, "f4": np.float32, "f8": np.float64}


class _Refused(Exception):
    """Raised inside the unpickler when the stream asks for something unsafe."""


class _Frozen:
    """Base for objects handed to the pickle stream: no ``__dict__``, no setattr.

    A stream can ``BUILD`` (set state on) any object it holds; refusing
    attribute assignment keeps it from altering these objects.
    """

    __slots__ = ()

    def __setattr__(self, name, value):
        raise _Refused(f"refuses to set attribute {name!r} on {self!r}")

    def __delattr__(self, name):
        raise _Refused(f"refuses to delete attribute {name!r} on {self!r}")


class _Allowed(_Frozen):
    """A safe stand-in for an allowlisted global; calling it runs ``fn``."""

    __slots__ = ("_qualname", "_fn")

    def __init__(self, qualname, fn):
        object.__setattr__(self, "_qualname", qualname)
        object.__setattr__(self, "_fn", fn)

    def __call__(self, *args):
        return self._fn(*args)

    def __repr__(self):
        return f"<safe {self._qualname}>"


class _Token(_Frozen):
    """Stands for a type that may only appear as an argument, never be called."""

    __slots__ = ("_qualname",)

    def __init__(self, qualname):
        object.__setattr__(self, "_qualname", qualname)

    def __call__(self, *args):
        raise _Refused(f"refuses to call global '{self._qualname}' directly")

    def __repr__(self):
        return f"<{self._qualname}>"


_NDARRAY = _Token("numpy.ndarray")
_BFLOAT16 = _Token("ml_dtypes.bfloat16")


def _bfloat16_dtype():
    try:
        import ml_dtypes  # noqa: PLC0415  (optional, only for bfloat16 files)
    except ImportError as exc:
        raise _Refused(
            "holds bfloat16 arrays, which need the 'ml_dtypes' package to read"
        ) from exc
    return np.dtype(ml_dtypes.bfloat16)


class _PendingDtype(_Frozen):
    """A dtype whose byte order the stream may still set via ``__setstate__``."""

    __slots__ = ("dtype", "_built")

    def __init__(self, dtype):
        object.__setattr__(self, "dtype", dtype)
        object.__setattr__(self, "_built", False)

    def __setstate__(self, state):
        if self._built:
            raise ValueError("dtype state set twice")
        if not isinstance(state, tuple) or len(state) not in (8, 9):
            raise ValueError(f"unexpected dtype state {state!r}")
        version, byteorder, subarray, names, fields, elsize, alignment = state[:7]
        metadata = state[8] if len(state) == 9 else None
        if version not in (3, 4) or byteorder not in ("<", ">", "|", "="):
            raise ValueError(f"unexpected dtype state {state!r}")
        if subarray is not None or names is not None or fields is not None:
            raise _Refused(
                f"refuses structured or subarray dtype state {state!r}"
            )
        if metadata:
            raise _Refused(f"refuses dtype metadata {metadata!r}")
        dtype = self.dtype
        if elsize not in (-1, dtype.itemsize) or alignment not in (-1, dtype.alignment):
            raise ValueError(
                f"dtype state {state!r} does not match {dtype.name} "
                f"(itemsize {dtype.itemsize})"
            )
        if byteorder in ("<", ">") and dtype.byteorder != "|":
            dtype = dtype.newbyteorder(byteorder)
        object.__setattr__(self, "dtype", dtype)
        object.__setattr__(self, "_built", True)

    def __repr__(self):
        return f"<dtype {self.dtype}>"


def _resolve_dtype(dtype):
    if not isinstance(dtype, _PendingDtype):
        raise _Refused(f"refuses dtype argument {dtype!r} (not a numpy.dtype from this file)")
    return dtype.dtype


def _as_shape(shape):
    if not isinstance(shape, tuple) or not all(
        type(dim) is int and dim >= 0 for dim in shape
    ):
        raise ValueError(f"invalid array shape {shape!r}")
    return shape


def _array_from_bytes(data, dtype, shape, fortran_order):
    """Builds a writable array from raw bytes after checking the byte count."""
    if not isinstance(data, (bytes, bytearray)):
        raise _Refused(
            f"refuses array data of type {type(data).__name__} "
            "(only raw bytes are accepted)"
        )
    count = math.prod(shape)
    expected = count * dtype.itemsize
    if len(data) != expected:
        raise ValueError(
            f"array data has {len(data)} bytes, shape {shape} of {dtype.name} "
            f"needs {expected}"
        )
    flat = np.frombuffer(data, dtype=dtype, count=count)
    return flat.reshape(shape, order="F" if fortran_order else "C").copy(order="K")


def _dtype_impl(spec, align=False, copy=True):
    """Replacement for ``numpy.dtype``: only float specs, object dtype refused."""
    if not isinstance(align, bool) or not isinstance(copy, bool):
        raise ValueError(f"unexpected numpy.dtype arguments ({align!r}, {copy!r})")
    if spec is _BFLOAT16:
        return _PendingDtype(_bfloat16_dtype())
    if isinstance(spec, str) and spec in _FLOAT_SPECS:
        return _PendingDtype(np.dtype(_FLOAT_SPECS[spec]))
    if isinstance(spec, str) and spec.startswith("O"):
        raise _Refused(
            f"refuses numpy.dtype({spec!r}): object arrays can carry arbitrary "
            "pickled objects"
        )
    raise _Refused(
        f"refuses numpy.dtype({spec!r}): only float16, bfloat16, float32 and "
        "float64 arrays may appear in a checkpoint"
    )


class _PendingArray(_Frozen):
    """What ``_reconstruct`` returns; ``__setstate__`` fills in the data."""

    __slots__ = ("array",)

    def __init__(self):
        object.__setattr__(self, "array", None)

    def __setstate__(self, state):
        if self.array is not None:
            raise ValueError("array state set twice")
        if isinstance(state, tuple) and len(state) == 5:
            version, shape, dtype, fortran_order, data = state
            if version != 1:
                raise ValueError(f"unsupported ndarray state version {version!r}")
        elif isinstance(state, tuple) and len(state) == 4:
            shape, dtype, fortran_order, data = state
        else:
            raise ValueError("unexpected ndarray state")
        if not isinstance(fortran_order, bool):
            raise ValueError(f"invalid ndarray order flag {fortran_order!r}")
        array = _array_from_bytes(
            data, _resolve_dtype(dtype), _as_shape(shape), fortran_order
        )
        object.__setattr__(self, "array", array)

    def __repr__(self):
        return "<ndarray being unpickled>"


def _reconstruct_impl(subtype, shape, typecode):
    """Replacement for ``numpy.core.multiarray._reconstruct``."""
    if subtype is not _NDARRAY:
        raise _Refused(f"refuses to reconstruct an array of type {subtype!r}")
    if shape != (0,) or typecode not in (b"b", "b"):
        raise ValueError(f"unexpected _reconstruct arguments {(shape, typecode)!r}")
    return _PendingArray()


def _scalar_impl(dtype, data):
    """Replacement for ``numpy.core.multiarray.scalar``: returns a 0-d array."""
    return _array_from_bytes(data, _resolve_dtype(dtype), (), False)


def _frombuffer_impl(buffer, dtype, shape, order):
    """Replacement for ``numpy.core.numeric._frombuffer`` (pickle protocol 5)."""
    if order not in ("C", "F"):
        raise ValueError(f"invalid array order {order!r}")
    return _array_from_bytes(
        buffer, _resolve_dtype(dtype), _as_shape(shape), order == "F"
    )


def _create_array_impl(f, args, state, npdict=None):
    """Replacement for ``dill._dill._create_array``.

    dill's version is ``a = f(*args); a.__setstate__(state)``, then an update
    of ``a.__dict__``. Here ``f`` must be the safe ``_reconstruct`` and no
    instance dictionary is accepted.
    """
    if f is not _RECONSTRUCT:
        raise _Refused(f"refuses dill._dill._create_array with callable {f!r}")
    if npdict:
        raise _Refused("refuses dill._dill._create_array with an instance __dict__")
    if not isinstance(args, tuple):
        raise ValueError(f"unexpected _create_array arguments {args!r}")
    pending = f(*args)
    pending.__setstate__(state)
    return pending.array


def _make_dict(*args):
    """Replacement for Haiku's FlatMapping/FlatMap/frozendict and OrderedDict."""
    return dict(*args)


def _codecs_encode_impl(text, encoding="utf-8"):
    """Replacement for ``_codecs.encode``, which protocol 2 uses for bytes."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise _Refused(f"refuses _codecs.encode with encoding {encoding!r}")
    return text.encode("latin-1")


def _bytes_impl(*args):
    """Replacement for ``bytes``: protocol 2 spells ``b''`` as ``bytes()``."""
    if args:
        raise _Refused("refuses builtins.bytes with arguments")
    return b""


_RECONSTRUCT = _Allowed("numpy.core.multiarray._reconstruct", _reconstruct_impl)
_SCALAR = _Allowed("numpy.core.multiarray.scalar", _scalar_impl)
_FROMBUFFER = _Allowed("numpy.core.numeric._frombuffer", _frombuffer_impl)
_DTYPE = _Allowed("numpy.dtype", _dtype_impl)
_CREATE_ARRAY = _Allowed("dill._dill._create_array", _create_array_impl)
_DICT = _Allowed("dict", _make_dict)
_CODECS_ENCODE = _Allowed("_codecs.encode", _codecs_encode_impl)
_BYTES = _Allowed("bytes", _bytes_impl)

_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _DTYPE,
    ("ml_dtypes", "bfloat16"): _BFLOAT16,
    ("collections", "OrderedDict"): _DICT,
    ("dill._dill", "_create_array"): _CREATE_ARRAY,
    ("_codecs", "encode"): _CODECS_ENCODE,
    ("builtins", "bytes"): _BYTES,
    ("__builtin__", "bytes"): _BYTES,
}
for _core in ("numpy.core", "numpy._core"):
    _ALLOWED_GLOBALS[(f"{_core}.multiarray", "_reconstruct")] = _RECONSTRUCT
    _ALLOWED_GLOBALS[(f"{_core}.multiarray", "scalar")] = _SCALAR
    _ALLOWED_GLOBALS[(f"{_core}.numeric", "_frombuffer")] = _FROMBUFFER
for _module in ("haiku._src.data_structures", "haiku.data_structures"):
    for _name in ("FlatMapping", "FlatMap", "frozendict"):
        _ALLOWED_GLOBALS[(_module, _name)] = _DICT
del _core, _module, _name


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the allowlisted globals, each to a safe replacement."""

    def find_class(self, module, name):
        allowed = _ALLOWED_GLOBALS.get((module, name))
        if allowed is None:
            raise _Refused(
                f"refuses global '{module}.{name}': only NumPy arrays, dicts and "
                "Haiku FlatMappings may appear in a parameter checkpoint"
            )
        return allowed

    def persistent_load(self, pid):
        raise _Refused(f"refuses persistent id {pid!r}")


def _leaf_array(value, where, name):
    if isinstance(value, _PendingArray):
        if value.array is None:
            raise CheckpointError(
                f"{name}: truncated or corrupt pickle: array at {where!r} has no data"
            )
        value = value.array
    if not isinstance(value, np.ndarray):
        raise CheckpointError(
            f"{name}: expected a {{module: {{param: ndarray}}}} tree, found "
            f"{type(value).__name__} at {where!r}"
        )
    return value


def _as_params_tree(tree, name):
    if not isinstance(tree, dict):
        raise CheckpointError(
            f"{name}: expected a {{module: {{param: ndarray}}}} mapping at the top "
            f"level, found {type(tree).__name__}"
        )
    params = {}
    for module, children in tree.items():
        if not isinstance(module, str):
            raise CheckpointError(
                f"{name}: module names must be strings, found {module!r}"
            )
        if not isinstance(children, dict):
            raise CheckpointError(
                f"{name}: expected a {{param: ndarray}} mapping at {module!r}, "
                f"found {type(children).__name__}"
            )
        params[module] = {}
        for param, value in children.items():
            if not isinstance(param, str):
                raise CheckpointError(
                    f"{name}: parameter names must be strings, found {param!r} "
                    f"in {module!r}"
                )
            params[module][param] = _leaf_array(value, f"{module}/{param}", name)
    return params


def load_haiku_pickle(path):
    """Loads a DeepMind Haiku parameter pickle without running code from it.

    Reads ``{V}_haiku.npz`` files (dill pickles of a ``FlatMapping`` of NumPy
    arrays) and plain pickles of ``{module: {param: ndarray}}`` dicts, with
    any pickle protocol from 2 to 5. Neither Haiku, JAX nor dill needs to be
    installed. Arrays come back as they are stored (no dtype conversion); use
    :func:`check_float32` to insist on float32.

    Args:
      path: the file to read.

    Returns:
      ``{module_name: {param_name: np.ndarray}}`` with plain dicts; 0-d values
      (``skip_gain``) are 0-d arrays.

    Raises:
      CheckpointError: the file is not a pickle; it names a global outside the
        allowlist (for instance ``os.system``) or an object dtype, which is
        refused before anything runs; it is truncated or corrupt; or it does
        not hold a two-level mapping of float arrays.
      OSError: the file cannot be opened.
    """
    name = os.fspath(path)
    kind = sniff_format(name)
    if kind != "pickle":
        raise CheckpointError(
            f"{name}: expected a pickle (DeepMind's *_haiku.npz), found a {kind} file"
        )
    with open(name, "rb") as fh:
        try:
            tree = _RestrictedUnpickler(fh).load()
        except _Refused as exc:
            raise CheckpointError(
                f"{name}: {exc}; the file may be malicious and was not loaded"
            ) from None
        except Exception as exc:  # noqa: BLE001 (any decoding failure means a bad file)
            raise CheckpointError(
                f"{name}: pickle is truncated or corrupt ({type(exc).__name__}: {exc})"
            ) from exc
    return _as_params_tree(tree, name)


def check_float32(tree, path):
    """Raises unless every array in ``tree`` is float32.

    Args:
      tree: a (possibly nested) mapping of arrays, as returned by the readers
        in this module.
      path: the file the tree came from, for the message.

    Raises:
      CheckpointError: naming every non-float32 leaf with its dtype.
    """
    bad = []

    def walk(node, prefix):
        for key, value in node.items():
            where = f"{prefix}/{key}" if prefix else str(key)
            if isinstance(value, dict):
                walk(value, where)
            elif np.asarray(value).dtype != np.float32:
                bad.append(f"{where} ({np.asarray(value).dtype})")

    walk(tree, "")
    if bad:
        raise CheckpointError(
            f"{os.fspath(path)}: expected float32 arrays, found {len(bad)} "
            f"other: {', '.join(bad)}"
        )


# --------------------------------------------------------------------------
# safetensors
# --------------------------------------------------------------------------

# safetensors dtype -> little-endian on-disk dtype.
_SAFETENSORS_DTYPES = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("u1"),
}


def _safetensors_tensor(name, key, info, buffer):
    if not isinstance(info, dict):
        raise CheckpointError(f"{name}: tensor {key!r}: header entry is not an object")
    dtype_name = info.get("dtype")
    if dtype_name not in _SAFETENSORS_DTYPES:
        raise CheckpointError(
            f"{name}: tensor {key!r}: unsupported dtype {dtype_name!r} "
            f"(supported: {', '.join(_SAFETENSORS_DTYPES)})"
        )
    shape = info.get("shape")
    if not isinstance(shape, list) or not all(
        type(dim) is int and dim >= 0 for dim in shape
    ):
        raise CheckpointError(f"{name}: tensor {key!r}: invalid shape {shape!r}")
    offsets = info.get("data_offsets")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(type(o) is int for o in offsets)
    ):
        raise CheckpointError(
            f"{name}: tensor {key!r}: invalid data_offsets {offsets!r}"
        )
    begin, end = offsets
    if not 0 <= begin <= end:
        raise CheckpointError(
            f"{name}: tensor {key!r}: invalid data_offsets {offsets!r}"
        )
    if end > len(buffer):
        raise CheckpointError(
            f"{name}: tensor {key!r}: data_offsets {offsets!r} run past the end of "
            f"the {len(buffer)}-byte data buffer (file truncated or header corrupt)"
        )
    disk_dtype = _SAFETENSORS_DTYPES[dtype_name]
    count = math.prod(shape)
    if end - begin != count * disk_dtype.itemsize:
        raise CheckpointError(
            f"{name}: tensor {key!r}: data_offsets {offsets!r} span {end - begin} "
            f"bytes, but shape {shape} of {dtype_name} needs "
            f"{count * disk_dtype.itemsize}"
        )
    raw = np.frombuffer(buffer, dtype=disk_dtype, count=count, offset=begin)
    raw = raw.reshape(shape)
    if dtype_name == "BF16":
        return (raw.astype(np.uint32) << 16).view(np.float32)
    if dtype_name == "BOOL":
        return raw.astype(bool)
    return raw.astype(disk_dtype.newbyteorder("="))


def read_safetensors(path):
    """Reads a safetensors file with a self-contained parser (no pickle).

    Layout: an 8-byte little-endian header size ``N``, ``N`` bytes of JSON
    ``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__":
    {...}}``, then the data buffer the offsets index into. Supported dtypes:
    F64, F32, F16, BF16 (returned as float32, which holds every bfloat16
    value exactly), I64, I32, U8 and BOOL.

    Args:
      path: the file to read.

    Returns:
      ``{tensor_name: np.ndarray}`` of writable, native-byte-order arrays.
      ``__metadata__`` is dropped.

    Raises:
      CheckpointError: the file is truncated, the header is not valid JSON or
        not an object, or a tensor has an unsupported dtype, a bad shape, or
        offsets outside the buffer or inconsistent with its shape.
      OSError: the file cannot be read.
    """
    name = os.fspath(path)
    with open(name, "rb") as fh:
        data = fh.read()
    if len(data) < 8:
        raise CheckpointError(
            f"{name}: truncated safetensors file ({len(data)} bytes, no header size)"
        )
    header_len = int.from_bytes(data[:8], "little")
    if header_len > _MAX_SAFETENSORS_HEADER:
        raise CheckpointError(
            f"{name}: implausible safetensors header size {header_len} bytes "
            "(not a safetensors file, or corrupt)"
        )
    if 8 + header_len > len(data):
        raise CheckpointError(
            f"{name}: truncated safetensors file: header claims {header_len} bytes, "
            f"only {len(data) - 8} follow"
        )
    try:
        header = json.loads(data[8 : 8 + header_len].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(
            f"{name}: safetensors header is not valid JSON ({exc})"
        ) from exc
    if not isinstance(header, dict):
        raise CheckpointError(
            f"{name}: safetensors header is a {type(header).__name__}, not an object"
        )
    buffer = memoryview(data)[8 + header_len :]
    return {
        key: _safetensors_tensor(name, key, info, buffer)
        for key, info in header.items()
        if key != "__metadata__"
    }


# --------------------------------------------------------------------------
# npz
# --------------------------------------------------------------------------


def read_npz(path, keys=None):
    """Reads a NumPy ``.npz`` archive with ``allow_pickle=False``.

    Args:
      path: the file to read.
      keys: the names of the arrays to read (the others are not read, so a large
        archive's small arrays come back quickly); names the archive lacks are
        left out of the result. None: every array.

    Returns:
      ``{array_name: np.ndarray}``.

    Raises:
      CheckpointError: the file is not a NumPy zip (a DeepMind
        ``*_haiku.npz`` pickle, for instance: use :func:`load_haiku_pickle`),
        the archive is truncated or corrupt, or it holds object arrays.
      OSError: the file cannot be opened.
    """
    name = os.fspath(path)
    kind = sniff_format(name)
    if kind != "npz":
        hint = (
            "; DeepMind's *_haiku.npz files are pickles: use load_haiku_pickle"
            if kind == "pickle"
            else ""
        )
        raise CheckpointError(f"{name}: expected an .npz archive, found a {kind} file{hint}")
    try:
        with np.load(name, allow_pickle=False) as archive:
            wanted = archive.files if keys is None else [key for key in keys if key in archive.files]
            return {key: archive[key] for key in wanted}
    except (zipfile.BadZipFile, ValueError, EOFError, KeyError) as exc:
        raise CheckpointError(
            f"{name}: .npz archive is truncated or corrupt ({type(exc).__name__}: {exc})"
        ) from exc


def write_npz_atomic(path, arrays):
    """Writes ``arrays`` to ``path`` as an uncompressed ``.npz``, atomically.

    The data goes to a temporary file in the same directory, which is flushed
    to disk and then renamed over ``path`` with ``os.replace``; the directory
    is synced after the rename. A crash or exception mid-write (a full disk
    included) therefore never leaves a partial file under the final name, and
    readers see either the old file or the complete new one. The temporary
    file is removed on any failure. Object arrays are refused here,
    before anything is written, so the file never holds a pickle.

    Args:
      path: destination file name (used as given; no ``.npz`` is appended).
      arrays: ``{name: array}``; names must be strings other than ``file`` and
        ``allow_pickle``, which ``numpy.savez`` reserves.

    Raises:
      ValueError: a reserved or non-string name, or an object array.
      OSError: the directory is not writable, or a write failed (``ENOSPC``,
        ``EIO``, ...); the previous file at ``path`` is left as it was.
    """
    name = os.fspath(path)
    for key, value in arrays.items():
        if not isinstance(key, str) or key in ("file", "allow_pickle"):
            raise ValueError(
                f"{name}: cannot store an array named {key!r} in an .npz "
                "(names must be strings other than 'file' and 'allow_pickle')"
            )
        if np.asarray(value).dtype.hasobject:
            raise ValueError(f"{name}: cannot store the object array {key!r} in an .npz (it would be a pickle)")
    directory, base = os.path.split(os.path.abspath(name))
    tmp = os.path.join(directory, f".{base}.{secrets.token_hex(6)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    fd = os.open(tmp, flags, 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            # No allow_pickle argument: numpy < 2.2 would store it as an array named
            # "allow_pickle"; plain arrays are never pickled, object arrays are refused above.
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, name)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_directory(directory)


def _fsync_directory(directory):
    """Makes a rename in ``directory`` survive a power cut (POSIX: Windows cannot open a directory)."""
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP):  # file systems that cannot sync a directory
            raise
    finally:
        os.close(fd)
