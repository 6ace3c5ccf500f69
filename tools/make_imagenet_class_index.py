"""Build ``nfnet_keras/data/imagenet_class_index.json`` from timm's synset lists.

The output has the same layout as the file ``keras.applications`` downloads:
``{"0": ["n01440764", "tench"], "1": ["n01443537", "goldfish"], ...}`` with one
entry per ImageNet-1k class index. A class name is the first WordNet lemma of
the synset with spaces replaced by underscores (``great_white_shark``).

Inputs (both ship in the timm wheel, Apache-2.0, under ``timm/data/_info/``):

* ``imagenet_synsets.txt``: the 1000 WordNet ids in class-index order.
* ``imagenet_synset_to_lemma.txt``: ``wnid<TAB>lemma, lemma2, ...`` lines.

Usage::

    python tools/make_imagenet_class_index.py \\
        path/to/imagenet_synsets.txt path/to/imagenet_synset_to_lemma.txt \\
        [-o nfnet_keras/data/imagenet_class_index.json]
"""

import argparse
import json
import pathlib
import re
import sys

NUM_CLASSES = 1000
_WNID = re.compile(r"^n\d{8}$")
_DEFAULT_OUTPUT = (
    pathlib.Path(__file__).resolve().parent.parent
    / "nfnet_keras"
    / "data"
    / "imagenet_class_index.json"
)


def read_synsets(path):
    """Return the WordNet ids listed one per line in ``path``, in file order."""
    lines = pathlib.Path(path).read_text(encoding="utf-8").splitlines()
    wnids = [line.strip() for line in lines if line.strip()]
    bad = [w for w in wnids if not _WNID.match(w)]
    if bad:
        raise ValueError(f"{path}: not WordNet ids: {bad[:5]}")
    if len(wnids) != NUM_CLASSES or len(set(wnids)) != NUM_CLASSES:
        raise ValueError(
            f"{path}: expected {NUM_CLASSES} unique wnids, got {len(wnids)} "
            f"({len(set(wnids))} unique)"
        )
    return wnids


def read_lemmas(path):
    """Return ``{wnid: first_lemma}`` from a ``wnid<TAB>lemma, ...`` file."""
    lemmas = {}
    text = pathlib.Path(path).read_text(encoding="utf-8")
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        wnid, sep, names = line.partition("\t")
        if not sep or not names.strip():
            raise ValueError(f"{path}:{lineno}: expected 'wnid<TAB>lemmas'")
        lemmas[wnid.strip()] = names.split(",")[0].strip()
    return lemmas


def build_class_index(synsets_path, lemmas_path):
    """Return the Keras-style ``{"i": [wnid, name]}`` dict for 1000 classes."""
    wnids = read_synsets(synsets_path)
    lemmas = read_lemmas(lemmas_path)
    missing = [w for w in wnids if w not in lemmas]
    if missing:
        raise ValueError(f"{lemmas_path}: no lemma for {missing[:5]}")
    return {
        str(i): [wnid, lemmas[wnid].replace(" ", "_")]
        for i, wnid in enumerate(wnids)
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("synsets", help="imagenet_synsets.txt")
    parser.add_argument("synset_to_lemma", help="imagenet_synset_to_lemma.txt")
    parser.add_argument(
        "-o",
        "--output",
        default=str(_DEFAULT_OUTPUT),
        help="output JSON path (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    index = build_class_index(args.synsets, args.synset_to_lemma)
    output = pathlib.Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(index) + "\n", encoding="ascii")
    print(f"wrote {len(index)} classes to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
