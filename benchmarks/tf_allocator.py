"""TensorFlow's CPU allocator for a benchmark worker: the benchmarks' one mapping of the choice to the environment.

`default` is TensorFlow's own allocator (memory from malloc: what a process
gets unless told otherwise); `bfc` is its pooling allocator
(`TF_CPU_ALLOCATOR_USE_BFC=true`), which `train.py` turns on.
"""

import os

CHOICES = ("default", "bfc")
HELP = ("default (TensorFlow's own, memory from malloc) and bfc (its pooling allocator, "
        "TF_CPU_ALLOCATOR_USE_BFC=true, what train.py turns on)")


def select(choice):
    """Sets this process's allocator; TensorFlow reads it at its first op, so call it before that."""
    os.environ["TF_CPU_ALLOCATOR_USE_BFC"] = "true" if choice == "bfc" else "false"
