"""TensorFlow's CPU allocator for a benchmark worker: the benchmarks' one mapping of the choice to the environment.

`default` is TensorFlow's own allocator (memory from malloc: what a process
gets unless told otherwise); `bfc` is its pooling allocator
(`TF_CPU_ALLOCATOR_USE_BFC=true`), which `train.py` turns on.
"""

import os

CHOICES = ("default", "bfc")
HELP = ("default (TensorFlow's own, memory from malloc) and bfc (its pooling allocator, "
        "TF_CPU_ALLOCATOR_USE_BFC=true, what train.py turns on)")


def parse(value):
    """`"default,bfc"` -> `["default", "bfc"]`; raises `ValueError` naming anything else."""
    choices = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [v for v in choices if v not in CHOICES]
    if unknown or not choices:
        raise ValueError(f"--tf_allocator {value!r}: a comma list of {', '.join(CHOICES)}")
    return choices


def select(choice):
    """Sets this process's allocator; TensorFlow reads it at its first op, so call it before that."""
    os.environ["TF_CPU_ALLOCATOR_USE_BFC"] = "true" if choice == "bfc" else "false"
