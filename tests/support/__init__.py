"""Helpers shared by the tests: paths, golden references, subprocess runners.

`tests/conftest.py` puts `tests/` on `sys.path`, so test modules import these
as `support.<module>`; the scripts in `tests/scripts/` do the same themselves.
"""

import os

TESTS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO_ROOT = os.path.dirname(TESTS_DIR)
FIXTURES_DIR = os.path.join(TESTS_DIR, "fixtures")
SCRIPTS_DIR = os.path.join(TESTS_DIR, "scripts")
GOLDEN_F0 = os.path.join(FIXTURES_DIR, "golden_F0_seed0.npz")


def script(name):
    """Path of a script in `tests/scripts/` (run as a subprocess by the tests)."""
    return os.path.join(SCRIPTS_DIR, name)
