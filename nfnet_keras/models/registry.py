"""One registry of every model by name: `create_model(name, ...)` and `model_names()`.

Names are lower case, as in timm (`nfnet_f0`, `nfnet_f0_plus`, `nfnet_micro`);
the variant spellings `F0`, `f0`, `F0+`, `F0plus`, `nano`, `micro` are accepted
too. `train.py --variant`, `export.py --variant` and the predict command all
resolve names here.
"""

import dataclasses

from nfnet_keras.models import nfnet, variants

__all__ = ["ModelSpec", "create_model", "get_spec", "model_names"]


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """What the registry knows about one model name.

    Attributes:
        name: the registered name (`nfnet_f0`).
        family: the architecture family (`nfnet`).
        variant: the family's own name for the configuration (`F0`).
        config: the configuration table entry: architecture keys plus
            `train_imsize`, `test_imsize`, `eval_padding` and `randaugment`.
        pretrained: whether `weights="imagenet"` is available.
    """

    name: str
    family: str
    variant: str
    config: dict
    pretrained: bool

    def build(self, **kwargs):
        """Builds the model; `kwargs` as for `create_model`."""
        return nfnet.NFNet(self.variant, **kwargs)


def _nfnet_specs():
    for variant in list(variants.VARIANTS):
        name = "nfnet_" + variant.lower().replace("+", "_plus")
        yield ModelSpec(
            name=name,
            family="nfnet",
            variant=variant,
            config=variants.get_config(variant),
            pretrained=variant in variants.PRETRAINED_VARIANTS,
        )


_SPECS = {spec.name: spec for spec in _nfnet_specs()}


def _canonical(name):
    if not isinstance(name, str):
        raise TypeError(f"a model name must be a string, got {type(name).__name__}")
    key = name.strip().lower()
    if key in _SPECS:
        return key
    variant = variants.canonical_name(name)  # F0, f0, F0+, F0plus, nano, micro
    if variant in variants.VARIANTS:
        return "nfnet_" + variant.lower().replace("+", "_plus")
    raise ValueError(f"Unknown model {name!r}. Choose one of: {', '.join(model_names())}.")


def get_spec(name):
    """The `ModelSpec` of a registered name or variant spelling.

    Raises:
        ValueError: for an unknown name (the message lists the known ones).
    """
    return _SPECS[_canonical(name)]


def model_names(pretrained_only=False):
    """The registered names, in table order."""
    return [name for name, spec in _SPECS.items() if spec.pretrained or not pretrained_only]


def create_model(
    name,
    weights=None,
    include_top=True,
    input_shape=None,
    pooling=None,
    classes=1000,
    classifier_activation="softmax",
    **overrides,
):
    """Builds any registered model by name, in the `keras.applications` style.

    Args:
        name: a registered name (`model_names()`) or a variant spelling.
        weights: `None` (random initialisation), `"imagenet"` or the path of a
            weights file (DeepMind checkpoint, timm `.safetensors`, Keras
            `.weights.h5`, converted `.npz`).
        include_top, input_shape, pooling, classes, classifier_activation: as
            in `keras.applications`.
        **overrides: the family's other arguments (`input_tensor`, `name`,
            `drop_rate`, `stochdepth_rate`, `seed`, `remat`, architecture keys).

    Returns:
        An `NFModel` carrying its evaluation preprocessing and class names.
    """
    return get_spec(name).build(
        weights=weights,
        include_top=include_top,
        input_shape=input_shape,
        pooling=pooling,
        classes=classes,
        classifier_activation=classifier_activation,
        **overrides,
    )
