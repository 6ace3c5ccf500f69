"""How the commands (`train.py`, `export.py`, the predict command) end on an error.

`run_main(main, *args)` runs a command's work and returns its exit status:

- a user error, a `ValueError` (`ModelLoadError`, `ExportError`, `RunError`,
  `DatasetError`, `WeightsMismatchError`, ...) or an `OSError`
  (`FileNotFoundError`, `PermissionError`,
  `nfnet_keras.weights.loading.WeightsDownloadError`, ...), is one line on
  stderr, `error: <message>` (newlines and runs of whitespace collapsed), and
  status 1;
- Ctrl-C (`KeyboardInterrupt`) is the line `interrupted` and status 130;
- any other exception is a bug: it propagates with its traceback.

Set the environment variable `NFNET_KERAS_TRACEBACK=1` to get the full
traceback of a user error or an interruption instead of the one line (the
exit status stays the same).

The commands use this module before a Keras backend is chosen, and importing
the `nfnet_keras` package imports Keras: so this module imports the standard
library only, and `train.py` and `export.py` load it by its path. With absl:

    app.run(lambda argv: sys.exit(cli.run_main(main, argv)))
"""

import os
import sys
import traceback

__all__ = [
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "TRACEBACK_HELP",
    "TRACEBACK_VARIABLE",
    "USER_ERRORS",
    "error_line",
    "run_main",
]

#: The environment variable that asks for full tracebacks.
TRACEBACK_VARIABLE = "NFNET_KERAS_TRACEBACK"
#: One sentence for a command's --help.
TRACEBACK_HELP = f"An error is one line on stderr; set {TRACEBACK_VARIABLE}=1 to see its full traceback."
#: What counts as the user's error (bad input, missing or unreadable files, failed downloads).
USER_ERRORS = (ValueError, OSError)
EXIT_ERROR = 1
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for Ctrl-C


def error_line(error):
    """`error: <message>` of an exception, on one line (the class name for an empty message)."""
    message = " ".join(str(error).split()) or type(error).__name__
    return f"error: {message}"


def _wants_traceback():
    return os.environ.get(TRACEBACK_VARIABLE, "") not in ("", "0")


def run_main(main, *args):
    """Runs `main(*args)` as a command; returns its exit status (0 when it returns None).

    Args:
        main: the command's work; returns None or an exit status.
        *args: passed to `main`.

    Returns:
        `main`'s status; 1 after a user error (see the module docstring); 130
        after Ctrl-C. Other exceptions propagate.
    """
    try:
        status = main(*args)
    except USER_ERRORS as error:
        if _wants_traceback():
            traceback.print_exc()
        else:
            print(error_line(error), file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        if _wants_traceback():
            traceback.print_exc()
        else:
            print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0 if status is None else status
