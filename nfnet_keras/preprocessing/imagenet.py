"""Offline ImageNet-1k class names and ``decode_predictions``.

The class index ships with the package (``nfnet_keras/preprocessing/imagenet_class_index.json``,
same layout as the file ``keras.applications`` downloads: ``{"0": ["n01440764",
"tench"], ...}``), so nothing is downloaded. The names are the first WordNet
lemma of each synset with spaces replaced by underscores; see
``nfnet_keras/preprocessing/NOTICE`` for their source and ``tools/make_imagenet_class_index.py``
for how the file is built. Names are not unique: ``crane`` (134, 517) and
``maillot`` (638, 639) each name two classes, as in Keras; the wnids are unique.
"""

import functools
import json
from importlib import resources

import numpy as np
from keras import ops

__all__ = ["NUM_CLASSES", "decode_predictions", "imagenet_class_names"]

#: Number of ImageNet-1k classes.
NUM_CLASSES = 1000

_CLASS_INDEX_FILE = "imagenet_class_index.json"


@functools.lru_cache(maxsize=None)
def _class_index():
    """Return the class index as a tuple of ``(wnid, name)``, read once."""
    data = resources.files("nfnet_keras.preprocessing").joinpath(_CLASS_INDEX_FILE)
    raw = json.loads(data.read_text(encoding="utf-8"))
    if sorted(int(k) for k in raw) != list(range(NUM_CLASSES)):
        raise RuntimeError(
            f"{_CLASS_INDEX_FILE} must have keys '0'..'{NUM_CLASSES - 1}'"
        )
    return tuple((raw[str(i)][0], raw[str(i)][1]) for i in range(NUM_CLASSES))


def imagenet_class_names():
    """Return the 1000 ImageNet class names in class-index order.

    Returns:
        A new ``list`` of 1000 ``str`` (``names[0] == "tench"``).
    """
    return [name for _, name in _class_index()]


def decode_predictions(preds, top=5):
    """Decode ImageNet predictions into ``(wnid, name, score)`` tuples.

    Same behaviour as ``keras.applications.imagenet_utils.decode_predictions``
    but with the class index shipped in this package (no download).
    Probabilities and logits both work: only the ordering of the scores
    matters.

    Args:
        preds: a batch of scores of shape ``(samples, 1000)``: a numpy array,
            a backend tensor or a nested list.
        top: how many top guesses to return per sample, a positive int.

    Returns:
        One list per sample of ``top`` tuples ``(wnid, class_name, score)``,
        highest score first (ties: lower class index first). ``score`` is a
        numpy scalar of the input's dtype.

    Raises:
        ValueError: if ``preds`` is not 2D with 1000 columns, or ``top`` is not
            a positive int.
    """
    if not hasattr(preds, "shape"):
        preds = np.asarray(preds)
    if len(preds.shape) != 2 or preds.shape[1] != NUM_CLASSES:
        raise ValueError(
            "`decode_predictions` expects "
            "a batch of predictions "
            "(i.e. a 2D array of shape (samples, 1000)). "
            f"Received array with shape: {tuple(preds.shape)}"
        )
    if isinstance(top, bool) or not isinstance(top, (int, np.integer)) or top < 1:
        raise ValueError(f"`top` must be a positive int. Received: top={top!r}")
    index = _class_index()
    preds = ops.convert_to_numpy(preds)
    results = []
    for pred in preds:
        top_indices = np.argsort(-pred, kind="stable")[:top]
        results.append([index[i] + (pred[i],) for i in top_indices])
    return results
