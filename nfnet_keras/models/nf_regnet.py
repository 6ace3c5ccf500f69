"""NF-RegNet B0 ... B8 (DeepMind's `nf_regnet.py`, `base.nf_regnet_params`) as `NFModel`s.

The normalizer-free RegNets of Brock et al. (ICLR 2021), built as DeepMind's
Haiku `NF_RegNet(num_classes, variant, activation='silu')`: one 3x3 stride-2
`initial_conv` stem, four stages that each start with stride 2, inverted
bottleneck blocks (expansion 2.25, 1 in the very first block, rounded down to
groups of 8) with the squeeze-excite on the bottleneck before `conv2`, an
average-pool shortcut, a final 1x1 conv to `1280 * ch // 440` channels and a
zero-initialised classifier. DeepMind's class default `activation='swish'` is
not a key of its nonlinearity table; its `experiment_nf_regnets.py` passes
`'silu'`, and so does every model here. No weights were published.
"""

import functools

import keras

from nfnet_keras.models import applications
from nfnet_keras.models.layers import ScaledActivation, WSConv2D
from nfnet_keras.models.nf_stages import nf_stages
from nfnet_keras.weights import loading

FAMILY = "nf_regnet"

#: What every variant shares: DeepMind's constructor defaults (`NF_RegNet.__init__`,
#: with its experiment's `silu`) and the evaluation and augmentation settings.
SHARED_CONFIG = {
    "width_multiplier": 0.75,
    "expansion": 2.25,
    "group_width": 8,
    "se_ratio": 0.5,
    "alpha": 0.2,
    "activation": "silu",
    # Evaluation: squash-resize to test_imsize + eval_padding, centre crop test_imsize (the
    # package's one eval transform; DeepMind's experiment.py default for these models is
    # 'crop_resize', an aspect-keeping centre crop of the same ratio resized to test_imsize).
    "eval_padding": 32,
    "eval_resize": "squash",
    # DeepMind trained NF-RegNets with mixup and cutmix, without RandAugment.
    "randaugment": None,
}

# name: stage widths (before the width multiplier), depths, train/test resolution, dropout.
_TABLE = {
    "B0": ((48, 104, 208, 440), (1, 3, 6, 6), 192, 224, 0.2),
    "B1": ((48, 104, 208, 440), (2, 4, 7, 7), 224, 256, 0.2),
    "B2": ((56, 112, 232, 488), (2, 4, 8, 8), 240, 272, 0.3),
    "B3": ((56, 128, 248, 528), (2, 5, 9, 9), 288, 320, 0.3),
    "B4": ((64, 144, 288, 616), (2, 6, 11, 11), 320, 384, 0.4),
    "B5": ((80, 168, 336, 704), (3, 7, 14, 14), 384, 456, 0.4),
    "B6": ((88, 184, 376, 792), (3, 8, 16, 16), 448, 528, 0.5),
    "B7": ((96, 208, 416, 880), (4, 10, 19, 19), 512, 600, 0.5),
    "B8": ((104, 232, 456, 968), (4, 11, 22, 22), 600, 672, 0.5),
}
VARIANTS = {
    variant: dict(SHARED_CONFIG, widths=widths, depths=depths, train_imsize=train, test_imsize=test, drop_rate=drop)
    for variant, (widths, depths, train, test, drop) in _TABLE.items()
}
#: Keys a caller may override when building a model.
CONFIG_KEYS = tuple(VARIANTS["B0"])

__all__ = ["NFRegNet"] + [f"NFRegNet{variant}" for variant in VARIANTS]

def canonical_name(variant):
    """`"b0"` -> `"B0"`."""
    return applications.canonical_variant(variant, upper=True)


get_config = applications.config_function("NF-RegNet", VARIANTS, canonical_name, ("widths", "depths"))


def build(variant, arguments, stochdepth_rate=0.1, seed=None, remat=False, **config_overrides):
    """Builds an NF-RegNet.

    Args:
        variant: `"B0"` ... `"B8"` (case-insensitive).
        include_top, weights, input_tensor, input_shape, pooling, classes,
        classifier_activation, name: as in `keras.applications` (see
            `NFRegNetB0`).
        stochdepth_rate: stochastic-depth rate; block i of N gets
            `rate * i / N` (DeepMind's default and experiment value: 0.1).
        seed, remat: as for `nfnet_keras.NFNet`.
        **config_overrides: keys of `CONFIG_KEYS` overriding the variant's
            values (`drop_rate`, `width_multiplier`, `activation`, ...).

    Returns:
        An `NFModel` carrying its evaluation preprocessing (squash-resize to
        S + 32, centre crop S, at the variant's test size S) and class names.
        Layers are named after DeepMind's modules: `initial_conv`,
        `nf_block_{i}` (`conv0`, `conv1`, `squeeze_excite`, `conv2`, optional
        `conv_shortcut`, `skip_gain`), `final_conv`, `predictions`; the output
        of stage k (1-based) is the layer `stage{k}`.
    """
    config = get_config(variant, **config_overrides)
    variant_name = canonical_name(variant)
    features = functools.partial(_features, config=config, stochdepth_rate=stochdepth_rate, seed=seed, remat=remat)
    no_imagenet = applications.no_imagenet_message(f"NF-RegNet-{variant_name}", "DeepMind released none")
    name, load = default_name(variant_name), loading.load_pretrained
    return applications.build_model(
        features, config, arguments, name, seed=seed, head_stddev=0.0, no_imagenet=no_imagenet, load_weights=load
    )


NFRegNet = applications.family_builder(build, "B0", "NFRegNet", build.__doc__)


def _features(images, config, stochdepth_rate, seed, remat):
    """The stem, the stages and the final conv and activation (DeepMind's `NF_RegNet.__call__` before the head)."""
    widths = [int(width * config["width_multiplier"]) for width in config["widths"]]
    x = WSConv2D(widths[0], 3, strides=2, name="initial_conv")(images)
    x, channels = nf_stages(
        x,
        widths[0],
        [(width, depth, 2) for width, depth in zip(widths, config["depths"])],
        alpha=config["alpha"],
        stochdepth_rate=stochdepth_rate,
        seed=seed,
        remat=remat,
        # EfficientNet's rule: no expansion in the very first block.
        first_block={"expansion": 1.0},
        expansion=config["expansion"],
        group_width=config["group_width"],
        big_width=False,
        se_ratio=config["se_ratio"],
        se_position="bottleneck",
        activation=config["activation"],
        use_two_convs=False,
    )
    # DeepMind's rounding: int(1280 * ch // 440), 960 for B0's 330 channels.
    x = WSConv2D(int(1280 * channels // 440), 1, name="final_conv")(x)
    return ScaledActivation(config["activation"], name="final_act")(x)


def default_name(variant):
    """The registry and model name of a variant: `"B0"` -> `"nf_regnet_b0"`."""
    return f"{FAMILY}_{variant.lower()}"


def _application(variant):
    return applications.application_function(
        build,
        variant,
        f"NFRegNet{variant}",
        applications.application_doc(
            f"Instantiates the NF-RegNet-{variant} architecture (Brock et al., ICLR 2021).",
            f"DeepMind's Haiku `NF_RegNet(variant='{variant}', activation='silu')`",
            f"the variant's test resolution ({VARIANTS[variant]['test_imsize']} px)",
            applications.unpublished_weights_doc("NF-RegNet"),
            "`nfnet_keras.models.nf_regnet.NFRegNet`",
        ),
        default_name=default_name(variant),
    )


NFRegNetB0 = _application("B0")
NFRegNetB1 = _application("B1")
NFRegNetB2 = _application("B2")
NFRegNetB3 = _application("B3")
NFRegNetB4 = _application("B4")
NFRegNetB5 = _application("B5")
NFRegNetB6 = _application("B6")
NFRegNetB7 = _application("B7")
NFRegNetB8 = _application("B8")
