"""Tests for nfnet_keras.weights.formats: safe checkpoint readers and writers."""

import ast
import errno
import json
import os
import pickle
import stat
import sys
import zipfile

import numpy as np
import pytest

from nfnet_keras.weights import formats as checkpoint_io
from nfnet_keras.weights.formats import (
    CheckpointError,
    check_float32,
    load_haiku_pickle,
    read_npz,
    read_safetensors,
    sniff_format,
    write_npz_atomic,
)


def _params(seed=0):
    """A small Haiku-shaped tree of float32 arrays, with a 0-d skip_gain."""
    rng = np.random.default_rng(seed)
    return {
        "NFNet/~/stem_conv0": {
            "w": rng.standard_normal((3, 3, 3, 16)).astype(np.float32),
            "gain": rng.standard_normal(16).astype(np.float32),
            "bias": rng.standard_normal(16).astype(np.float32),
        },
        "NFNet/~/nf_block": {"skip_gain": np.array(0.25, dtype=np.float32)},
        "NFNet/~/linear": {
            "w": np.asfortranarray(rng.standard_normal((8, 5)).astype(np.float32)),
            "b": np.zeros(5, dtype=np.float32),
        },
    }


def _assert_same_tree(loaded, expected):
    assert type(loaded) is dict
    assert loaded.keys() == expected.keys()
    for module, children in expected.items():
        assert type(loaded[module]) is dict
        assert loaded[module].keys() == children.keys()
        for param, array in children.items():
            got = loaded[module][param]
            assert isinstance(got, np.ndarray)
            assert got.dtype == array.dtype
            assert got.shape == array.shape
            np.testing.assert_array_equal(got, array)


def _dump(tmp_path, obj, protocol=4, name="ckpt.pkl"):
    path = tmp_path / name
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    return path


class _Payload:
    """Pickles as a call of ``func(*args)``: what a malicious file would do."""

    def __init__(self, func, *args):
        self.func = func
        self.args = args

    def __reduce__(self):
        return self.func, self.args


def _uninstall_fake_haiku():
    for name in ("haiku._src.data_structures", "haiku._src", "haiku"):
        del sys.modules[name]
    with pytest.raises(ImportError):
        __import__("haiku._src.data_structures")


# --------------------------------------------------------------------------
# load_haiku_pickle: legitimate files
# --------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_plain_dict_pickle_loads_identically(tmp_path, protocol):
    params = _params()
    loaded = load_haiku_pickle(_dump(tmp_path, params, protocol))
    _assert_same_tree(loaded, params)
    assert loaded["NFNet/~/nf_block"]["skip_gain"].shape == ()
    assert loaded["NFNet/~/linear"]["w"].flags.f_contiguous


def test_dill_pickle_of_plain_dict_loads_identically(tmp_path):
    dill = pytest.importorskip("dill")
    params = _params()
    path = tmp_path / "F0_haiku.npz"
    with open(path, "wb") as fh:
        dill.dump(params, fh)
    assert b"_create_array" in path.read_bytes()
    _assert_same_tree(load_haiku_pickle(path), params)


def test_numpy_scalar_leaf_becomes_0d_array(tmp_path):
    tree = {"NFNet/~/nf_block": {"skip_gain": np.float32(0.5)}}
    loaded = load_haiku_pickle(_dump(tmp_path, tree, protocol=2))
    leaf = loaded["NFNet/~/nf_block"]["skip_gain"]
    assert isinstance(leaf, np.ndarray)
    assert leaf.shape == ()
    assert leaf.dtype == np.float32
    assert leaf == np.float32(0.5)


def test_empty_array_loads_with_protocol_2(tmp_path):
    tree = {"m": {"empty": np.zeros((0, 3), dtype=np.float32)}}
    loaded = load_haiku_pickle(_dump(tmp_path, tree, protocol=2))
    assert loaded["m"]["empty"].shape == (0, 3)


def test_ordered_dict_tree_loads_as_plain_dicts(tmp_path):
    from collections import OrderedDict

    params = _params()
    tree = OrderedDict((k, OrderedDict(v)) for k, v in params.items())
    _assert_same_tree(load_haiku_pickle(_dump(tmp_path, tree)), params)


def test_big_endian_arrays_keep_their_values(tmp_path):
    array = np.arange(6, dtype=">f4").reshape(2, 3)
    loaded = load_haiku_pickle(_dump(tmp_path, {"m": {"w": array}}))
    np.testing.assert_array_equal(loaded["m"]["w"], array)


def test_loader_returns_float16_and_float64_as_stored(tmp_path):
    tree = {
        "m": {
            "half": np.ones(3, dtype=np.float16),
            "double": np.ones(3, dtype=np.float64),
        }
    }
    loaded = load_haiku_pickle(_dump(tmp_path, tree))
    assert loaded["m"]["half"].dtype == np.float16
    assert loaded["m"]["double"].dtype == np.float64


def test_bfloat16_arrays_load_when_ml_dtypes_is_installed(tmp_path):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    array = np.array([1.0, -2.5, 3.0], dtype=ml_dtypes.bfloat16)
    loaded = load_haiku_pickle(_dump(tmp_path, {"m": {"w": array}}))
    assert loaded["m"]["w"].dtype == array.dtype
    np.testing.assert_array_equal(loaded["m"]["w"].astype(np.float32), [1.0, -2.5, 3.0])


@pytest.mark.parametrize("writer", ["pickle", "dill"])
def test_flatmapping_pickle_loads_as_plain_dicts_without_haiku(
    tmp_path, fake_haiku, writer
):
    FlatMapping = fake_haiku
    w = np.arange(12, dtype=np.float32).reshape(3, 4)
    b = np.arange(4, dtype=np.float32)
    tree = FlatMapping({"NFNet/~/linear": FlatMapping({"w": w, "b": b})})
    path = tmp_path / "F0_haiku.npz"
    if writer == "dill":
        dill = pytest.importorskip("dill")
        with open(path, "wb") as fh:
            dill.dump(tree, fh)
    else:
        path.write_bytes(pickle.dumps(tree, protocol=4))
    assert b"haiku._src.data_structures" in path.read_bytes()
    _uninstall_fake_haiku()

    loaded = load_haiku_pickle(path)

    _assert_same_tree(loaded, {"NFNet/~/linear": {"w": w, "b": b}})


# --------------------------------------------------------------------------
# load_haiku_pickle: hostile files
# --------------------------------------------------------------------------


def test_os_system_payload_is_refused_before_running(tmp_path):
    marker = tmp_path / "pwned"
    payload = _Payload(os.system, f"touch {marker}")
    path = _dump(tmp_path, {"NFNet/~/linear": {"w": payload}})

    with pytest.raises(CheckpointError, match=r"(os|posix)\.system") as info:
        load_haiku_pickle(path)

    assert str(path) in str(info.value)
    assert not marker.exists()


def test_eval_payload_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    code = f"open({str(marker)!r}, 'w').close()"
    path = _dump(tmp_path, {"m": {"w": _Payload(eval, code)}})

    with pytest.raises(CheckpointError, match=r"builtins\.eval"):
        load_haiku_pickle(path)

    assert not marker.exists()


@pytest.mark.parametrize("forbidden", [getattr, __import__, exec])
def test_other_dangerous_builtins_are_refused(tmp_path, forbidden):
    path = _dump(tmp_path, {"m": {"w": _Payload(forbidden, "os")}}, protocol=2)
    with pytest.raises(CheckpointError, match=f"refuses global .*{forbidden.__name__}"):
        load_haiku_pickle(path)


def test_object_dtype_is_refused(tmp_path):
    path = _dump(tmp_path, {"m": {"dtype": np.dtype("O")}})
    with pytest.raises(CheckpointError, match="object"):
        load_haiku_pickle(path)


def test_object_array_is_refused(tmp_path):
    array = np.array([1.5, "text"], dtype=object)
    path = _dump(tmp_path, {"m": {"w": array}})
    with pytest.raises(CheckpointError, match="object"):
        load_haiku_pickle(path)


def test_object_array_carrying_os_system_is_refused_before_running(tmp_path):
    marker = tmp_path / "pwned"
    array = np.empty(1, dtype=object)
    array[0] = _Payload(os.system, f"touch {marker}")
    path = _dump(tmp_path, {"m": {"w": array}}, protocol=2)

    with pytest.raises(CheckpointError, match="refuses"):
        load_haiku_pickle(path)

    assert not marker.exists()


def test_integer_arrays_are_refused(tmp_path):
    path = _dump(tmp_path, {"m": {"step": np.arange(3, dtype=np.int32)}})
    with pytest.raises(CheckpointError, match="float"):
        load_haiku_pickle(path)


def test_build_cannot_tamper_with_allowlisted_callables(tmp_path):
    # PROTO 2; GLOBAL numpy.dtype; BUILD with slot state {'_fn': None}; STOP.
    stream = b"\x80\x02cnumpy\ndtype\nN}X\x03\x00\x00\x00_fnNs\x86b."
    path = tmp_path / "tamper.pkl"
    path.write_bytes(stream)
    with pytest.raises(CheckpointError, match="refuses to set attribute '_fn'"):
        load_haiku_pickle(path)
    tree = {"m": {"w": np.ones(2, dtype=np.float32)}}
    _assert_same_tree(load_haiku_pickle(_dump(tmp_path, tree)), tree)


def test_dill_create_array_with_foreign_callable_is_refused(tmp_path):
    dill = pytest.importorskip("dill")
    marker = tmp_path / "pwned"
    payload = _Payload(dill._dill._create_array, os.system, (f"touch {marker}",), None)
    path = _dump(tmp_path, {"m": {"w": payload}})
    with pytest.raises(CheckpointError, match="refuses"):
        load_haiku_pickle(path)
    assert not marker.exists()


# --------------------------------------------------------------------------
# load_haiku_pickle: broken files
# --------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [2, 4])
def test_truncated_pickle_is_reported_as_truncated_or_corrupt(tmp_path, protocol):
    data = pickle.dumps(_params(), protocol=protocol)
    path = tmp_path / "F0_haiku.npz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt") as info:
        load_haiku_pickle(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    "tree, found",
    [
        ([np.ones(2, dtype=np.float32)], "list"),
        ({"a": {"b": {"c": np.ones(2, dtype=np.float32)}}}, "dict at 'a/b'"),
        ({"a": {"b": "not an array"}}, "str at 'a/b'"),
        ({"a": np.ones(2, dtype=np.float32)}, "ndarray"),
    ],
    ids=["list", "three-level", "string-leaf", "one-level"],
)
def test_wrong_structure_is_refused(tmp_path, tree, found):
    with pytest.raises(CheckpointError, match=found):
        load_haiku_pickle(_dump(tmp_path, tree))


def test_npz_given_to_pickle_loader_is_refused(tmp_path):
    path = tmp_path / "weights.npz"
    np.savez(path, w=np.ones(2, dtype=np.float32))
    with pytest.raises(CheckpointError, match="expected a pickle.*npz"):
        load_haiku_pickle(path)


# --------------------------------------------------------------------------
# check_float32
# --------------------------------------------------------------------------


def test_check_float32_accepts_float32_tree():
    check_float32(_params(), "ckpt.pkl")


def test_check_float32_names_every_non_float32_leaf():
    tree = _params()
    tree["NFNet/~/stem_conv0"]["w"] = tree["NFNet/~/stem_conv0"]["w"].astype(np.float16)
    tree["NFNet/~/linear"]["b"] = tree["NFNet/~/linear"]["b"].astype(np.float64)
    with pytest.raises(CheckpointError) as info:
        check_float32(tree, "F0_haiku.npz")
    message = str(info.value)
    assert "F0_haiku.npz" in message
    assert "NFNet/~/stem_conv0/w (float16)" in message
    assert "NFNet/~/linear/b (float64)" in message
    assert "gain" not in message


# --------------------------------------------------------------------------
# read_safetensors
# --------------------------------------------------------------------------


def _save_safetensors(path, arrays, metadata=None):
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    safetensors_numpy.save_file(arrays, str(path), metadata=metadata)
    return path


@pytest.mark.parametrize(
    "dtype", [np.float32, np.float16, np.float64, np.int64, np.int32, np.uint8, bool]
)
def test_safetensors_round_trip(tmp_path, dtype):
    rng = np.random.default_rng(1)
    arrays = {
        "stem.conv1.weight": (rng.standard_normal((4, 3, 3, 3)) * 10).astype(dtype),
        "stages.0.0.skipinit_gain": np.array(1, dtype=dtype),
        "empty": np.zeros((0, 2), dtype=dtype),
    }
    path = _save_safetensors(tmp_path / "m.safetensors", arrays, {"format": "pt"})
    loaded = read_safetensors(path)
    assert loaded.keys() == arrays.keys()
    for key, array in arrays.items():
        assert loaded[key].dtype == array.dtype
        assert loaded[key].shape == array.shape
        np.testing.assert_array_equal(loaded[key], array)


def test_safetensors_bf16_is_read_as_float32(tmp_path):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    values = np.array([[1.0, -2.5], [3.140625, 65280.0]], dtype=np.float32)
    path = _save_safetensors(
        tmp_path / "bf16.safetensors", {"w": values.astype(ml_dtypes.bfloat16)}
    )
    loaded = read_safetensors(path)
    assert loaded["w"].dtype == np.float32
    np.testing.assert_array_equal(loaded["w"], values)


def test_truncated_safetensors_is_refused_naming_the_tensor(tmp_path):
    arrays = {"a": np.ones(4, dtype=np.float32), "b": np.ones(64, dtype=np.float32)}
    path = _save_safetensors(tmp_path / "m.safetensors", arrays)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(CheckpointError, match="'b'.*truncated") as info:
        read_safetensors(path)
    assert str(path) in str(info.value)


def test_safetensors_truncated_inside_header_is_refused(tmp_path):
    path = _save_safetensors(tmp_path / "m.safetensors", {"a": np.ones(4, np.float32)})
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(CheckpointError, match="truncated"):
        read_safetensors(path)


def _raw_safetensors(path, header, buffer):
    blob = json.dumps(header).encode()
    path.write_bytes(len(blob).to_bytes(8, "little") + blob + buffer)
    return path


def test_safetensors_offsets_out_of_range_are_refused(tmp_path):
    header = {"w": {"dtype": "F32", "shape": [200], "data_offsets": [0, 800]}}
    path = _raw_safetensors(tmp_path / "m.safetensors", header, bytes(8))
    with pytest.raises(CheckpointError, match="'w'.*run past the end"):
        read_safetensors(path)


def test_safetensors_offsets_inconsistent_with_shape_are_refused(tmp_path):
    header = {"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}
    path = _raw_safetensors(tmp_path / "m.safetensors", header, bytes(8))
    with pytest.raises(CheckpointError, match="'w'.*needs 12"):
        read_safetensors(path)


def test_safetensors_unsupported_dtype_is_refused(tmp_path):
    header = {"w": {"dtype": "F8_E4M3", "shape": [2], "data_offsets": [0, 2]}}
    path = _raw_safetensors(tmp_path / "m.safetensors", header, bytes(2))
    with pytest.raises(CheckpointError, match="'w'.*unsupported dtype"):
        read_safetensors(path)


def test_safetensors_invalid_json_header_is_refused(tmp_path):
    blob = b"{not json}"
    path = tmp_path / "m.safetensors"
    path.write_bytes(len(blob).to_bytes(8, "little") + blob)
    with pytest.raises(CheckpointError, match="not valid JSON"):
        read_safetensors(path)


# --------------------------------------------------------------------------
# read_npz / write_npz_atomic
# --------------------------------------------------------------------------


def test_read_npz_round_trip(tmp_path):
    arrays = {"a": np.arange(5, dtype=np.float32), "b/c": np.ones((2, 2))}
    path = tmp_path / "w.npz"
    np.savez(path, **arrays)
    loaded = read_npz(path)
    assert loaded.keys() == arrays.keys()
    for key, array in arrays.items():
        np.testing.assert_array_equal(loaded[key], array)


def test_read_npz_of_deepmind_pickle_points_to_pickle_loader(tmp_path):
    path = _dump(tmp_path, _params(), name="F0_haiku.npz")
    with pytest.raises(CheckpointError, match="load_haiku_pickle"):
        read_npz(path)


def test_read_npz_corrupt_archive_is_refused(tmp_path):
    path = tmp_path / "w.npz"
    np.savez(path, a=np.arange(1000, dtype=np.float32))
    data = bytearray(path.read_bytes())
    data[200:210] = b"\xff" * 10  # inside the member's data: CRC mismatch
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        read_npz(path)


def test_read_npz_object_array_is_refused(tmp_path):
    path = tmp_path / "w.npz"
    np.savez(path, a=np.array([1, "x"], dtype=object))
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        read_npz(path)


def test_write_npz_atomic_round_trips_and_leaves_no_temp_file(tmp_path):
    arrays = {"NFNet/~/linear/w": np.ones((3, 2), dtype=np.float32)}
    target = tmp_path / "cache.npz"
    write_npz_atomic(target, arrays)
    assert sorted(os.listdir(tmp_path)) == ["cache.npz"]
    np.testing.assert_array_equal(read_npz(target)["NFNet/~/linear/w"], arrays["NFNet/~/linear/w"])


def test_write_npz_atomic_failure_creates_no_target_and_no_temp_file(tmp_path, monkeypatch):
    def exploding_savez(file, *args, **kwargs):
        file.write(b"PK\x03\x04 half a file")
        raise RuntimeError("disk full")

    monkeypatch.setattr(np, "savez", exploding_savez)
    with pytest.raises(RuntimeError, match="disk full"):
        write_npz_atomic(tmp_path / "cache.npz", {"w": np.ones(2)})
    assert os.listdir(tmp_path) == []


def test_write_npz_atomic_failure_keeps_previous_file(tmp_path, monkeypatch):
    target = tmp_path / "cache.npz"
    write_npz_atomic(target, {"w": np.zeros(2)})

    def exploding_savez(file, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", exploding_savez)
    with pytest.raises(KeyboardInterrupt):
        write_npz_atomic(target, {"w": np.ones(2)})
    assert os.listdir(tmp_path) == ["cache.npz"]
    np.testing.assert_array_equal(read_npz(target)["w"], np.zeros(2))


def test_write_npz_atomic_refuses_reserved_names(tmp_path):
    with pytest.raises(ValueError, match="'file'"):
        write_npz_atomic(tmp_path / "cache.npz", {"file": np.ones(2)})
    assert os.listdir(tmp_path) == []


# --------------------------------------------------------------------------
# sniff_format
# --------------------------------------------------------------------------


def test_sniff_pickle_named_npz(tmp_path):
    assert sniff_format(_dump(tmp_path, _params(), protocol=2, name="F0_haiku.npz")) == "pickle"


def test_sniff_npz(tmp_path):
    path = tmp_path / "w.npz"
    np.savez(path, a=np.ones(2))
    assert sniff_format(path) == "npz"


def test_sniff_keras_zip(tmp_path):
    path = tmp_path / "model.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("metadata.json", "{}")
        archive.writestr("config.json", "{}")
        archive.writestr("model.weights.h5", b"\x89HDF\r\n\x1a\n")
    assert sniff_format(path) == "keras_zip"


def test_sniff_h5(tmp_path):
    path = tmp_path / "model.weights.h5"
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))
    assert sniff_format(path) == "h5"


def test_sniff_safetensors(tmp_path):
    path = _save_safetensors(tmp_path / "m.safetensors", {"a": np.ones(2, np.float32)})
    assert sniff_format(path) == "safetensors"


def test_sniff_safetensors_whose_header_length_looks_like_a_pickle(tmp_path):
    # A 640-byte header starts with the bytes 0x80 0x02, like PROTO 2.
    header = {"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}
    blob = json.dumps(header).encode()
    blob = blob[:-1] + b" " * (640 - len(blob)) + b"}"
    path = tmp_path / "m.safetensors"
    path.write_bytes(len(blob).to_bytes(8, "little") + blob + bytes(4))
    assert path.read_bytes()[:2] == b"\x80\x02"
    assert sniff_format(path) == "safetensors"


def test_sniff_random_bytes_is_refused_listing_formats(tmp_path):
    path = tmp_path / "noise.bin"
    path.write_bytes(b"\x13\x37" + np.random.default_rng(0).bytes(254))
    with pytest.raises(CheckpointError, match="accepted formats: pickle, npz") as info:
        sniff_format(path)
    assert str(path) in str(info.value)


def test_sniff_empty_file_is_refused(tmp_path):
    path = tmp_path / "empty.npz"
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        sniff_format(path)


def test_sniff_unknown_zip_is_refused(tmp_path):
    path = tmp_path / "other.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(CheckpointError, match="neither an .npz"):
        sniff_format(path)


def test_module_imports_only_numpy_and_the_standard_library():
    tree = ast.parse(open(checkpoint_io.__file__, encoding="utf-8").read())
    roots = set()
    for node in tree.body:  # module level only; optional imports sit in functions
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            roots.add(node.module.split(".")[0])
    assert "pickle" in roots
    assert roots - set(sys.stdlib_module_names) == {"numpy"}


# --------------------------------------------------------------------------
# read_npz of some arrays; write_npz_atomic on a failing disk
# --------------------------------------------------------------------------


def test_read_npz_with_keys_reads_only_those_it_holds(tmp_path):
    path = tmp_path / "w.npz"
    np.savez(path, a=np.arange(3), b=np.ones(2))
    loaded = read_npz(path, keys=("a", "absent"))
    assert list(loaded) == ["a"]
    np.testing.assert_array_equal(loaded["a"], np.arange(3))


def test_write_npz_atomic_on_a_full_disk_raises_the_os_error_and_keeps_the_previous_file(tmp_path, monkeypatch):
    target = tmp_path / "cache.npz"
    write_npz_atomic(target, {"w": np.zeros(2)})
    before = target.read_bytes()

    def full_disk_fsync(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full_disk_fsync)
    with pytest.raises(OSError) as info:
        write_npz_atomic(target, {"w": np.ones(2)})
    assert info.value.errno == errno.ENOSPC
    assert os.listdir(tmp_path) == ["cache.npz"]
    assert target.read_bytes() == before


@pytest.mark.skipif(os.name != "posix", reason="only POSIX can sync a directory")
def test_write_npz_atomic_syncs_the_file_and_then_the_directory_of_the_rename(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync

    def recording_fsync(fd):
        synced.append("directory" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    write_npz_atomic(tmp_path / "cache.npz", {"w": np.ones(2)})
    assert synced == ["file", "directory"]
