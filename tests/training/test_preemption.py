"""A polite stop: a signal ends training after the current step, with a checkpoint at that step."""

import os
import signal
import subprocess
import sys

import keras
import numpy as np
import pytest

from nfnet_keras.training import checkpoint
from nfnet_keras.training.preemption import STOPPED_EXIT_CODE, StopOnSignal, StopSignals, Stopped
from support import REPO_ROOT


def _compiled_model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(3)(inputs))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    return model


def _data(n=64):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 4)).astype("float32"), rng.normal(size=(n, 3)).astype("float32")


class SignalAt(keras.callbacks.Callback):
    """Sends `signal_number` to this process when batch `batch` of training or evaluation begins."""

    def __init__(self, batch, signal_number=signal.SIGTERM):
        super().__init__()
        self.batch = batch
        self.signal_number = signal_number
        self.test_batches = 0

    def on_train_batch_begin(self, batch, logs=None):
        if batch == self.batch:
            os.kill(os.getpid(), self.signal_number)

    def on_test_batch_begin(self, batch, logs=None):
        self.test_batches += 1
        if batch == self.batch:
            os.kill(os.getpid(), self.signal_number)


@pytest.mark.parametrize("signal_number", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_ends_fit_after_the_current_step_with_a_checkpoint_at_that_step(tmp_path, signal_number):
    model = _compiled_model()
    x, y = _data()
    path = str(tmp_path / "checkpoint.npz")
    with StopSignals() as signals:
        stopper = StopOnSignal(signals, path)
        with pytest.raises(Stopped) as stopped:
            model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0, callbacks=[SignalAt(2, signal_number), stopper])
    assert stopped.value.step == 3 and stopped.value.signal_name == signal.Signals(signal_number).name
    assert checkpoint.saved_step(path) == 3
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == 3


def test_a_signal_during_evaluation_ends_it_after_the_current_batch(tmp_path):
    model = _compiled_model()
    x, y = _data()
    with StopSignals() as signals:
        stopper = StopOnSignal(signals, str(tmp_path / "checkpoint.npz"))
        counter = SignalAt(1)
        model.evaluate(x, y, batch_size=8, verbose=0, callbacks=[counter, stopper])
    assert stopper.stopping
    assert counter.test_batches == 2  # of 8


def test_a_non_chief_host_stops_without_writing(tmp_path):
    model = _compiled_model()
    x, y = _data()
    path = tmp_path / "checkpoint.npz"
    with StopSignals() as signals:
        with pytest.raises(Stopped):
            model.fit(x, y, batch_size=8, verbose=0, callbacks=[SignalAt(0), StopOnSignal(signals, str(path), is_chief=False)])
    assert not path.exists()


def test_the_previous_signal_handlers_come_back_after_the_block():
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with StopSignals():
        assert signal.getsignal(signal.SIGTERM) != before[0]
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


def test_a_second_signal_ends_the_process_at_once():
    program = (
        "import os, signal, time\n"
        "from nfnet_keras.training.preemption import StopSignals\n"
        "with StopSignals() as signals:\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    assert signals.received == 'SIGTERM'\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    time.sleep(60)\n"
    )
    result = subprocess.run([sys.executable, "-c", program], cwd=REPO_ROOT, capture_output=True, timeout=120)
    assert result.returncode == -signal.SIGTERM, result.stderr.decode()[-2000:]


def test_the_exit_code_of_a_stopped_run_is_ex_tempfail():
    assert STOPPED_EXIT_CODE == 75  # documented in README and train.py --help; schedulers key on it
