"""NF-ResNet 50 ... 600 (DeepMind's `nf_resnet.py`) as `NFModel`s.

The normalizer-free pre-activation ResNets of Brock et al. (ICLR 2021), built as
DeepMind's Haiku `NF_ResNet(num_classes, variant)`: a 7x7 stride-2
`initial_conv` and a 3x3 stride-2 SAME max-pool, four stages of bottleneck
blocks (width 4 x (64, 128, 256, 512), bottleneck 0.25, dense 3x3 convs, stage
strides 1, 2, 2, 2) with a strided 1x1 conv shortcut, an optional
squeeze-excite on the block output (`use_se`), no final conv, and the head
`fc(mean_HW(act(out)))` with the classifier initialised N(0, 0.01).
DeepMind's variant table has no dropout rate (its constructor needs one
passed); ours is 0, no dropout, unless `drop_rate` is given. No weights were
published.
"""

import functools

import keras

from nfnet_keras.models import applications
from nfnet_keras.models.layers import ScaledActivation, WSConv2D
from nfnet_keras.models.nf_stages import nf_stages
from nfnet_keras.weights import loading

FAMILY = "nf_resnet"

#: What every variant shares: DeepMind's constructor defaults (`NF_ResNet.__init__`)
#: and the evaluation and augmentation settings.
SHARED_CONFIG = {
    "widths": (64, 128, 256, 512),
    "strides": (1, 2, 2, 2),
    "width_multiplier": 4,
    "stem_width": 16,  # initial_conv has stem_width * width_multiplier channels
    "bottleneck_ratio": 0.25,
    "alpha": 0.2,
    "activation": "relu",
    "use_se": False,
    "se_ratio": 0.25,
    "skip_gain_init": 0.0,
    "drop_rate": 0.0,
    # DeepMind's experiment.py trains and evaluates ResNets at 224 px.
    "train_imsize": 224,
    "test_imsize": 224,
    # Evaluation: squash-resize to test_imsize + eval_padding, centre crop test_imsize (the
    # package's one eval transform; DeepMind's experiment.py default for these models is
    # 'crop_resize', an aspect-keeping centre crop of the same ratio resized to test_imsize).
    "eval_padding": 32,
    "eval_resize": "squash",
    "randaugment": None,
}

# name: blocks per stage.
_DEPTHS = {
    "50": (3, 4, 6, 3),
    "101": (3, 4, 23, 3),
    "152": (3, 8, 36, 3),
    "200": (3, 24, 36, 3),
    "288": (24, 24, 24, 24),
    "600": (50, 50, 50, 50),
}
VARIANTS = {variant: dict(SHARED_CONFIG, depths=depths) for variant, depths in _DEPTHS.items()}
#: Keys a caller may override when building a model.
CONFIG_KEYS = tuple(VARIANTS["50"])

__all__ = ["NFResNet"] + [f"NFResNet{variant}" for variant in VARIANTS]

def canonical_name(variant):
    """`"ResNet50"`, `"resnet50"`, `50` -> `"50"`."""
    return applications.canonical_variant(variant, prefix="resnet", integers=True)


get_config = applications.config_function("NF-ResNet", VARIANTS, canonical_name, ("widths", "depths", "strides"))


def build(variant, arguments, stochdepth_rate=0.1, seed=None, remat=False, **config_overrides):
    """Builds an NF-ResNet.

    Args:
        variant: `"50"`, `"101"`, `"152"`, `"200"`, `"288"` or `"600"`
            (DeepMind's `"ResNet50"` ... spellings too).
        include_top, weights, input_tensor, input_shape, pooling, classes,
        classifier_activation, name: as in `keras.applications` (see
            `NFResNet50`).
        stochdepth_rate: stochastic-depth rate; block i of N gets
            `rate * i / N` (DeepMind's default: 0.1).
        seed, remat: as for `nfnet_keras.NFNet`.
        **config_overrides: keys of `CONFIG_KEYS` overriding the variant's
            values (`use_se`, `drop_rate`, `skip_gain_init`, ...).

    Returns:
        An `NFModel` carrying its evaluation preprocessing (squash-resize to
        256, centre crop 224) and class names. Layers are named after
        DeepMind's modules: `initial_conv`, `nf_block_{i}` (`conv0`, `conv1`,
        `conv2`, optional `conv_shortcut` and `squeeze_excite`, `skip_gain`),
        `predictions`; the output of stage k (1-based) is the layer `stage{k}`.
    """
    config = get_config(variant, **config_overrides)
    variant_name = canonical_name(variant)
    features = functools.partial(_features, config=config, stochdepth_rate=stochdepth_rate, seed=seed, remat=remat)
    no_imagenet = applications.no_imagenet_message(f"NF-ResNet-{variant_name}", "DeepMind released none")
    name, load = default_name(variant_name), loading.load_pretrained
    return applications.build_model(
        features, config, arguments, name, seed=seed, head_stddev=0.01, no_imagenet=no_imagenet, load_weights=load
    )


NFResNet = applications.family_builder(build, "50", "NFResNet", build.__doc__)


def _features(images, config, stochdepth_rate, seed, remat):
    """The stem, the stages and the final activation (DeepMind's `NF_ResNet.__call__` before the head)."""
    channels = int(config["stem_width"] * config["width_multiplier"])
    x = WSConv2D(channels, 7, strides=2, name="initial_conv")(images)
    # No activation before the pool: the first block activates its input.
    x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)
    widths = [int(width * config["width_multiplier"]) for width in config["widths"]]
    x, _ = nf_stages(
        x,
        channels,
        list(zip(widths, config["depths"], config["strides"])),
        alpha=config["alpha"],
        stochdepth_rate=stochdepth_rate,
        seed=seed,
        remat=remat,
        expansion=config["bottleneck_ratio"],
        group_width=None,
        big_width=True,
        se_ratio=config["se_ratio"],
        se_position="output" if config["use_se"] else None,
        downsample="strided_conv",
        activation=config["activation"],
        use_two_convs=False,
        skip_gain_init=config["skip_gain_init"],
    )
    return ScaledActivation(config["activation"], name="final_act")(x)


def default_name(variant):
    """The registry and model name of a variant: `"50"` -> `"nf_resnet50"`."""
    return f"{FAMILY}{variant}"


def _application(variant):
    doc = applications.application_doc(
        f"Instantiates the NF-ResNet-{variant} architecture (Brock et al., ICLR 2021).",
        f"DeepMind's Haiku `NF_ResNet(variant='ResNet{variant}')`",
        "224 px",
        applications.unpublished_weights_doc("NF-ResNet"),
        "`nfnet_keras.models.nf_resnet.NFResNet` (`use_se`, `drop_rate`, ...)",
    )
    return applications.application_function(build, variant, f"NFResNet{variant}", doc, default_name(variant))


NFResNet50 = _application("50")
NFResNet101 = _application("101")
NFResNet152 = _application("152")
NFResNet200 = _application("200")
NFResNet288 = _application("288")
NFResNet600 = _application("600")
