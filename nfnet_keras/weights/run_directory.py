"""The files of a `train.py` run directory: one definition of their names.

`train.py` writes them; `export.py`, the predict command and `create_model`
read them. Nothing else spells these file names.
"""

import os

__all__ = [
    "CHECKPOINT_FILE",
    "EMA_WEIGHTS_FILE",
    "HISTORY_FILE",
    "MODEL_FILE",
    "RESULTS_FILE",
    "RUN_CONFIG_FILE",
    "TENSORBOARD_DIR",
    "RunDirectory",
]

#: The whole training state, for resuming (written atomically every checkpoint interval).
CHECKPOINT_FILE = "checkpoint.npz"
#: The EMA of the weights at the end of training (the weights to deploy).
EMA_WEIGHTS_FILE = "ema.weights.h5"
#: Per-epoch metrics (`keras.callbacks.CSVLogger`).
HISTORY_FILE = "history.csv"
#: The trained model with its raw (not averaged) weights, preprocessing and class names.
MODEL_FILE = "model.keras"
#: Final metrics, throughput and wall time.
RESULTS_FILE = "results.json"
#: The settings that define the run (a rerun with other values is refused).
RUN_CONFIG_FILE = "run_config.json"
#: TensorBoard event files.
TENSORBOARD_DIR = "tensorboard"


class RunDirectory:
    """Paths of the files in one run directory.

    Args:
        path: the run directory (`--model_dir` of `train.py`).
    """

    def __init__(self, path):
        self.path = os.fspath(path)

    def __repr__(self):
        return f"RunDirectory({self.path!r})"

    def file(self, name):
        """The path of `name` inside the run directory."""
        return os.path.join(self.path, name)

    @property
    def checkpoint(self):
        return self.file(CHECKPOINT_FILE)

    @property
    def ema_weights(self):
        return self.file(EMA_WEIGHTS_FILE)

    @property
    def history(self):
        return self.file(HISTORY_FILE)

    @property
    def model(self):
        return self.file(MODEL_FILE)

    @property
    def results(self):
        return self.file(RESULTS_FILE)

    @property
    def run_config(self):
        return self.file(RUN_CONFIG_FILE)

    @property
    def tensorboard(self):
        return self.file(TENSORBOARD_DIR)

    @classmethod
    def holding(cls, path):
        """The run directory that `path` is, or that holds the model file `path`; None otherwise."""
        path = os.fspath(path)
        if os.path.isdir(path) and os.path.isfile(os.path.join(path, MODEL_FILE)):
            return cls(path)
        if os.path.isfile(path) and os.path.basename(path) == MODEL_FILE:
            return cls(os.path.dirname(os.path.abspath(path)))
        return None
