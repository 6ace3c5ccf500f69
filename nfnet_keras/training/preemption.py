"""A polite stop: SIGTERM or SIGINT finish the current step, checkpoint it, and end the run.

Preemptible machines send SIGTERM some seconds before they go away, and a
user stops a run with Ctrl-C (SIGINT). Inside `StopSignals` both only set a
flag; `StopOnSignal`, a fit callback, looks at it after every training step
(and every evaluation batch), writes the checkpoint at the step just finished
and raises `Stopped`. `train.py` then exits with `STOPPED_EXIT_CODE`, and the
same command resumes from that step, ending bit-identical to a run that was
never stopped. A second signal ends the process at once (the default action),
for a user who does not want to wait for the step.

On several hosts every process votes after every step (one tiny all-gather of
a flag), so a signal to any host stops all of them at the same step; only the
chief writes the checkpoint.

Uses numpy and `keras.ops` only; imports without TensorFlow.
"""

import os
import signal

import keras

from nfnet_keras.training import checkpoint, distribution

__all__ = ["STOPPED_EXIT_CODE", "StopOnSignal", "StopSignals", "Stopped"]

#: The exit status of a run stopped by SIGTERM or SIGINT after writing its
#: checkpoint: 75 is EX_TEMPFAIL of sysexits.h, "try again later".
STOPPED_EXIT_CODE = 75

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Stopped(Exception):
    """The run stopped on a signal; the checkpoint at `step` is written.

    Attributes:
        signal_name: `"SIGTERM"` or `"SIGINT"` (the first one received by any host).
        step: the step the checkpoint holds.
        path: the checkpoint file.
    """

    def __init__(self, signal_name, step, path):
        super().__init__(
            f"Stopped by {signal_name} at step {step}; the checkpoint {path} holds that step. "
            "Run the same command again to resume."
        )
        self.signal_name = signal_name
        self.step = step
        self.path = path


class StopSignals:
    """While active, SIGTERM and SIGINT set `received` instead of ending the process.

    A context manager; the previous handlers come back on exit. A second signal
    while one is pending ends the process with the default action.
    """

    def __init__(self):
        self.received = None
        self._previous = {}

    def __enter__(self):
        for number in _SIGNALS:
            self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc_info):
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous = {}

    def _handle(self, number, frame):
        if self.received is not None:
            signal.signal(number, signal.SIG_DFL)
            os.kill(os.getpid(), number)
            return
        self.received = signal.Signals(number).name


class StopOnSignal(keras.callbacks.Callback):
    """Ends `fit` and `evaluate` cleanly when `signals` has received a signal on any host.

    After a training step: writes the checkpoint at that step (chief only) and
    raises `Stopped`. During an evaluation: ends it after the current batch; at
    the end of that chunk, checkpoints and raises `Stopped` (the evaluation is
    not logged). Put it first in the callback list, so that nothing logs the
    interrupted chunk.

    Args:
        signals: the active `StopSignals`.
        path: the checkpoint file.
        num_hosts: processes in the run.
        is_chief: whether this process writes the checkpoint.
    """

    def __init__(self, signals, path, num_hosts=1, is_chief=True):
        super().__init__()
        self.signals = signals
        self.path = path
        self.num_hosts = num_hosts
        self.is_chief = is_chief
        self.stopping = False

    def requested(self):
        """Whether any host has received a signal (a collective on several hosts)."""
        if not self.stopping:
            votes = distribution.gather_across_hosts(self.signals.received is not None, self.num_hosts)
            self.stopping = any(votes)
        return self.stopping

    def on_train_batch_end(self, batch, logs=None):
        if self.requested():
            self.stop()

    def on_test_batch_end(self, batch, logs=None):
        if self.requested():
            self.model.stop_evaluating = True

    def on_epoch_end(self, epoch, logs=None):
        if self.stopping:
            self.stop()

    def stop(self):
        """Writes the checkpoint at the current step (chief) and raises `Stopped`."""
        sync = getattr(self.model, "jax_state_sync", None)
        if sync is not None:  # JAX keeps the state outside the variables during fit
            sync()
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        if self.is_chief:
            checkpoint.save_state(self.model, self.path, step)
        raise self.stopped(step)

    def stopped(self, step):
        """The `Stopped` error for a stop at `step` (its checkpoint written)."""
        return Stopped(self.signals.received or "a signal to another host", step, self.path)
