"""TF Serving's version directories, written atomically.

`VersionWriter` writes the layout `<export_dir>/<name>/<version>/` through a
hidden staging directory in the same folder that is renamed into place only
when everything is written, so a failed or interrupted export leaves no
partial version behind (TF Serving ignores the non-numeric staging names). An
existing version is refused unless `overwrite=True`. `next_version` is the
default version: one more than the highest found.
"""

import os
import re
import shutil
import tempfile

from nfnet_keras.export.model import ExportError

__all__ = ["check_name", "existing_versions", "next_version", "VersionWriter"]

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")


def check_name(name):
    """Validates a model name used as a directory name."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ExportError(
            f"--name must be a plain directory name (letters, digits, '.', '_', '-'; not starting with '.'), "
            f"got {name!r}"
        )
    return name


def existing_versions(base):
    """The integer version directories in `base` (TF Serving's `model_base_path`)."""
    if not os.path.isdir(base):
        return []
    return sorted(int(e.name) for e in os.scandir(base) if e.is_dir() and e.name.isdigit())


def next_version(*bases):
    """One more than the highest version found in any of `bases` (1 when there is none)."""
    found = [v for base in bases for v in existing_versions(base)]
    return max(found, default=0) + 1


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


class VersionWriter:
    """Writes version directories atomically: staging directories renamed into place.

    `VersionWriter([final, ...], overwrite)` refuses any existing `final`
    unless `overwrite`, and creates one hidden staging directory per target
    next to it (same file system, so the final rename is atomic). Write into
    `staging(final)`; on leaving the `with` block normally every staging
    directory is renamed to its target (replacing an existing one when
    `overwrite`); on an exception (or `KeyboardInterrupt`) the staging
    directories are deleted and nothing else changes.
    """

    def __init__(self, targets, overwrite=False):
        self.targets = [os.path.abspath(os.fspath(t)) for t in targets]
        self.overwrite = overwrite
        self._staging = {}
        self._created = []
        self.check()

    def check(self):
        for target in self.targets:
            if os.path.exists(target) and not self.overwrite:
                raise ExportError(
                    f"{target} already exists: pass --overwrite to replace it, or another --version "
                    "(the default is the next free version)"
                )

    def staging(self, target):
        return self._staging[os.path.abspath(os.fspath(target))]

    def __enter__(self):
        try:
            for target in self.targets:
                parent = os.path.dirname(target)
                missing = []
                probe = parent
                while not os.path.exists(probe):
                    missing.append(probe)
                    probe = os.path.dirname(probe)
                os.makedirs(parent, exist_ok=True)
                self._created.extend(reversed(missing))
                staging = tempfile.mkdtemp(prefix=f".incomplete-{os.path.basename(target)}-", dir=parent)
                self._staging[target] = staging
                os.chmod(staging, 0o777 & ~_umask())  # mkdtemp makes it private; a server may run as another user
        except BaseException:
            self._discard()
            raise
        return self

    def __exit__(self, exc_type, exc, traceback):
        if exc_type is not None:
            self._discard()
            return False
        try:
            self._commit()
        except BaseException:
            self._discard()
            raise
        return False

    def _commit(self):
        self.check()
        for target in self.targets:
            staging = self._staging.pop(target)
            replaced = None
            if os.path.exists(target):
                parent, base = os.path.split(target)
                replaced = tempfile.mkdtemp(prefix=f".replaced-{base}-", dir=parent)
                os.rmdir(replaced)
                os.rename(target, replaced)
            try:
                os.rename(staging, target)
            except BaseException:
                if replaced is not None:
                    os.rename(replaced, target)
                self._staging[target] = staging
                raise
            if replaced is not None:
                shutil.rmtree(replaced, ignore_errors=True)

    def _discard(self):
        for staging in self._staging.values():
            shutil.rmtree(staging, ignore_errors=True)
        self._staging.clear()
        for directory in reversed(self._created):  # folders this writer created, innermost first
            try:
                os.rmdir(directory)
            except OSError:
                pass
        self._created.clear()
