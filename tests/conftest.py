"""Shared fixtures: a stand-in for Haiku's FlatMapping, to write checkpoints in the published layout.

Also puts `tests/` on `sys.path`, so that test modules import `support.*`.
"""

import os
import sys
import types
from collections.abc import Mapping

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def fake_haiku(monkeypatch):
    """Installs a stand-in ``haiku._src.data_structures.FlatMapping`` in sys.modules.

    Like the 2021 Haiku class, it pickles as a call of the class on a plain
    dict of its children. The modules are removed again when the test ends.
    """

    class FlatMapping(Mapping):
        def __init__(self, mapping):
            self._mapping = dict(mapping)

        def __getitem__(self, key):
            return self._mapping[key]

        def __iter__(self):
            return iter(self._mapping)

        def __len__(self):
            return len(self._mapping)

        def __reduce__(self):
            return FlatMapping, (self._mapping,)

    FlatMapping.__module__ = "haiku._src.data_structures"
    FlatMapping.__qualname__ = "FlatMapping"
    haiku = types.ModuleType("haiku")
    src = types.ModuleType("haiku._src")
    data_structures = types.ModuleType("haiku._src.data_structures")
    data_structures.FlatMapping = FlatMapping
    haiku._src = src
    src.data_structures = data_structures
    monkeypatch.setitem(sys.modules, "haiku", haiku)
    monkeypatch.setitem(sys.modules, "haiku._src", src)
    monkeypatch.setitem(sys.modules, "haiku._src.data_structures", data_structures)
    return FlatMapping
