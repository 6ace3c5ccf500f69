"""Classify images with an NFNet: `python predict.py IMAGE... [--model runs/default | --variant NAME --weights W]`.

The same command as `python -m nfnet_keras.predict` (see nfnet_keras/predict.py for
the flags). Like train.py and export.py, this script parses the flags before the
package, Keras and a backend are imported, so `--help` and usage errors answer at
once; `python -m` must import the package first, which loads Keras.
"""

import importlib.util
import os
import sys

if __name__ == "__main__":
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "nfnet_keras", "predict.py")
    spec = importlib.util.spec_from_file_location("nfnet_predict_command", path)
    command = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(command)  # the standard library only; the model code is imported after parsing
    sys.exit(command.main())
