"""Argument checks shared by every subpackage, so that each message is written once."""

import numbers

__all__ = ["check_integer"]

_KINDS = {0: "a non-negative integer", 1: "a positive integer"}


def check_integer(value, name, minimum=1, error=ValueError, allow_none=False):
    """Returns `value` as an `int`, or raises `error` naming `name`.

    Accepts Python and numpy integers (not bools) of at least `minimum`.

    Args:
        value: the value to check.
        name: what the value is, as the user wrote it (`"image_size"`, `"--top_k"`).
        minimum: the smallest accepted value.
        error: the exception class to raise (a subclass of `ValueError` that a
            command turns into a one-line message, for example).
        allow_none: accept `None` and return it unchanged.

    Raises:
        error: for a bool, a non-integer or a value below `minimum`.
    """
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        kind = _KINDS.get(minimum, f"an integer >= {minimum}")
        raise error(f"{name} must be {kind}, got {value!r}")
    return int(value)
