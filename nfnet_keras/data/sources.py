"""Labelled image sources for the NFNet input pipeline.

A source is an :class:`ImageSource`: class names plus named splits of
(encoded image or pixels, integer label) examples in a fixed order. The input
pipeline (:mod:`nfnet_keras.data.pipeline`) asks it for a sharded, shuffled,
repeated ``tf.data.Dataset`` of raw examples and decodes them with
:func:`nfnet_keras.preprocessing.decode_image`. :func:`load_source` accepts:

* ``"cifar10_sample"`` (the default, also ``None``): the CIFAR-10 sample that
  ships with the package (``nfnet_keras/data/cifar10_sample.npz``: 5,000 train
  and 1,000 test JPEGs, 500/100 per class; see ``data/NOTICE_CIFAR10``).
* an npz file of concatenated JPEG bytes, in either layout of the data READMEs:
  one file with several splits (``x_train_jpeg``, ``x_train_offsets``,
  ``y_train``, ``x_test_...``, optional ``train_files``, ``class_names``) or one
  file per split (``jpeg``, ``offsets``, ``labels``, optional ``files``,
  ``class_names``) named ``<prefix>_<split>.npz``: given one such file, its
  siblings with the same prefix are the other splits. A directory holding such
  a family (``imagenette2_224/`` with ``imagenette2_224_train.npz`` and
  ``imagenette2_224_val.npz``) works too. Prefix ``npz:`` to force this reader.
* an image folder ``root/<class>/*.jpg|jpeg|png|bmp`` (one split, ``train``) or
  ``root/<split>/<class>/...`` with split folders ``train``, ``val``,
  ``validation`` or ``test``. Class indices follow the sorted class folder names.
  Prefix ``folder:`` to force this reader.
* ``"tfds:NAME"`` (e.g. ``"tfds:imagenet2012"``, ``"tfds:cifar10:3.0.2"``): a
  TensorFlow Datasets dataset read from ``data_dir``, built offline from
  ``manual_dir`` if it is not prepared yet. ``tensorflow_datasets`` is imported
  only here.
* an :class:`ImageSource` (returned unchanged), e.g. from :func:`from_arrays`
  or :func:`from_encoded`.

Bad input fails here, before any training step: an unknown name (the message
lists the accepted forms), a missing path, a folder or npz without images, a
dataset with fewer than two classes, labels out of range, and corrupt images.
Every image of an npz or folder source is decoded once, in parallel, with the
decoder the pipeline uses (``verify=True``, the default), so a file that would
fail mid-training is found now; with ``skip_corrupt=True`` such files are left
out and counted (:attr:`ImageSource.skipped`, and a log warning), otherwise a
:class:`DatasetError` names the first one. The bundled sample is verified when
it is built (``tools/make_cifar10_sample.py``), TFDS data when it is prepared.

Split names: ``"train"``, and ``"eval"`` for the first of ``validation``,
``val`` and ``test`` that the source has; a source's own split names work too.
A source without such a split (a flat ``root/<class>/...`` folder) gets one
from :func:`hold_out`, which moves a stratified, seeded fraction of
``train`` into ``validation`` (``train.py --validation_fraction``).

Folder sources, file by file:

* Only the extensions in :data:`IMAGE_EXTENSIONS` are read; other files
  (``notes.txt``) are ignored. A file with an image extension that is not an
  image (or is truncated) is corrupt: refused, or skipped and counted.
* Class indices follow the sorted class folder names, whatever is skipped: an
  empty class folder keeps its class (and its index) and logs one warning
  naming it; a skipped file never shifts another file's label.
* Names are used as the file system gives them (UTF-8 or not).
* Directory links are followed, but a folder is entered at most once per
  class, a link to a folder that contains the class folder (a loop) is not
  entered (with a warning), and a file reached under several names in one
  class is listed once. A file reachable from two class folders is refused.

Decoding is :func:`nfnet_keras.preprocessing.decode_image`, which gives the
pixels Pillow gives (and ``prepare_images`` uses): greyscale, palette, CMYK
and alpha images become RGB, 16-bit PNGs keep each value's high byte
(``v >> 8``; see :mod:`nfnet_keras.preprocessing.decoding`). EXIF orientation
is NOT applied: the pipeline decodes the stored pixels, as Pillow's
``Image.open``, timm, torchvision and ``tf.io`` do, so that training, the
predict command (``load_image``) and the exported SavedModel (``tf.io``) see
the same image. Rotate such files on disk if they should be upright.
"""

import dataclasses
import hashlib
import logging
import math
import numbers
import os
import pathlib
import re

import numpy as np
import tensorflow as tf

from nfnet_keras.checks import check_integer
from nfnet_keras.preprocessing.decoding import decode_image

__all__ = [
    "DatasetError",
    "ImageSource",
    "ACCEPTED_FORMS",
    "BUNDLED_SAMPLE",
    "BUNDLED_SAMPLE_PATH",
    "CIFAR10_CLASSES",
    "IMAGE_EXTENSIONS",
    "list_images",
    "load_source",
    "bundled_cifar10_sample",
    "from_npz",
    "from_folder",
    "from_tfds",
    "from_arrays",
    "from_encoded",
    "find_undecodable",
    "hold_out",
    "HOLD_OUT_SPLIT",
]

logger = logging.getLogger(__name__)

#: Name of the bundled CIFAR-10 sample for :func:`load_source`.
BUNDLED_SAMPLE = "cifar10_sample"
#: Path of the bundled sample npz inside the package.
BUNDLED_SAMPLE_PATH = pathlib.Path(__file__).resolve().parent / "cifar10_sample.npz"
#: The CIFAR-10 class names in label order.
CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
#: File name endings read by the folder reader (case-insensitive).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
#: Split names tried, in order, for the generic ``"eval"`` split.
EVAL_SPLIT_NAMES = ("validation", "val", "test")
_SPLIT_DIR_NAMES = ("train",) + EVAL_SPLIT_NAMES
#: The split :func:`hold_out` creates (the first of `EVAL_SPLIT_NAMES`, so ``"eval"`` finds it).
HOLD_OUT_SPLIT = EVAL_SPLIT_NAMES[0]

ACCEPTED_FORMS = (
    f"'{BUNDLED_SAMPLE}' (the bundled CIFAR-10 sample; also None)",
    "'path/to/file.npz' or 'npz:path' (concatenated JPEG bytes + offsets + labels, "
    "one file with x_<split>_jpeg/x_<split>_offsets/y_<split> keys, or <prefix>_<split>.npz "
    "files with jpeg/offsets/labels keys; a directory of such files also works)",
    "'path/to/folder' or 'folder:path' (root/<class>/*.jpg|jpeg|png|bmp, or "
    "root/{train,val,validation,test}/<class>/...)",
    "'tfds:NAME[:VERSION]' (TensorFlow Datasets, with data_dir= and manual_dir=)",
    "an ImageSource object (e.g. from from_arrays or from_encoded)",
)


class DatasetError(ValueError):
    """A data source cannot be used (unknown, missing, empty, corrupt, one class, ...)."""


def _accepted_forms_text():
    return "Accepted forms:\n" + "\n".join(f"  - {form}" for form in ACCEPTED_FORMS)


# ---------------------------------------------------------------------------
# Decoding checks
# ---------------------------------------------------------------------------


def _tf_strings(items):
    """``items`` as a list TensorFlow can hold: ``str`` paths become file-system bytes.

    ``os.fsencode`` keeps names that are not valid UTF-8 (which ``tf.constant``
    refuses as ``str``) readable by ``tf.io.read_file``.
    """
    return [os.fsencode(item) if isinstance(item, str) else item for item in items]


def _printable(name):
    """``name`` for a one-line message: as is, or escaped if it holds control or undecodable characters."""
    name = str(name)
    return name if name.isprintable() else ascii(name)[1:-1]


_TF_NODE_PREFIX = re.compile(r"^\{\{function_node [^}]*\}\}\s*")
_TF_OP_SUFFIX = re.compile(r"\s*\[Op:[^\]]*\].*$")


def _error_line(err, default):
    """The first line of a TensorFlow or Python error, without TF's node prefix and op suffix."""
    message = (getattr(err, "message", None) or str(err)).strip()
    if not message:
        return default
    line = _TF_OP_SUFFIX.sub("", _TF_NODE_PREFIX.sub("", message.splitlines()[0]))
    return line or default


def find_undecodable(items, from_files=False, max_reasons=5):
    """Return ``[(index, reason), ...]`` for the items that :func:`decode_image` rejects.

    Runs one parallel ``tf.data`` pass that reads (``from_files=True``: items
    are paths) and decodes every item, dropping failures with
    ``ignore_errors``; the indices missing from the output are the bad ones.
    The first ``max_reasons`` are decoded again eagerly to get the error
    text (one line each).
    """
    items = _tf_strings(items)
    n = len(items)
    if n == 0:
        return []
    indices = np.arange(n, dtype=np.int64)
    ds = tf.data.Dataset.from_tensor_slices((indices, tf.constant(items, dtype=tf.string)))

    def check(index, item):
        contents = tf.io.read_file(item) if from_files else item
        image = decode_image(contents)
        return index, tf.shape(image)

    ds = ds.map(check, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
    ds = ds.ignore_errors().batch(4096)
    good = np.zeros(n, dtype=bool)
    for index, _ in ds.as_numpy_iterator():
        good[index] = True
    bad = np.flatnonzero(~good)
    result = []
    for k, index in enumerate(bad):
        reason = "cannot be decoded as an image"
        if k < max_reasons:
            try:
                contents = tf.io.read_file(items[index]) if from_files else items[index]
                decode_image(contents)
            except (tf.errors.OpError, ValueError) as err:  # noqa: PERF203
                reason = _error_line(err, reason)
        result.append((int(index), reason))
    return result


# ---------------------------------------------------------------------------
# ImageSource
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class _Split:
    data: object  # object array of bytes, array of str paths, or uint8 (N, H, W, 3)
    labels: np.ndarray  # int64 (N,)
    names: object = None  # array of str (file names) or None


class ImageSource:
    """A labelled image dataset with named splits, read in a fixed order.

    Attributes:
        name: a short description (e.g. the path).
        kind: ``"bytes"`` (encoded images in memory), ``"files"`` (paths read
            at run time), ``"pixels"`` (uint8 arrays) or ``"tfds"``.
        class_names: tuple of class names; ``num_classes = len(class_names)``.
        skipped: ``((split, file_name, reason), ...)`` for corrupt images left
            out with ``skip_corrupt=True``.
    """

    def __init__(self, name, class_names, splits, kind, skipped=()):
        if kind not in ("bytes", "files", "pixels", "tfds"):
            raise ValueError(f"unknown source kind {kind!r}")
        self.name = str(name)
        self.kind = kind
        self.class_names = tuple(str(c) for c in class_names)
        self._splits = dict(splits)
        self.skipped = tuple(skipped)

    def __repr__(self):
        counts = ", ".join(f"{s}={self.num_examples(s)}" for s in self.split_names)
        return (
            f"ImageSource({self.name!r}, kind={self.kind!r}, num_classes={self.num_classes}, "
            f"{counts}, skipped={len(self.skipped)})"
        )

    @property
    def num_classes(self):
        return len(self.class_names)

    @property
    def split_names(self):
        return tuple(self._splits)

    def resolve_split(self, split):
        """Map ``"train"``/``"eval"`` (or a split's own name) to a split of this source.

        Raises:
            DatasetError: (one line) the source has no such split; for
                ``"eval"`` on a source without an evaluation split, the
                message says how to hold one out.
        """
        names = self.split_names
        if split in names:
            return split
        if split == "eval":
            for candidate in EVAL_SPLIT_NAMES:
                if candidate in names:
                    return candidate
            remedy = (
                "name one of its splits instead"
                if self.kind == "tfds"
                else "pass --validation_fraction F to hold out a fraction F of 'train' for evaluation "
                "(hold_out(source, F, seed) in code)"
            )
            raise DatasetError(
                f"dataset {self.name!r} has no evaluation split (none of {', '.join(EVAL_SPLIT_NAMES)}; "
                f"it has {list(names)}); {remedy}."
            )
        raise DatasetError(
            f"source {self.name!r} has no split {split!r}; it has {list(names)}. "
            "Use 'train', 'eval' (= the first of validation/val/test) or one of those."
        )

    def has_split(self, split):
        """Whether :meth:`resolve_split` finds ``split`` (e.g. ``has_split("eval")``)."""
        try:
            self.resolve_split(split)
        except DatasetError:
            return False
        return True

    def num_examples(self, split):
        return int(len(self._splits[self.resolve_split(split)].labels))

    def labels(self, split):
        """The int64 labels of ``split`` in source order."""
        return np.asarray(self._splits[self.resolve_split(split)].labels)

    def examples(self, split):
        """The raw examples of ``split`` in source order: encoded bytes, file paths or pixel arrays (``kind``)."""
        return self._splits[self.resolve_split(split)].data

    def example_names(self, split):
        """File names (or ``None``) of ``split`` in source order, for messages."""
        return self._splits[self.resolve_split(split)].names

    def decode(self, raw):
        """Turn a raw example (bytes, path or pixels) into a uint8 ``(H, W, 3)`` tensor."""
        if self.kind == "pixels":
            image = tf.convert_to_tensor(raw, tf.uint8)
            image.set_shape([None, None, 3])
            return image
        if self.kind == "files":
            raw = tf.io.read_file(os.fsencode(raw) if isinstance(raw, str) else raw)
        return decode_image(raw)

    def make_dataset(
        self, split, *, num_shards=1, shard_index=0, shuffle=False, seed=None, shuffle_buffer=None, repeat=False
    ):
        """A ``tf.data.Dataset`` of ``(raw, label int64)`` for ``split``.

        Sharding (``dataset.shard(num_shards, shard_index)``) comes first, so
        hosts see disjoint examples. In-memory sources shuffle a permutation of
        example indices over the whole shard (the stored order is sorted by
        class, so a small buffer would not mix classes), reshuffled every
        epoch; with a ``seed`` the permutation of epoch ``e`` is a stateless
        function of ``(seed, e)``, identical in every process and for every
        iterator, independent of TensorFlow's global seed.
        """
        split = self.resolve_split(split)
        part = self._splits[split]
        n = len(part.labels)
        local = np.arange(shard_index, n, num_shards, dtype=np.int64) if num_shards > 1 else np.arange(n)
        if shuffle and seed is not None and shuffle_buffer is None:
            # Epoch e is a stateless permutation keyed by (seed, e): the same order in
            # every process, whatever the global TF seed (which `Dataset.shuffle` mixes in).
            indices = tf.constant(local)
            seed = int(seed)

            def permutation(epoch):
                key = tf.stack([tf.constant(seed, tf.int64), epoch])
                return tf.data.Dataset.from_tensor_slices(tf.random.experimental.stateless_shuffle(indices, key))

            epochs = tf.data.Dataset.range(2**62 if repeat else 1)
            ds = epochs.flat_map(permutation)
        else:
            buffer = len(local) if shuffle_buffer is None else min(int(shuffle_buffer), len(local))
            ds = _shuffled_and_repeated(tf.data.Dataset.from_tensor_slices(local), shuffle, buffer, seed, repeat)
        if self.kind == "pixels":
            data = tf.constant(part.data, dtype=tf.uint8)
        else:
            data = tf.constant(_tf_strings(part.data), dtype=tf.string)
        labels = tf.constant(np.asarray(part.labels, np.int64))

        def lookup(index):
            return tf.gather(data, index), tf.gather(labels, index)

        return ds.map(lookup, num_parallel_calls=tf.data.AUTOTUNE)


#: How many examples of a TFDS split :meth:`_TFDSSource.make_dataset` reads at once to check their labels.
_TFDS_LABELS_CHECKED_FIRST = 64


class _TFDSSource(ImageSource):
    """An :class:`ImageSource` backed by a prepared TFDS builder."""

    def __init__(self, name, class_names, builder, split_sizes, image_key, label_key):
        super().__init__(name, class_names, {}, "tfds")
        self._builder = builder
        self._split_sizes = dict(split_sizes)
        self._image_key = image_key
        self._label_key = label_key

    @property
    def split_names(self):
        return tuple(self._split_sizes)

    def num_examples(self, split):
        return int(self._split_sizes[self.resolve_split(split)])

    def labels(self, split):
        """``None``: a TFDS source's labels are only known by reading the data."""
        return None

    def examples(self, split):
        """The encoded images of ``split``, in the order :meth:`make_dataset` reads them unshuffled.

        Reads the whole split into memory (an object array of ``bytes``, as for
        an npz source); stream a large split with :meth:`make_dataset` instead.
        """
        images = self.make_dataset(split).map(lambda raw, label: raw)
        return np.array(list(images.as_numpy_iterator()), dtype=object)

    def example_names(self, split):
        return None

    def decode(self, raw):
        return decode_image(raw)

    def _label_range_message(self, split):
        return (
            f"TFDS dataset {self.name!r}: split {split!r} has labels outside [0, {self.num_classes}) "
            "(TFDS marks unlabelled examples with -1); use a labelled split."
        )

    def _read(self, split, *, shuffle, seed):
        """``(encoded image, int64 label)`` of ``split``, every label asserted to be in range."""
        tfds = _import_tfds()
        read_config = tfds.ReadConfig(shuffle_seed=seed, interleave_cycle_length=16)
        ds = self._builder.as_dataset(
            split=split,
            shuffle_files=bool(shuffle),
            decoders={self._image_key: tfds.decode.SkipDecoding()},
            read_config=read_config,
        )
        image_key, label_key, num_classes = self._image_key, self._label_key, self.num_classes
        message = self._label_range_message(split)

        def checked(example):
            label = tf.cast(example[label_key], tf.int64)
            in_range = tf.logical_and(label >= 0, label < num_classes)
            with tf.control_dependencies([tf.debugging.Assert(in_range, [message, label])]):
                return example[image_key], tf.identity(label)

        return ds.map(checked)

    def make_dataset(
        self, split, *, num_shards=1, shard_index=0, shuffle=False, seed=None, shuffle_buffer=None, repeat=False
    ):
        """Like :meth:`ImageSource.make_dataset`; shuffles files plus a buffer.

        The buffer defaults to 10,000 examples (DeepMind used 10x the per-host
        batch on ImageNet's pre-shuffled TFDS records).

        Labels are checked as they are read: a ``ClassLabel`` may hold -1
        (TFDS's mark for an unlabelled example, e.g. imagenet2012's test
        split). The first examples of the split are read now, so an
        unlabelled split fails here with a one-line :class:`DatasetError`;
        a later label outside ``[0, num_classes)`` stops the stream with the
        same line (in a ``tf.errors.InvalidArgumentError``).
        """
        split = self.resolve_split(split)
        try:
            for _ in self._read(split, shuffle=False, seed=None).take(_TFDS_LABELS_CHECKED_FIRST):
                pass
        except tf.errors.InvalidArgumentError as err:
            raise DatasetError(self._label_range_message(split)) from err
        ds = self._read(split, shuffle=shuffle, seed=seed)
        if num_shards > 1:
            ds = ds.shard(num_shards, shard_index)
        buffer = 10_000 if shuffle_buffer is None else int(shuffle_buffer)
        return _shuffled_and_repeated(ds, shuffle, buffer, seed, repeat)


def _shuffled_and_repeated(ds, shuffle, buffer, seed, repeat):
    """`ds` shuffled through a buffer of `buffer` (at least 1) examples, reshuffled every epoch, and repeated."""
    if shuffle:
        ds = ds.shuffle(max(1, buffer), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    return ds


# ---------------------------------------------------------------------------
# Checks shared by the readers
# ---------------------------------------------------------------------------


def _check_classes(name, class_names, splits):
    num_classes = len(class_names)
    present = set()
    for split, part in splits.items():
        labels = np.asarray(part.labels)
        if labels.size == 0:
            raise DatasetError(f"{name}: split {split!r} has no images.")
        if labels.min() < 0 or labels.max() >= num_classes:
            raise DatasetError(
                f"{name}: split {split!r} has labels in [{labels.min()}, {labels.max()}] "
                f"but {num_classes} class names; labels must be in [0, {num_classes})."
            )
        present.update(np.unique(labels).tolist())
    if num_classes < 2 or len(present) < 2:
        found = [class_names[i] for i in sorted(present)] if class_names else []
        raise DatasetError(
            f"{name}: found {len(present)} class(es) with images ({found}); a classification "
            "dataset needs images of at least 2 classes."
        )


def _verify_splits(name, splits, kind, skip_corrupt):
    """Decode every example once; drop or raise on failures. Returns (splits, skipped)."""
    skipped = []
    checked = {}
    for split, part in splits.items():
        bad = find_undecodable(part.data, from_files=(kind == "files"))
        if not bad:
            checked[split] = part
            continue
        names = part.names if part.names is not None else [f"#{i}" for i in range(len(part.labels))]
        first_index, first_reason = bad[0]
        if not skip_corrupt:
            raise DatasetError(
                f"{name}: {len(bad)} corrupt image(s) in split {split!r}; the first is "
                f"{_printable(names[first_index])} ({first_reason}). Remove them, or pass "
                "skip_corrupt=True to leave them out."
            )
        keep = np.ones(len(part.labels), dtype=bool)
        keep[[i for i, _ in bad]] = False
        for i, reason in bad:
            skipped.append((split, str(names[i]), reason))
        new_names = None if part.names is None else np.asarray(part.names)[keep]
        checked[split] = _Split(np.asarray(part.data, dtype=object)[keep], np.asarray(part.labels)[keep], new_names)
        logger.warning(
            "%s: skipped %d corrupt image(s) in split %r (first: %s: %s)",
            name,
            len(bad),
            split,
            _printable(names[first_index]),
            first_reason,
        )
    return checked, skipped


def _finish(name, class_names, splits, kind, verify, skip_corrupt):
    for split, part in splits.items():
        if len(part.labels) == 0:
            raise DatasetError(f"{name}: split {split!r} has no images.")
    skipped = []
    if verify and kind in ("bytes", "files"):
        splits, skipped = _verify_splits(name, splits, kind, skip_corrupt)
    _check_classes(name, class_names, splits)
    return ImageSource(name, class_names, splits, kind, skipped=skipped)


# ---------------------------------------------------------------------------
# Readers
# ---------------------------------------------------------------------------


def _split_jpeg_buffer(buffer, offsets, what):
    buffer = np.asarray(buffer)
    offsets = np.asarray(offsets, dtype=np.int64)
    if buffer.dtype != np.uint8 or buffer.ndim != 1:
        raise DatasetError(f"{what}: the JPEG buffer must be 1-D uint8, got {buffer.dtype} {buffer.shape}")
    if offsets.ndim != 1 or len(offsets) < 1 or offsets[0] != 0 or np.any(np.diff(offsets) < 0):
        raise DatasetError(f"{what}: offsets must be a non-decreasing 1-D array starting at 0")
    if offsets[-1] > len(buffer):
        raise DatasetError(f"{what}: the last offset {offsets[-1]} is past the buffer end {len(buffer)}")
    raw = buffer.tobytes()
    items = np.empty(len(offsets) - 1, dtype=object)
    for i in range(len(offsets) - 1):
        items[i] = raw[offsets[i] : offsets[i + 1]]
    return items


_NPZ_SPLIT_FILE = re.compile(r"^(?P<prefix>.+)_(?P<split>train|val|validation|test)\.npz$")


def _read_single_split_npz(path):
    with np.load(path, allow_pickle=False) as d:
        missing = [k for k in ("jpeg", "offsets", "labels") if k not in d.files]
        if missing:
            raise DatasetError(f"{path}: missing key(s) {missing}; found {sorted(d.files)}")
        items = _split_jpeg_buffer(d["jpeg"], d["offsets"], str(path))
        labels = np.asarray(d["labels"], dtype=np.int64)
        names = np.asarray(d["files"]).astype(str) if "files" in d.files else None
        class_names = tuple(np.asarray(d["class_names"]).astype(str)) if "class_names" in d.files else None
    if len(labels) != len(items):
        raise DatasetError(f"{path}: {len(items)} images but {len(labels)} labels")
    return _Split(items, labels, names), class_names


def from_npz(path, *, verify=True, skip_corrupt=False):
    """Read an npz of concatenated JPEG bytes (either layout; see the module docstring).

    ``path`` may be a file or a directory holding ``<prefix>_<split>.npz`` files.
    """
    path = pathlib.Path(os.fspath(path)).expanduser()
    if not path.exists():
        raise DatasetError(f"npz source not found: {path}")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if _NPZ_SPLIT_FILE.match(p.name))
        prefixes = sorted({_NPZ_SPLIT_FILE.match(p.name).group("prefix") for p in files})
        if not files:
            raise DatasetError(f"{path}: no <prefix>_<train|val|validation|test>.npz files in this directory")
        if len(prefixes) > 1:
            raise DatasetError(f"{path}: several npz datasets here ({prefixes}); pass one file")
        path = files[0]
    splits = {}
    class_names = None
    with np.load(path, allow_pickle=False) as d:
        keys = set(d.files)
    multi = sorted(
        k[len("x_") : -len("_jpeg")] for k in keys if k.startswith("x_") and k.endswith("_jpeg")
    )
    if multi:
        with np.load(path, allow_pickle=False) as d:
            for split in multi:
                need = [f"x_{split}_offsets", f"y_{split}"]
                missing = [k for k in need if k not in keys]
                if missing:
                    raise DatasetError(f"{path}: split {split!r} lacks key(s) {missing}")
                items = _split_jpeg_buffer(d[f"x_{split}_jpeg"], d[f"x_{split}_offsets"], f"{path}[{split}]")
                labels = np.asarray(d[f"y_{split}"], dtype=np.int64)
                if len(labels) != len(items):
                    raise DatasetError(f"{path}: split {split!r} has {len(items)} images but {len(labels)} labels")
                names = np.asarray(d[f"{split}_files"]).astype(str) if f"{split}_files" in keys else None
                splits[split] = _Split(items, labels, names)
            if "class_names" in keys:
                class_names = tuple(np.asarray(d["class_names"]).astype(str))
        ordered = [s for s in _SPLIT_DIR_NAMES if s in splits] + [s for s in splits if s not in _SPLIT_DIR_NAMES]
        splits = {s: splits[s] for s in ordered}
    elif {"jpeg", "offsets", "labels"} <= keys:
        match = _NPZ_SPLIT_FILE.match(path.name)
        if match:
            family = {}
            for split in _SPLIT_DIR_NAMES:
                sibling = path.with_name(f"{match.group('prefix')}_{split}.npz")
                if sibling.is_file():
                    family[split] = sibling
        else:
            family = {"train": path}
        for split, file in family.items():
            part, names_here = _read_single_split_npz(file)
            splits[split] = part
            if names_here is not None:
                if class_names is not None and tuple(names_here) != tuple(class_names):
                    raise DatasetError(f"{file}: class_names differ from those of the other splits")
                class_names = names_here
    else:
        raise DatasetError(
            f"{path}: not an npz of JPEG bytes; expected keys x_<split>_jpeg/x_<split>_offsets/y_<split> "
            f"or jpeg/offsets/labels, found {sorted(keys)}"
        )
    if class_names is None:
        top = max(int(np.max(p.labels)) for p in splits.values() if len(p.labels))
        class_names = tuple(str(i) for i in range(top + 1))
    return _finish(str(path), class_names, splits, "bytes", verify, skip_corrupt)


def bundled_cifar10_sample():
    """The CIFAR-10 sample shipped with the package (5,000 train, 1,000 test JPEGs).

    Splits ``train`` and ``test`` (``"eval"`` resolves to ``test``); 500 and
    100 images per class. Not re-verified on load: the generator
    ``tools/make_cifar10_sample.py`` decodes every image when it builds the file.
    """
    if not BUNDLED_SAMPLE_PATH.is_file():
        raise DatasetError(
            f"the bundled CIFAR-10 sample is missing ({BUNDLED_SAMPLE_PATH}); rebuild it with "
            "tools/make_cifar10_sample.py"
        )
    source = from_npz(BUNDLED_SAMPLE_PATH, verify=False)
    source.name = BUNDLED_SAMPLE
    return source


def _file_identity(path):
    """``(device, inode)`` of what ``path`` leads to (links followed), or the path itself if it leads nowhere."""
    try:
        info = os.stat(path)
    except OSError:
        return ("unreadable", path)  # a dangling link: listed once, and the decoder names it
    return (info.st_dev, info.st_ino)


def _contains(outer, inner):
    """Whether real path ``inner`` is ``outer`` or lies inside it."""
    return inner == outer or inner.startswith(outer.rstrip(os.sep) + os.sep)


def _walk_images(directory):
    """``[(path, identity)]`` of the image files under ``directory`` (see :func:`list_images`)."""
    start = os.path.realpath(directory)
    entered = {_file_identity(directory)}
    listed = set()
    found = []
    for root, dirs, names in os.walk(directory, followlinks=True):
        enter = []
        for name in sorted(dirs):
            path = os.path.join(root, name)
            identity = _file_identity(path)
            if identity in entered or _contains(os.path.realpath(path), start):
                # Only a link can lead back to a folder already entered or above this one.
                logger.warning("%s: not following link %s: it leads to a folder listed already", directory, path)
                continue
            entered.add(identity)
            enter.append(name)
        dirs[:] = enter
        for name in sorted(names):
            if name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith("."):
                path = os.path.join(root, name)
                identity = _file_identity(path)
                if identity not in listed:
                    listed.add(identity)
                    found.append((path, identity))
    return found


def list_images(directory):
    """Image files (`IMAGE_EXTENSIONS`, no hidden files) under `directory`, recursively, sorted by path.

    Directory links are followed, but each folder is entered once, and a link
    to a folder that contains `directory` (a loop) is skipped with a warning,
    so the listing ends. A file reached under several names (file links, two
    links to one folder) is listed once, under its first name.
    """
    return [path for path, _ in _walk_images(directory)]


def _class_dirs(directory):
    return sorted(
        entry.name for entry in os.scandir(directory) if entry.is_dir() and not entry.name.startswith(".")
    )


def from_folder(root, *, verify=True, skip_corrupt=False):
    """Read ``root/<class>/<images>`` or ``root/<split>/<class>/<images>``.

    Files ending in ``.jpg``, ``.jpeg``, ``.png`` or ``.bmp`` (any case) are
    images; class folders are searched recursively. With split folders
    (``train`` plus ``val``/``validation``/``test``) the class list comes from
    ``train`` and the other splits may only use those classes.
    """
    root = pathlib.Path(os.fspath(root)).expanduser()
    if not root.exists():
        raise DatasetError(f"image folder not found: {root}")
    if not root.is_dir():
        raise DatasetError(f"not a folder: {root}")
    top = _class_dirs(root)
    split_dirs = [d for d in _SPLIT_DIR_NAMES if d in top]
    if "train" in split_dirs or (split_dirs and len(split_dirs) == len(top)):
        layout = {d: root / d for d in split_dirs}
    else:
        layout = {"train": root}
    first = next(iter(layout))
    class_names = tuple(_class_dirs(layout[first]))
    if not class_names:
        loose = list_images(layout[first])
        detail = f" ({len(loose)} image file(s) lie directly in it)" if loose else ""
        raise DatasetError(
            f"{layout[first]}: no class folders; expected {layout[first]}/<class>/<image>{detail}. "
            "A classification dataset needs at least 2 class folders."
        )
    class_index = {c: i for i, c in enumerate(class_names)}
    real_root = os.path.realpath(root)
    splits = {}
    for split, directory in layout.items():
        classes_here = _class_dirs(directory)
        unknown = [c for c in classes_here if c not in class_index]
        if unknown:
            raise DatasetError(
                f"{directory}: class folder(s) {unknown} are not in the {first!r} split's classes "
                f"{list(class_names)}"
            )
        paths, labels = [], []
        owner = {}  # file identity -> (class, path): one file must not get two labels
        for cls in classes_here:
            if _contains(os.path.realpath(directory / cls), real_root):
                raise DatasetError(
                    f"{directory}: class folder '{_printable(cls)}' is a link to a folder that contains the "
                    "dataset (a loop); remove it."
                )
            found = _walk_images(directory / cls)
            if not found:
                logger.warning("%s: class folder %r has no images (the class keeps its index)", directory, cls)
            for path, identity in found:
                if identity in owner and owner[identity][0] != cls:
                    other_cls, other_path = owner[identity]
                    raise DatasetError(
                        f"{directory}: {_printable(os.path.relpath(other_path, root))} (class "
                        f"'{_printable(other_cls)}') and {_printable(os.path.relpath(path, root))} (class "
                        f"'{_printable(cls)}') are the same file (a link); an image must belong to one class."
                    )
                owner[identity] = (cls, path)
                paths.append(path)
                labels.append(class_index[cls])
        if not paths:
            raise DatasetError(
                f"{directory}: no image files ({', '.join(IMAGE_EXTENSIONS)}) found in its class folders "
                f"{classes_here}."
            )
        names = np.array([os.path.relpath(p, root) for p in paths])
        splits[split] = _Split(np.array(paths, dtype=object), np.array(labels, dtype=np.int64), names)
    return _finish(str(root), class_names, splits, "files", verify, skip_corrupt)


def _numbered_class_names(splits):
    """Class names "0".."K-1" for the largest label found in ``splits``."""
    top = max(int(p.labels.max()) for p in splits.values() if len(p.labels))
    return tuple(str(i) for i in range(top + 1))


def from_arrays(images, labels, class_names=None, split="train", name="arrays"):
    """A source of uint8 pixel arrays: ``images`` ``(N, H, W, 3)`` and integer ``labels``.

    ``images`` and ``labels`` may also be dicts ``{split: array}`` for several
    splits (``split`` is then ignored).
    """
    if not isinstance(images, dict):
        images, labels = {split: images}, {split: labels}
    splits = {}
    for key, array in images.items():
        array = np.asarray(array)
        if array.ndim != 4 or array.shape[-1] != 3:
            raise DatasetError(f"{name}: images[{key!r}] must be (N, H, W, 3), got {array.shape}")
        if array.dtype != np.uint8:
            raise DatasetError(f"{name}: images[{key!r}] must be uint8 (0..255), got {array.dtype}")
        splits[key] = _labelled_split(name, key, array, labels[key])
    if class_names is None:
        class_names = _numbered_class_names(splits)
    return _finish(name, class_names, splits, "pixels", False, False)


def _labelled_split(name, split, images, labels):
    """A `_Split` of in-memory `images` and their integer `labels`, one each."""
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if len(labels) != len(images):
        raise DatasetError(f"{name}: {len(images)} images but {len(labels)} labels in split {split!r}")
    return _Split(images, labels, None)


def from_encoded(encoded, labels, class_names=None, split="train", name="encoded", verify=True, skip_corrupt=False):
    """A source of encoded images (``bytes`` each) and integer labels (or dicts per split)."""
    if not isinstance(encoded, dict):
        encoded, labels = {split: encoded}, {split: labels}
    splits = {}
    for key, items in encoded.items():
        items_arr = np.empty(len(items), dtype=object)
        for i, item in enumerate(items):
            items_arr[i] = bytes(item)
        splits[key] = _labelled_split(name, key, items_arr, labels[key])
    if class_names is None:
        class_names = _numbered_class_names(splits)
    return _finish(name, class_names, splits, "bytes", verify, skip_corrupt)


def _import_tfds():
    try:
        import tensorflow_datasets as tfds  # noqa: PLC0415 (lazy on purpose)
    except ImportError as err:
        raise ImportError(
            "TFDS sources need tensorflow-datasets: pip install tensorflow-datasets==4.9.10 "
            "importlib_resources"
        ) from err
    return tfds


def from_tfds(name, *, data_dir=None, manual_dir=None, download=False, image_key="image", label_key="label"):
    """A TensorFlow Datasets dataset, e.g. ``from_tfds("imagenet2012", manual_dir=...)``.

    If the dataset is not prepared in ``data_dir`` it is built from the
    archives in ``manual_dir`` (offline; imagenet2012 needs
    ``ILSVRC2012_img_train.tar`` and ``ILSVRC2012_img_val.tar`` there), or
    downloaded if ``download=True``; otherwise a :class:`DatasetError` says so.
    Images are read encoded (``SkipDecoding``) and decoded by the pipeline.
    """
    tfds = _import_tfds()
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as err:
        raise DatasetError(
            f"unknown TFDS dataset {name!r} (and none prepared under data_dir={data_dir!r}): "
            f"{str(err).splitlines()[0]}\n{_accepted_forms_text()}"
        ) from err
    if not builder.is_prepared():
        if manual_dir is None and not download:
            raise DatasetError(
                f"TFDS dataset {name!r} is not prepared in data_dir={data_dir or '~/tensorflow_datasets'!s}. Pass "
                "manual_dir= (a folder with the dataset's archives, built offline) or download=True."
            )
        if manual_dir is not None and not os.path.isdir(manual_dir):
            raise DatasetError(f"manual_dir not found: {manual_dir}")
        config = tfds.download.DownloadConfig(manual_dir=manual_dir)
        builder.download_and_prepare(download_config=config)
    features = builder.info.features
    if image_key not in features or label_key not in features:
        raise DatasetError(
            f"TFDS dataset {name!r} has features {list(features.keys())}; need an image feature "
            f"{image_key!r} and a class label {label_key!r}"
        )
    label_feature = features[label_key]
    if not isinstance(label_feature, tfds.features.ClassLabel):
        raise DatasetError(
            f"TFDS dataset {name!r}: feature {label_key!r} is a {type(label_feature).__name__}, not a "
            "ClassLabel, so its classes are unknown; pass label_key= naming a ClassLabel feature."
        )
    sizes = {split: info.num_examples for split, info in builder.info.splits.items()}
    ordered = [s for s in _SPLIT_DIR_NAMES if s in sizes] + [s for s in sizes if s not in _SPLIT_DIR_NAMES]
    sizes = {s: sizes[s] for s in ordered}
    if not sizes or all(v == 0 for v in sizes.values()):
        raise DatasetError(f"TFDS dataset {name!r} has no examples in data_dir={data_dir!r}")
    class_names = tuple(label_feature.names)
    if len(class_names) < 2:
        raise DatasetError(f"TFDS dataset {name!r} has {len(class_names)} class(es); at least 2 are needed")
    return _TFDSSource(f"tfds:{name}", class_names, builder, sizes, image_key, label_key)


# ---------------------------------------------------------------------------
# Held-out evaluation split
# ---------------------------------------------------------------------------


def _held_out_count(fraction, count):
    """How many of a class's ``count`` examples :func:`hold_out` moves.

    ``fraction * count`` rounded half up, at least 1 and at most ``count - 1``
    when the class has 2 or more (so every class keeps a training example).
    """
    if count < 2:
        return 0
    rounded = math.floor(fraction * count + 0.5 + 1e-9)  # 0.29 * 50 is 14.499999999999998 in floats
    return min(max(rounded, 1), count - 1)


def _content_keys(part, kind):
    """A key per example that does not depend on where it is stored: its file name, else a hash of its bytes."""
    if part.names is not None:
        return [str(name) for name in part.names]
    if kind == "pixels":
        return [hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest() for image in part.data]
    return [hashlib.sha256(bytes(item)).hexdigest() for item in part.data]


def hold_out(source, fraction, seed):
    """Split a stratified, seeded part of ``source``'s ``train`` split off as ``"validation"``.

    Each class gives ``fraction`` of its training examples (rounded half up;
    at least 1 and at most all but 1 when the class has 2 or more; a class
    with a single example stays in ``train``). Which ones depends only on
    ``seed``, the class and the examples' names (their content when a
    source has no names), never on the order the file system or the npz
    lists them in: each class's examples are sorted by that key and a
    permutation seeded by ``(seed, class)`` picks from them. Both splits keep
    the source's order. Other splits of ``source`` are kept as they are.

    Args:
        source: an :class:`ImageSource` with a ``train`` split (npz, folder,
            arrays or encoded images; not TFDS).
        fraction: the fraction to hold out, in ``(0, 1)``.
        seed: a non-negative integer.

    Returns:
        A new :class:`ImageSource` with the same name, kind, class names and
        ``skipped``, whose ``"eval"`` split is the held-out ``"validation"``.

    Raises:
        DatasetError: (one line) a TFDS source, a source that already has a
            ``validation`` split, ``fraction`` outside ``(0, 1)``, a bad
            ``seed``, or no class with 2 or more training examples.
    """
    if source.kind == "tfds":
        raise DatasetError(
            f"cannot hold out part of TFDS dataset {source.name!r}: use the dataset's own split for evaluation."
        )
    if (
        isinstance(fraction, bool)
        or not isinstance(fraction, numbers.Real)
        or not math.isfinite(fraction)
        or not 0 < fraction < 1
    ):
        raise DatasetError(f"the validation fraction must be a number in (0, 1), got {fraction!r}.")
    seed = check_integer(seed, "the hold-out seed", minimum=0, error=DatasetError)
    if HOLD_OUT_SPLIT in source.split_names:
        raise DatasetError(f"dataset {source.name!r} already has a {HOLD_OUT_SPLIT!r} split; nothing to hold out.")
    train_name = source.resolve_split("train")
    train = source._splits[train_name]
    labels = np.asarray(train.labels, np.int64)
    keys = _content_keys(train, source.kind)
    held = np.zeros(len(labels), dtype=bool)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        count = _held_out_count(float(fraction), len(members))
        if count == 0:
            continue
        ordered = sorted(members, key=lambda i: (keys[i], i))
        rng = np.random.default_rng([seed, int(label)])
        chosen = [ordered[j] for j in rng.permutation(len(ordered))[:count]]
        held[chosen] = True
    if not held.any():
        raise DatasetError(
            f"dataset {source.name!r}: no class has 2 or more training examples, so none can be held out."
        )

    def part(mask):
        names = None if train.names is None else np.asarray(train.names)[mask]
        return _Split(np.asarray(train.data)[mask], labels[mask], names)

    splits = {train_name: part(~held), HOLD_OUT_SPLIT: part(held)}
    splits.update((name, split) for name, split in source._splits.items() if name != train_name)
    return ImageSource(source.name, source.class_names, splits, source.kind, skipped=source.skipped)


# ---------------------------------------------------------------------------
# Dispatcher
# ---------------------------------------------------------------------------


def load_source(spec=None, *, data_dir=None, manual_dir=None, download=False, verify=True, skip_corrupt=False):
    """Open a data source from a name, path or object (see the module docstring).

    Args:
        spec: ``None``/``"cifar10_sample"``, an npz path, a folder path,
            ``"npz:PATH"``, ``"folder:PATH"``, ``"tfds:NAME[:VERSION]"`` or an
            :class:`ImageSource`.
        data_dir, manual_dir, download: for TFDS sources.
        verify: decode every image of an npz/folder source once now.
        skip_corrupt: leave out corrupt images (counted in ``source.skipped``)
            instead of raising.

    Raises:
        DatasetError: unknown name, missing path, no images, fewer than 2
            classes, corrupt images (unless skipped), bad npz layout.
    """
    if isinstance(spec, ImageSource):
        return spec
    if spec is None or spec == BUNDLED_SAMPLE:
        return bundled_cifar10_sample()
    if isinstance(spec, os.PathLike):
        spec = os.fspath(spec)
    if not isinstance(spec, str) or not spec.strip():
        raise DatasetError(f"unknown dataset {spec!r}.\n{_accepted_forms_text()}")
    options = dict(verify=verify, skip_corrupt=skip_corrupt)
    if spec.startswith("tfds:"):
        name = spec[len("tfds:") :]
        if not name:
            raise DatasetError(f"'tfds:' needs a dataset name.\n{_accepted_forms_text()}")
        return from_tfds(name, data_dir=data_dir, manual_dir=manual_dir, download=download)
    if spec.startswith("npz:"):
        return from_npz(spec[len("npz:") :], **options)
    if spec.startswith("folder:"):
        return from_folder(spec[len("folder:") :], **options)
    path = pathlib.Path(spec).expanduser()
    if path.is_file():
        if path.suffix.lower() == ".npz":
            return from_npz(path, **options)
        raise DatasetError(f"{path} is a file but not an .npz.\n{_accepted_forms_text()}")
    if path.is_dir():
        entries = [p.name for p in path.iterdir()]
        if any(_NPZ_SPLIT_FILE.match(e) for e in entries) and not _class_dirs(path):
            return from_npz(path, **options)
        return from_folder(path, **options)
    if os.sep in spec or "/" in spec or spec.lower().endswith(".npz") or spec.startswith((".", "~")):
        raise DatasetError(f"data path not found: {spec}")
    raise DatasetError(f"unknown dataset {spec!r}.\n{_accepted_forms_text()}")
