"""timm's light NFNets (`eca_nfnet_l0` ... `l3`, `nfnet_l0`) as `NFModel`s, exact to timm in evaluation mode.

Ross Wightman's NFNet variants in timm (`timm/models/nfnet.py`, `NormFreeNet`
with `_nfnet_cfg`) keep NFNet-F0's stem and stages but are "light": a
bottleneck of 1/4 in groups of 64, SiLU, a final conv of 1.5x (l0) or 2x the
last width, and ECA (or, for `nfnet_l0`, a rounded SE) after conv3. They also
compute differently from DeepMind's NFNets (`nfnet.py`):

- `ScaledStdConv2D`: eps inside the square root, the activation's gamma
  folded into every conv (the stem's first conv included), symmetric padding;
- plain activations, also the final one before pooling;
- no skip gain: the last conv of each block starts with gain 0;
- `make_divisible` channel rounding.

Layers are named after timm's modules: `stem_conv1` ... `stem_conv4`,
`stages_{s}_{b}` for `stages.s.b` (0-based), `final_conv`, `predictions` for
`head.fc`; the output of stage k (1-based) is also the layer `stage{k}`.
`nfnet_keras.weights.timm` loads timm's state dicts (`model.safetensors`)
by these names; `weights="imagenet"` fetches timm's published file from the
Hugging Face Hub (none exists for `eca_nfnet_l3`).

timm's `dm_nfnet_f0` ... `f6` are its ports of DeepMind's NFNet-F with
DeepMind's weights. Here they are our NFNet-F models (`nfnet.py`, DeepMind's
numerics: tanh GELU, eps as a floor under the variance) under timm's names
(`DMNFNet`, registry names `timm/dm_nfnet_f0` ...), evaluated as timm
evaluates them (test size, `crop_pct`), loading timm's `model.safetensors`.
"""

import dataclasses
import functools
import math

import keras

from nfnet_keras.models import applications, nfnet, variants
from nfnet_keras.models.layers.activations import GAMMAS, ScaledActivation
from nfnet_keras.models.layers.std_conv_timm import ScaledStdConv2D
from nfnet_keras.models.layers.timm_block import NormFreeBlock, make_divisible
from nfnet_keras.weights import timm as timm_weights

FAMILY = "timm_nfnet"
#: Registry names are `timm/<timm's model name>`.
REGISTRY_PREFIX = "timm/"

#: What every variant shares (`_nfnet_cfg` with the light models' arguments and `NfCfg` defaults).
SHARED_CONFIG = {
    "channels": (256, 512, 1536, 1536),
    "stem_chs": 128,
    "group_size": 64,
    "bottle_ratio": 0.25,
    "ch_div": 8,
    "width_factor": 1.0,
    "alpha": 0.2,
    "attn_gain": 2.0,
    "se_ratio": 0.25,
    "se_divisor": 8,
    "std_conv_eps": 1e-5,
    "activation": "silu",
    "drop_rate": 0.0,
    # timm's test_crop_pct 1.0: the crop is the whole resized image. timm resizes the shorter
    # side (aspect kept); the package's one eval transform squash-resizes (same for square images).
    "eval_padding": 0,
    # timm trained these with its own RandAugment, not DeepMind's that data/augment.py implements.
    "randaugment": None,
}

# name: depths, final conv multiplier, attention, timm's input_size and test_input_size.
_TABLE = {
    "eca_nfnet_l0": ((1, 2, 6, 3), 1.5, "eca", 224, 288),
    "eca_nfnet_l1": ((2, 4, 12, 6), 2.0, "eca", 256, 320),
    "eca_nfnet_l2": ((3, 6, 18, 9), 2.0, "eca", 320, 384),
    "eca_nfnet_l3": ((4, 8, 24, 12), 2.0, "eca", 352, 448),
    "nfnet_l0": ((1, 2, 6, 3), 1.5, "se", 224, 288),
}
VARIANTS = {
    variant: dict(
        SHARED_CONFIG, depths=depths, feat_mult=feat_mult, attention=attention, train_imsize=train, test_imsize=test
    )
    for variant, (depths, feat_mult, attention, train, test) in _TABLE.items()
}
#: Keys a caller may override when building a model.
CONFIG_KEYS = tuple(VARIANTS["eca_nfnet_l0"])

#: The registry family of timm's `dm_nfnet_*` (built by `DMNFNet`).
DM_FAMILY = "timm_dm_nfnet"
# timm name: our NFNet-F variant, timm's crop_pct (default_cfgs; test sizes equal our variants').
_DM_TABLE = {
    "dm_nfnet_f0": ("F0", 0.9),
    "dm_nfnet_f1": ("F1", 0.91),
    "dm_nfnet_f2": ("F2", 0.92),
    "dm_nfnet_f3": ("F3", 0.94),
    "dm_nfnet_f4": ("F4", 0.951),
    "dm_nfnet_f5": ("F5", 0.954),
    "dm_nfnet_f6": ("F6", 0.956),
}
#: `{timm name: our NFNet-F variant}`.
DM_VARIANTS = {name: variant for name, (variant, _) in _DM_TABLE.items()}

__all__ = ["TimmNFNet", "ECANFNetL0", "ECANFNetL1", "ECANFNetL2", "ECANFNetL3", "NFNetL0"]

def dm_config(variant, **overrides):
    """The NFNet-F configuration of timm's `dm_nfnet_fX`, evaluated as timm evaluates it.

    timm squash-resizes to `floor(test size / crop_pct)` and centre-crops the
    test size (`transforms_imagenet_eval`, crop_mode "squash"): crop padding
    28 for F0 at 256 px, where DeepMind pads by 32. `overrides` as for
    `nfnet_keras.models.variants.get_config`.

    Raises:
        ValueError: for an unknown variant or key.
    """
    name = canonical_name(variant)
    if name not in _DM_TABLE:
        raise ValueError(f"Unknown timm dm_nfnet variant {variant!r}. Choose one of {', '.join(_DM_TABLE)}.")
    nfnet_variant, crop_pct = _DM_TABLE[name]
    test_imsize = variants.VARIANTS[nfnet_variant]["test_imsize"]
    padding = math.floor(test_imsize / crop_pct) - test_imsize
    return variants.get_config(nfnet_variant, **{"eval_padding": padding, **overrides})


def canonical_name(variant):
    """`"timm/ECA_NFNet_L0"` or `"eca_nfnet_l0"` -> `"eca_nfnet_l0"`."""
    return applications.canonical_variant(variant, prefix=REGISTRY_PREFIX)


get_config = applications.config_function("timm NFNet", VARIANTS, canonical_name, ("channels", "depths"))


def registry_name(variant):
    """The registry name of a variant: `"eca_nfnet_l0"` -> `"timm/eca_nfnet_l0"`."""
    return REGISTRY_PREFIX + canonical_name(variant)


def build(variant, arguments, stochdepth_rate=0.0, seed=None, remat=False, **config_overrides):
    """Builds one of timm's light NFNets.

    Args:
        variant: `"eca_nfnet_l0"` ... `"eca_nfnet_l3"` or `"nfnet_l0"` (a
            `timm/` prefix is accepted).
        include_top, weights, input_tensor, input_shape, pooling, classes,
        classifier_activation, name: as in `keras.applications` (see
            `ECANFNetL0`). `weights`: None, `"imagenet"` (timm's
            `model.safetensors` from the Hugging Face Hub; not for
            `eca_nfnet_l3`) or a path (timm's `model.safetensors`, a Keras
            weights file).
        stochdepth_rate: the last block's drop rate; block i of N gets
            `rate * i / (N - 1)` (timm's `drop_path_rate` schedule; the drop
            itself is DeepMind's, without timm's 1/keep rescale). timm's default is 0.
        seed, remat: as for `nfnet_keras.NFNet`.
        **config_overrides: keys of `CONFIG_KEYS` (`drop_rate`, `depths`, ...).

    Returns:
        An `NFModel` carrying its evaluation preprocessing (timm's test size,
        crop padding 0, bicubic, ImageNet mean/std) and class names.
    """
    config = get_config(variant, **config_overrides)
    variant_name = canonical_name(variant)
    no_imagenet = None
    if variant_name not in timm_weights.IMAGENET_WEIGHTS:
        no_imagenet = (
            f"weights='imagenet' is not available for timm/{variant_name}: timm publishes no pretrained weights "
            "for it. Pass the path of a weights file instead."
        )
    features = functools.partial(_features, config=config, stochdepth_rate=stochdepth_rate, seed=seed, remat=remat)
    name = variant_name
    load = functools.partial(timm_weights.load, model_name=variant_name)
    return applications.build_model(
        features, config, arguments, name, seed=seed, head_stddev=0.01, no_imagenet=no_imagenet, load_weights=load
    )


def build_dm(variant, arguments, **kwargs):
    """Builds timm's `dm_nfnet_fX`: our NFNet-FX with timm's evaluation settings and timm's weights.

    Args:
        variant: `"dm_nfnet_f0"` ... `"dm_nfnet_f6"` (a `timm/` prefix is accepted).
        include_top, input_tensor, input_shape, pooling, classes,
        classifier_activation, name: as in `keras.applications`.
        weights: `None`, `"imagenet"` (timm's `dm_nfnet_fX.dm_in1k`
            `model.safetensors` from the Hugging Face Hub) or the path of a
            weights file (as for `nfnet_keras.NFNet`).
        **kwargs: passed to `nfnet_keras.NFNet` (`stochdepth_rate`, `seed`,
            `remat`, configuration keys).

    Returns:
        An `NFModel` whose preprocessing is timm's: the test size, crop
        padding `floor(size / crop_pct) - size`, bicubic, ImageNet mean/std.
    """
    variant_name = canonical_name(variant)
    config = dm_config(variant_name, **{k: v for k, v in kwargs.items() if k in variants.CONFIG_KEYS})
    arguments.check(config)  # before anything is downloaded
    kwargs["eval_padding"] = config["eval_padding"]
    # NFNet-FX loads a weights file itself; timm's "imagenet" is loaded here.
    nfnet_arguments = dataclasses.replace(
        arguments,
        weights=None if arguments.weights == "imagenet" else arguments.weights,
        name=arguments.name or variant_name,
    )
    model = nfnet.build(DM_VARIANTS[variant_name], nfnet_arguments, **kwargs)
    if arguments.weights == "imagenet":
        timm_weights.load_imagenet(model, variant_name)
    return model


DMNFNet = applications.family_builder(build_dm, "dm_nfnet_f0", "DMNFNet", build_dm.__doc__)
TimmNFNet = applications.family_builder(build, "eca_nfnet_l0", "TimmNFNet", build.__doc__)


def _features(images, config, stochdepth_rate, seed, remat):
    """The stem, the stages and the final conv and activation (timm's `NormFreeNet.forward_features`)."""
    # timm folds the activation's gamma into every conv (ScaledStdConv2D's `gamma`).
    conv = {"gamma": GAMMAS[config["activation"]], "eps": config["std_conv_eps"]}
    x, channels = _stem(images, config, conv)
    x, channels = _body(x, channels, config, stochdepth_rate, seed, remat)
    num_features = make_divisible(
        config["width_factor"] * int(config["channels"][-1] * config["feat_mult"]), config["ch_div"]
    )
    x = ScaledStdConv2D(num_features, 1, name="final_conv", **conv)(x)
    # Plain: timm's gamma lives in the convs, and no conv follows this one.
    return ScaledActivation(config["activation"], gamma=1.0, name="final_act")(x)


def _stem(x, config, conv):
    """timm's 'deep_quad' stem: 3x3 convs to C/8 (stride 2), C/4, C/2, C (stride 2); act between them."""
    stem_chs = make_divisible(config["stem_chs"] * config["width_factor"], config["ch_div"])
    widths = (stem_chs // 8, stem_chs // 4, stem_chs // 2, stem_chs)
    for i, (channels, stride) in enumerate(zip(widths, (2, 1, 1, 2))):
        x = ScaledStdConv2D(channels, 3, strides=stride, name=f"stem_conv{i + 1}", **conv)(x)
        if i < 3:  # no activation after the last: the first block activates its input.
            x = ScaledActivation(config["activation"], gamma=1.0, name=f"stem_act{i + 2}")(x)
    return x, stem_chs


def _body(x, channels, config, stochdepth_rate, seed, remat):
    """timm's stage loop (the deep_quad stem has stride 4, so stage 0 keeps the resolution)."""
    num_blocks = sum(config["depths"])
    expected_var = 1.0
    index = 0
    for stage, depth in enumerate(config["depths"]):
        out_channels = make_divisible(config["channels"][stage] * config["width_factor"], config["ch_div"])
        for block in range(depth):
            x = NormFreeBlock(
                channels,
                out_channels,
                stride=(1 if stage == 0 else 2) if block == 0 else 1,
                alpha=config["alpha"],
                beta=expected_var**-0.5,
                bottle_ratio=config["bottle_ratio"],
                group_size=config["group_size"],
                ch_div=config["ch_div"],
                attention=config["attention"],
                se_ratio=config["se_ratio"],
                se_divisor=config["se_divisor"],
                attn_gain=config["attn_gain"],
                activation=config["activation"],
                eps=config["std_conv_eps"],
                stochdepth_rate=stochdepth_rate * index / max(num_blocks - 1, 1),
                seed=None if seed is None else seed + index,
                remat=remat,
                name=f"stages_{stage}_{block}",
            )(x)
            if block == 0:
                expected_var = 1.0  # reset after the first block of each stage
            expected_var += config["alpha"] ** 2
            channels = out_channels
            index += 1
        x = keras.layers.Identity(name=f"stage{stage + 1}")(x)
    return x, channels


def _weights_doc(variant):
    if variant in timm_weights.IMAGENET_WEIGHTS:
        published = f"timm's {timm_weights.IMAGENET_WEIGHTS[variant].repo_id}"
    else:
        published = "none is published for this model"
    return f"""`None` (random init), `"imagenet"` (timm's published
            weights, from the Hugging Face cache or downloaded;
            {published}) or the path of a weights file: timm's
            `model.safetensors` for this model, or a Keras `.weights.h5`."""


def _application(variant, function_name):
    return applications.application_function(
        build,
        variant,
        function_name,
        applications.application_doc(
            f"Instantiates timm's `{variant}`.",
            f'`timm.create_model("{variant}")`',
            f"timm's test size ({VARIANTS[variant]['test_imsize']} px)",
            _weights_doc(variant),
            "`nfnet_keras.models.timm_nfnet.TimmNFNet`",
        ),
        default_name=variant,
    )


ECANFNetL0 = _application("eca_nfnet_l0", "ECANFNetL0")
ECANFNetL1 = _application("eca_nfnet_l1", "ECANFNetL1")
ECANFNetL2 = _application("eca_nfnet_l2", "ECANFNetL2")
ECANFNetL3 = _application("eca_nfnet_l3", "ECANFNetL3")
NFNetL0 = _application("nfnet_l0", "NFNetL0")
