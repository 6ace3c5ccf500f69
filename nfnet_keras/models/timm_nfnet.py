"""timm's own NFNets as `NFModel`s, exact to timm in evaluation mode.

timm's `NormFreeNet` (`timm/models/nfnet.py`) builds three kinds of
normalizer-free nets from one configuration (`NfCfg`), all here under
timm's names with a `timm/` prefix:

- the light NFNets (`eca_nfnet_l0` ... `l3`, `nfnet_l0`; `_nfnet_cfg`):
  NFNet-F0's 'deep_quad' stem and stages, a bottleneck of 1/4 in groups of
  64, SiLU, conv2b, a final conv of 1.5x (l0) or 2x the last width, ECA (or,
  for `nfnet_l0`, a rounded SE) after conv3;
- NF-RegNets (`nf_regnet_b0` ... `b5`; `_nfreg_cfg`): a 3x3 stride-2 stem
  conv of `channels[0] * 0.75` (rounded), widths times 0.75, RegNet-style
  blocks (`reg=True`: bottleneck 2.25 times the block's *input* width, 1.0 in
  the very first block, groups of 8, an SE of half the mid width between
  conv2 and conv3), SiLU, a final conv of `0.75 * (1280 * channels[-1] //
  440)` rounded;
- NF-ResNets (`nf_resnet26/50/101`, `nf_seresnet*`, `nf_ecaresnet*`;
  `_nfres_cfg`): a 7x7 stride-2 stem conv of 64 and a 3x3 stride-2 max pool
  (padding 1), bottleneck 1/4 of the output, one group, ReLU, no final conv,
  optionally an SE of 1/16 of the output or ECA after conv3.

Stage 0 keeps the resolution when the stem has stride 4 ('deep_quad',
'7x7_pool') and halves it after the 3x3 stem. They compute differently from
DeepMind's NFNets (`nfnet.py`, `nf_regnet.py`, `nf_resnet.py`):

- `ScaledStdConv2D`: eps inside the square root, the activation's gamma
  folded into every conv (the stem's first conv included), symmetric padding;
- plain activations, also the final one before pooling (after the final
  conv, or after the last stage where there is none);
- no skip gain: the last conv of each block starts with gain 0;
- `make_divisible` channel rounding.

Layers are named after timm's modules: `stem_conv1` ... `stem_conv4` (deep
stem) or `stem_conv` (`stem.conv`) and `stem_pool`, `stages_{s}_{b}` for
`stages.s.b` (0-based), `final_conv`, `predictions` for `head.fc`; the
output of stage k (1-based) is also the layer `stage{k}`.
`nfnet_keras.weights.timm` loads timm's state dicts (`model.safetensors`)
by these names; `weights="imagenet"` fetches timm's published file from the
Hugging Face Hub, where timm publishes one (`eca_nfnet_l0` ... `l2`,
`nfnet_l0`, `nf_regnet_b1`, `nf_resnet50`).

Evaluation settings are timm's `default_cfgs`: the test size (else the
input size), crop padding `floor(size / crop_pct) - size`, the shorter side
resized (timm's crop_mode "center", `eval_resize="shorter_side"`), bicubic.

timm's `dm_nfnet_f0` ... `f6` are its ports of DeepMind's NFNet-F with
DeepMind's weights. Here they are our NFNet-F models (`nfnet.py`, DeepMind's
numerics: tanh GELU, eps as a floor under the variance) under timm's names
(`DMNFNet`, registry names `timm/dm_nfnet_f0` ...), evaluated as timm
evaluates them (test size, `crop_pct`), loading timm's `model.safetensors`.
"""

import dataclasses
import fractions
import functools
import math

import keras

from nfnet_keras.models import applications, nfnet, variants
from nfnet_keras.models.layers.activations import GAMMAS, ScaledActivation
from nfnet_keras.models.layers.std_conv_timm import ScaledStdConv2D
from nfnet_keras.models.layers.timm_block import NormFreeBlock, SymmetricMaxPool2D, make_divisible
from nfnet_keras.weights import timm as timm_weights

FAMILY = "timm_nfnet"
#: Registry names are `timm/<timm's model name>`.
REGISTRY_PREFIX = "timm/"
#: timm's stems (`create_stem`: 'deep_quad' four 3x3 convs, '3x3' one stride-2 conv, '7x7_pool')
#: and their total strides (timm's `stem_stride`).
STEM_STRIDES = {"deep_quad": 4, "3x3": 2, "7x7_pool": 4}

#: What every variant shares: timm's `NfCfg` defaults (alpha, attn_gain, ch_div, std_conv_eps, no
#: skipinit, gamma in the convs) and our table's own keys.
SHARED_CONFIG = {
    "ch_div": 8,
    "alpha": 0.2,
    "attn_gain": 2.0,
    "se_divisor": 8,
    "std_conv_eps": 1e-5,
    "drop_rate": 0.0,
    # timm's default crop_mode "center": the shorter side to floor(size / crop_pct), aspect kept.
    "eval_resize": "shorter_side",
    # timm trained these with its own RandAugment, not DeepMind's that data/augment.py implements.
    "randaugment": None,
}


def _eval_padding(test_imsize, crop_pct):
    """timm's eval crop as our padding: it resizes to `floor(size / crop_pct)` and crops `size`."""
    return math.floor(test_imsize / crop_pct) - test_imsize


# _nfnet_cfg with the light models' arguments. feat_mult: the final conv is int(channels[-1] *
# feat_mult) wide (before width_factor); 0: none.
_LIGHT = {
    "channels": (256, 512, 1536, 1536),
    "stem_type": "deep_quad",
    "stem_chs": 128,
    "group_size": 64,
    "bottle_ratio": 0.25,
    "reg": False,
    "extra_conv": True,
    "width_factor": 1.0,
    "se_ratio": 0.25,
    "activation": "silu",
}
# _nfreg_cfg: stem of channels[0]; final conv 1280 * channels[-1] // 440, exactly (a Fraction).
_REGNET = {
    "stem_type": "3x3",
    "stem_chs": None,
    "group_size": 8,
    "bottle_ratio": 2.25,
    "reg": True,
    "extra_conv": False,
    "width_factor": 0.75,
    "feat_mult": fractions.Fraction(1280, 440),
    "attention": "se",
    "se_ratio": 0.5,
    "activation": "silu",
}
# _nfres_cfg: no final conv.
_RESNET = {
    "channels": (256, 512, 1024, 2048),
    "stem_type": "7x7_pool",
    "stem_chs": 64,
    "group_size": None,
    "bottle_ratio": 0.25,
    "reg": False,
    "extra_conv": False,
    "width_factor": 1.0,
    "feat_mult": 0,
    "se_ratio": 1 / 16,
    "activation": "relu",
}
_RESNET_DEPTHS = {26: (2, 2, 2, 2), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
_RESNET_ATTENTION = {"": None, "se": "se", "eca": "eca"}
# Only nf_resnet50 (the one with weights) has its own sizes; the others keep _dcfg's 224 px, crop_pct .9.
_RESNET_EVAL = {"nf_resnet50": (256, 288, _eval_padding(288, 0.94))}

# name: architecture, then timm's default_cfgs: input_size, test_input_size, the crop padding at the
# test size (test_crop_pct 1.0 for the light nets; crop_pct .9 by default, .94 for nf_resnet50).
_TABLE = {
    "eca_nfnet_l0": (dict(_LIGHT, depths=(1, 2, 6, 3), feat_mult=1.5, attention="eca"), 224, 288, 0),
    "eca_nfnet_l1": (dict(_LIGHT, depths=(2, 4, 12, 6), feat_mult=2.0, attention="eca"), 256, 320, 0),
    "eca_nfnet_l2": (dict(_LIGHT, depths=(3, 6, 18, 9), feat_mult=2.0, attention="eca"), 320, 384, 0),
    "eca_nfnet_l3": (dict(_LIGHT, depths=(4, 8, 24, 12), feat_mult=2.0, attention="eca"), 352, 448, 0),
    "nfnet_l0": (dict(_LIGHT, depths=(1, 2, 6, 3), feat_mult=1.5, attention="se"), 224, 288, 0),
    **{
        f"nf_regnet_b{index}": (dict(_REGNET, depths=depths, channels=channels), train, test, _eval_padding(test, 0.9))
        for index, (depths, channels, train, test) in enumerate(
            [
                ((1, 3, 6, 6), (48, 104, 208, 440), 192, 256),
                ((2, 4, 7, 7), (48, 104, 208, 440), 256, 288),
                ((2, 4, 8, 8), (56, 112, 232, 488), 240, 272),
                ((2, 5, 9, 9), (56, 128, 248, 528), 288, 320),
                ((2, 6, 11, 11), (64, 144, 288, 616), 320, 384),
                ((3, 7, 14, 14), (80, 168, 336, 704), 384, 456),
            ]
        )
    },
    **{
        f"nf_{kind}resnet{depth}": (
            dict(_RESNET, depths=_RESNET_DEPTHS[depth], attention=attention),
            *_RESNET_EVAL.get(f"nf_{kind}resnet{depth}", (224, 224, _eval_padding(224, 0.9))),
        )
        for kind, attention in _RESNET_ATTENTION.items()
        for depth in _RESNET_DEPTHS
    },
}
VARIANTS = {
    variant: dict(SHARED_CONFIG, **architecture, train_imsize=train, test_imsize=test, eval_padding=padding)
    for variant, (architecture, train, test, padding) in _TABLE.items()
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

__all__ = [
    "TimmNFNet",
    "ECANFNetL0",
    "ECANFNetL1",
    "ECANFNetL2",
    "ECANFNetL3",
    "NFNetL0",
    "TimmNFRegNetB1",
    "TimmNFResNet50",
]


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
    padding = _eval_padding(variants.VARIANTS[nfnet_variant]["test_imsize"], crop_pct)
    return variants.get_config(nfnet_variant, **{"eval_padding": padding, **overrides})


def canonical_name(variant):
    """`"timm/ECA_NFNet_L0"` or `"eca_nfnet_l0"` -> `"eca_nfnet_l0"`."""
    return applications.canonical_variant(variant, prefix=REGISTRY_PREFIX)


get_config = applications.config_function("timm NFNet", VARIANTS, canonical_name, ("channels", "depths"))


def registry_name(variant):
    """The registry name of a variant: `"eca_nfnet_l0"` -> `"timm/eca_nfnet_l0"`."""
    return REGISTRY_PREFIX + canonical_name(variant)


def build(variant, arguments, stochdepth_rate=0.0, seed=None, remat=False, **config_overrides):
    """Builds one of timm's own NFNets: light NFNets, NF-RegNets, NF-ResNets.

    Args:
        variant: a key of `VARIANTS`: `"eca_nfnet_l0"` ... `"eca_nfnet_l3"`,
            `"nfnet_l0"`, `"nf_regnet_b0"` ... `"nf_regnet_b5"`,
            `"nf_resnet26"`, `"nf_seresnet50"`, `"nf_ecaresnet101"`, ... (a
            `timm/` prefix is accepted).
        include_top, weights, input_tensor, input_shape, pooling, classes,
        classifier_activation, name: as in `keras.applications` (see
            `ECANFNetL0`). `weights`: None, `"imagenet"` (timm's
            `model.safetensors` from the Hugging Face Hub, for the names of
            `nfnet_keras.weights.timm.IMAGENET_WEIGHTS`) or a path (timm's
            `model.safetensors`, a Keras weights file).
        stochdepth_rate: the last block's drop rate; block i of N gets
            `rate * i / (N - 1)` (timm's `drop_path_rate` schedule), kept
            examples rescaled by `1 / keep` as timm's DropPath does. timm's
            default is 0.
        seed, remat: as for `nfnet_keras.NFNet`.
        **config_overrides: keys of `CONFIG_KEYS` (`drop_rate`, `depths`, ...).

    Returns:
        An `NFModel` carrying its evaluation preprocessing (timm's test size
        and crop, bicubic, ImageNet mean/std) and class names.
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
    load = functools.partial(timm_weights.load, model_name=variant_name)
    return applications.build_model(
        features, config, arguments, variant_name, seed=seed, head_stddev=0.01, no_imagenet=no_imagenet,
        load_weights=load,
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
    """The stem, the stages, the final conv if any and the final activation (timm's `forward_features`)."""
    # timm folds the activation's gamma into every conv (ScaledStdConv2D's `gamma`).
    conv = {"gamma": GAMMAS[config["activation"]], "eps": config["std_conv_eps"]}
    x, channels = _stem(images, config, conv)
    x = _body(x, channels, config, stochdepth_rate, seed, remat)
    num_features = int(config["channels"][-1] * config["feat_mult"])
    if num_features:
        width = make_divisible(config["width_factor"] * num_features, config["ch_div"])
        x = ScaledStdConv2D(width, 1, name="final_conv", **conv)(x)
    # Plain: timm's gamma lives in the convs, and no conv follows this one.
    return ScaledActivation(config["activation"], gamma=1.0, name="final_act")(x)


def _stem(x, config, conv):
    """timm's `create_stem` (no activation after its last conv: the first block activates its input).

    'deep_quad': 3x3 convs to C/8 (stride 2), C/4, C/2, C (stride 2), act
    between them; '3x3': one 3x3 stride-2 conv; '7x7_pool': a 7x7 stride-2
    conv and a 3x3 stride-2 max pool with padding 1. C is `stem_chs` (or
    `channels[0]`) times `width_factor`, rounded.
    """
    stem_type = config["stem_type"]
    if stem_type not in STEM_STRIDES:
        raise ValueError(f"stem_type must be one of {tuple(STEM_STRIDES)}, got {stem_type!r}")
    stem_chs = make_divisible((config["stem_chs"] or config["channels"][0]) * config["width_factor"], config["ch_div"])
    if stem_type == "deep_quad":
        widths = (stem_chs // 8, stem_chs // 4, stem_chs // 2, stem_chs)
        for i, (channels, stride) in enumerate(zip(widths, (2, 1, 1, 2))):
            x = ScaledStdConv2D(channels, 3, strides=stride, name=f"stem_conv{i + 1}", **conv)(x)
            if i < 3:
                x = ScaledActivation(config["activation"], gamma=1.0, name=f"stem_act{i + 2}")(x)
        return x, stem_chs
    x = ScaledStdConv2D(stem_chs, 3 if stem_type == "3x3" else 7, strides=2, name="stem_conv", **conv)(x)
    if stem_type == "7x7_pool":
        x = SymmetricMaxPool2D(3, strides=2, padding=1, name="stem_pool")(x)
    return x, stem_chs


def _body(x, channels, config, stochdepth_rate, seed, remat):
    """timm's stage loop: stage 0 keeps the resolution after a stride-4 stem; the others halve it."""
    num_blocks = sum(config["depths"])
    stem_stride = STEM_STRIDES[config["stem_type"]]
    expected_var = 1.0
    index = 0
    for stage, depth in enumerate(config["depths"]):
        out_channels = make_divisible(config["channels"][stage] * config["width_factor"], config["ch_div"])
        stage_stride = 1 if stage == 0 and stem_stride > 2 else 2
        for block in range(depth):
            x = NormFreeBlock(
                channels,
                out_channels,
                stride=stage_stride if block == 0 else 1,
                alpha=config["alpha"],
                beta=expected_var**-0.5,
                # timm's RegNets expand the very first block's input 1:1.
                bottle_ratio=1.0 if config["reg"] and index == 0 else config["bottle_ratio"],
                group_size=config["group_size"],
                ch_div=config["ch_div"],
                attention=config["attention"],
                se_ratio=config["se_ratio"],
                se_divisor=config["se_divisor"],
                attn_gain=config["attn_gain"],
                activation=config["activation"],
                eps=config["std_conv_eps"],
                extra_conv=config["extra_conv"],
                reg=config["reg"],
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
    return x


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
TimmNFRegNetB1 = _application("nf_regnet_b1", "TimmNFRegNetB1")
TimmNFResNet50 = _application("nf_resnet50", "TimmNFResNet50")
