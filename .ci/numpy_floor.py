"""CI step: the .npz checkpoint writer and reader work with the oldest numpy setup.cfg admits.

    python .ci/numpy_floor.py            # makes a fresh virtualenv with numpy==<floor>.* and checks there
    python .ci/numpy_floor.py --check    # the check itself, with the running interpreter's numpy

The floor is read from `numpy>=X` in setup.cfg's install_requires, so raising it
there moves this check with it. `nfnet_keras/weights/formats.py` needs only
numpy, so the check loads that file alone (no Keras, no TensorFlow). Exits
non-zero when the round trip fails.
"""

import configparser
import importlib.util
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def numpy_floor():
    """The X of `numpy>=X` in setup.cfg."""
    config = configparser.ConfigParser()
    config.read(os.path.join(ROOT, "setup.cfg"))
    for line in config["options"]["install_requires"].splitlines():
        match = re.fullmatch(r"numpy\s*>=\s*([0-9.]+)\s*(,.*)?", line.strip())
        if match:
            return match.group(1)
    raise SystemExit("setup.cfg: no numpy>=X in install_requires")


def check():
    """Round-trips arrays through write_npz_atomic/read_npz; raises on any difference."""
    import numpy as np  # noqa: PLC0415  (the virtualenv's numpy)

    spec = importlib.util.spec_from_file_location("formats", os.path.join(ROOT, "nfnet_keras", "weights", "formats.py"))
    formats = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(formats)
    arrays = {
        "v0": np.arange(6, dtype=np.float32).reshape(2, 3),
        "step": np.asarray(5),
        "paths": np.asarray(["stem/conv0/kernel", "predictions/bias"]),
    }
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "checkpoint.npz")
        formats.write_npz_atomic(path, arrays)
        back = formats.read_npz(path)
        if sorted(back) != sorted(arrays):
            raise SystemExit(f"numpy {np.__version__}: wrote {sorted(arrays)}, read back {sorted(back)}")
        for key, value in arrays.items():
            if back[key].dtype != value.dtype or not np.array_equal(back[key], value):
                raise SystemExit(f"numpy {np.__version__}: {key} read back as {back[key]!r}, wrote {value!r}")
        try:
            formats.write_npz_atomic(path, {"names": np.asarray([1, "x"], dtype=object)})
        except ValueError:
            pass
        else:
            raise SystemExit(f"numpy {np.__version__}: an object array was written")
    print(f"numpy {np.__version__}: .npz round trip exact, object arrays refused")


def main():
    if sys.argv[1:] == ["--check"]:
        check()
        return
    floor = numpy_floor()
    with tempfile.TemporaryDirectory() as venv:
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
        python = os.path.join(venv, "bin", "python")
        subprocess.run([python, "-m", "pip", "install", "-q", f"numpy=={floor}.*"], check=True)
        subprocess.run([python, os.path.abspath(__file__), "--check"], check=True)


if __name__ == "__main__":
    main()
