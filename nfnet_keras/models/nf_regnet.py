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

import math

import keras

from nfnet_keras.models import applications
from nfnet_keras.models.layers import NFBlock, ScaledActivation, WSConv2D
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

_APPLICATION_DOC = """Instantiates the NF-RegNet-{variant} architecture (Brock et al., ICLR 2021).

    Numerically the same function as DeepMind's Haiku
    `NF_RegNet(variant='{variant}', activation='silu')` in evaluation mode.
    Inputs are RGB images normalised with `nfnet_keras.preprocess_input`
    (ImageNet mean/std on 0-255 values), NHWC. The default size is the
    variant's test resolution ({test_imsize} px).

    Args:
        include_top, input_tensor, input_shape, pooling, classes,
        classifier_activation, name: as in `keras.applications`.
        weights: `None` (random init) or the path of a weights file (a
            DeepMind-layout checkpoint, a Keras `.weights.h5`). DeepMind
            published no NF-RegNet weights, so `"imagenet"` is refused.
        **kwargs: passed to `nfnet_keras.models.nf_regnet.NFRegNet`.

    Returns:
        An `NFModel`.
    """


def get_config(variant, **overrides):
    """The configuration of an NF-RegNet variant (`"B0"` ... `"B8"`), with `overrides` applied.

    Raises:
        ValueError: for an unknown variant or key.
    """
    return applications.variant_config(
        "NF-RegNet", VARIANTS, variant, canonical_name(variant), overrides, ("widths", "depths")
    )


def canonical_name(variant):
    """`"b0"` -> `"B0"`."""
    return applications.canonical_variant(variant, upper=True)


def NFRegNet(
    variant="B0",
    include_top=True,
    weights=None,
    input_tensor=None,
    input_shape=None,
    pooling=None,
    classes=1000,
    classifier_activation="softmax",
    name=None,
    stochdepth_rate=0.1,
    seed=None,
    remat=False,
    **config_overrides,
):
    """Builds an NF-RegNet.

    Args:
        variant: `"B0"` ... `"B8"` (case-insensitive).
        include_top, weights, input_tensor, input_shape, pooling, classes,
        classifier_activation, name: as in `keras.applications` (see
            `NFRegNetB0`).
        stochdepth_rate: stochastic-depth rate; block i of N gets
            `rate * i / N` (DeepMind's default and experiment value: 0.1).
        seed: optional seed for stochastic depth and dropout.
        remat: recompute each block's residual branch in the backward pass
            (see `nfnet_keras.models.layers.NFBlock`).
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
    no_imagenet = f"No ImageNet weights are published for NF-RegNet-{variant_name}: DeepMind released none. "
    no_imagenet += "Use weights=None or a path."
    applications.check_arguments(include_top, weights, pooling, classes, classifier_activation, no_imagenet)
    input_shape = applications.input_shape(input_shape, input_tensor, config["test_imsize"], include_top, weights)
    img_input = applications.image_input(input_shape, input_tensor)

    channels = int(config["widths"][0] * config["width_multiplier"])
    x = WSConv2D(channels, 3, strides=2, name="initial_conv")(img_input)
    x, channels = _body(x, channels, config, stochdepth_rate, seed, remat)
    # DeepMind's rounding: int(1280 * ch // 440), 960 for B0's 330 channels.
    x = WSConv2D(int(1280 * channels // 440), 1, name="final_conv")(x)
    x = ScaledActivation(config["activation"], name="final_act")(x)
    x = applications.classification_head(
        x,
        include_top,
        pooling,
        classes,
        classifier_activation,
        config["drop_rate"],
        seed,
        kernel_initializer="zeros",
    )
    model = applications.make_model(
        img_input,
        input_tensor,
        x,
        name or default_name(variant_name),
        input_shape,
        config["test_imsize"],
        config["eval_padding"],
        include_top,
        classes,
    )
    if weights is not None:
        loading.load_pretrained(model, weights)
    return model


def _body(x, channels, config, stochdepth_rate, seed, remat):
    """DeepMind's block loop; returns the output and its channels."""
    num_blocks = sum(config["depths"])
    expected_std = 1.0
    index = 0
    for stage, (width, depth) in enumerate(zip(config["widths"], config["depths"])):
        out_channels = int(width * config["width_multiplier"])
        for j in range(depth):
            x = NFBlock(
                channels,
                out_channels,
                # EfficientNet's rule: no expansion in the very first block.
                expansion=1.0 if index == 0 else config["expansion"],
                group_width=config["group_width"],
                big_width=False,
                stride=2 if j == 0 else 1,
                beta=1.0 / expected_std,
                alpha=config["alpha"],
                se_ratio=config["se_ratio"],
                se_position="bottleneck",
                stochdepth_rate=stochdepth_rate * index / num_blocks,
                activation=config["activation"],
                use_two_convs=False,
                seed=None if seed is None else seed + index,
                remat=remat,
                name=f"nf_block_{index}",
            )(x)
            if j == 0:
                expected_std = 1.0
            expected_std = math.sqrt(expected_std**2 + config["alpha"] ** 2)
            channels = out_channels
            index += 1
        x = keras.layers.Identity(name=f"stage{stage + 1}")(x)
    return x, channels


def default_name(variant):
    """The registry and model name of a variant: `"B0"` -> `"nf_regnet_b0"`."""
    return f"{FAMILY}_{variant.lower()}"


def _application(variant):
    return applications.application_function(
        NFRegNet,
        variant,
        f"NFRegNet{variant}",
        default_name(variant),
        _APPLICATION_DOC.format(variant=variant, test_imsize=VARIANTS[variant]["test_imsize"]),
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
