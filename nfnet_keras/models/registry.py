"""One registry of every model by name: `create_model(name, ...)` and `model_names()`.

Names are lower case, as in timm: the NFNet-F family (`nfnet_f0`,
`nfnet_f0_plus`, `nfnet_micro`; the variant spellings `F0`, `f0`, `F0+`,
`F0plus`, `nano`, `micro` are accepted too), NF-RegNets (`nf_regnet_b0` ...
`nf_regnet_b8`) and NF-ResNets (`nf_resnet50` ... `nf_resnet600`).
timm's own NFNets are registered under timm's names with a `timm/` prefix
(the light `timm/eca_nfnet_l0` ... `timm/eca_nfnet_l3`, `timm/nfnet_l0`; the
NF-RegNets `timm/nf_regnet_b0` ... `b5`; the NF-ResNets `timm/nf_resnet26`,
`timm/nf_seresnet50`, `timm/nf_ecaresnet101`, ...), and so are
timm's ports of DeepMind's NFNet-F (`timm/dm_nfnet_f0` ... `timm/dm_nfnet_f6`:
our NFNet-F with timm's evaluation settings and weights); their
`weights="imagenet"` comes from the Hugging Face Hub.
`train.py --variant`, `export.py --variant` and the predict command all
resolve names here.
"""

import dataclasses

from nfnet_keras.models import nf_regnet, nf_resnet, nfnet, variants
from nfnet_keras.models import timm_nfnet
from nfnet_keras.weights import timm as timm_weights

__all__ = ["ModelSpec", "create_model", "get_spec", "model_names"]


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """What the registry knows about one model name.

    Attributes:
        name: the registered name (`nfnet_f0`, `nf_regnet_b0`, `nf_resnet50`).
        family: the architecture family (`nfnet`, `nf_regnet`, `nf_resnet`, `timm_nfnet`,
            `timm_dm_nfnet`).
        variant: the family's own name for the configuration (`F0`, `B0`, `50`).
        config: the configuration table entry: architecture keys plus
            `train_imsize`, `test_imsize`, `eval_padding`, `eval_resize` and `randaugment`.
        pretrained: whether `weights="imagenet"` is available.
    """

    name: str
    family: str
    variant: str
    config: dict
    pretrained: bool

    def build(self, **kwargs):
        """Builds the model; `kwargs` as for `create_model`."""
        return _BUILDERS[self.family](self.variant, **kwargs)


# family: the function that builds a variant of it.
_BUILDERS = {"nfnet": nfnet.NFNet, "nf_regnet": nf_regnet.NFRegNet, "nf_resnet": nf_resnet.NFResNet}
_BUILDERS[timm_nfnet.FAMILY] = timm_nfnet.TimmNFNet
_BUILDERS[timm_nfnet.DM_FAMILY] = timm_nfnet.DMNFNet


def _nfnet_name(variant):
    return "nfnet_" + variant.lower().replace("+", "_plus")


def _specs():
    for variant in variants.VARIANTS:
        config = variants.get_config(variant)
        yield ModelSpec(_nfnet_name(variant), "nfnet", variant, config, variant in variants.PRETRAINED_VARIANTS)
    # DeepMind published no NF-RegNet or NF-ResNet weights.
    for family in (nf_regnet, nf_resnet):
        for variant in family.VARIANTS:
            yield ModelSpec(family.default_name(variant), family.FAMILY, variant, family.get_config(variant), False)
    # timm's models: "imagenet" is timm's model.safetensors on the Hugging Face Hub, where published.
    for variant in timm_nfnet.VARIANTS:
        config = timm_nfnet.get_config(variant)
        pretrained = variant in timm_weights.IMAGENET_WEIGHTS
        yield ModelSpec(timm_nfnet.registry_name(variant), timm_nfnet.FAMILY, variant, config, pretrained)
    for variant in timm_nfnet.DM_VARIANTS:
        config = timm_nfnet.dm_config(variant)
        yield ModelSpec(timm_nfnet.registry_name(variant), timm_nfnet.DM_FAMILY, variant, config, True)


_SPECS = {spec.name: spec for spec in _specs()}


def _canonical(name):
    if not isinstance(name, str):
        raise TypeError(f"a model name must be a string, got {type(name).__name__}")
    key = name.strip().lower()
    if key in _SPECS:
        return key
    variant = variants.canonical_name(name)  # F0, f0, F0+, F0plus, nano, micro
    if variant in variants.VARIANTS:
        return _nfnet_name(variant)
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
        weights: `None` (random initialisation), `"imagenet"` (for the names
            of `model_names(pretrained_only=True)`) or the path of a weights
            file (DeepMind-layout checkpoint, timm `.safetensors`, Keras
            `.weights.h5`, converted `.npz`).
        include_top, input_shape, pooling, classes, classifier_activation: as
            in `keras.applications`.
        **overrides: the family's other arguments (`input_tensor`, `name`,
            `drop_rate`, `stochdepth_rate`, `seed`, `remat`, configuration
            keys such as NF-ResNet's `use_se`).

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
