"""Diagnostics: signal-propagation metrics and plots (DeepMind's `signal_metrics`)."""

from nfnet_keras.analysis.signal_metrics import (
    SignalPropagation,
    plot_signal_propagation,
    set_activation_gamma,
    set_skip_gains,
    signal_propagation,
)

__all__ = [
    "SignalPropagation",
    "plot_signal_propagation",
    "set_activation_gamma",
    "set_skip_gains",
    "signal_propagation",
]
