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

import math

import keras

from nfnet_keras.models import applications
from nfnet_keras.models.layers import NFBlock, ScaledActivation, WSConv2D
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

_APPLICATION_DOC = """Instantiates the NF-ResNet-{variant} architecture (Brock et al., ICLR 2021).

    Numerically the same function as DeepMind's Haiku
    `NF_ResNet(variant='ResNet{variant}')` in evaluation mode. Inputs are RGB
    images normalised with `nfnet_keras.preprocess_input` (ImageNet mean/std
    on 0-255 values), NHWC, 224 px by default.

    Args:
        include_top, input_tensor, input_shape, pooling, classes,
        classifier_activation, name: as in `keras.applications`.
        weights: `None` (random init) or the path of a weights file (a
            DeepMind-layout checkpoint, a Keras `.weights.h5`). DeepMind
            published no NF-ResNet weights, so `"imagenet"` is refused.
        **kwargs: passed to `nfnet_keras.models.nf_resnet.NFResNet`
            (`use_se`, `drop_rate`, ...).

    Returns:
        An `NFModel`.
    """


def get_config(variant, **overrides):
    """The configuration of an NF-ResNet variant (`"50"` ... `"600"`), with `overrides` applied.

    Raises:
        ValueError: for an unknown variant or key.
    """
    return applications.variant_config(
        "NF-ResNet", VARIANTS, variant, canonical_name(variant), overrides, ("widths", "depths", "strides")
    )


def canonical_name(variant):
    """`"ResNet50"`, `"resnet50"`, `50` -> `"50"`."""
    return applications.canonical_variant(variant, prefix="resnet", integers=True)


def NFResNet(
    variant="50",
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
    """Builds an NF-ResNet.

    Args:
        variant: `"50"`, `"101"`, `"152"`, `"200"`, `"288"` or `"600"`
            (DeepMind's `"ResNet50"` ... spellings too).
        include_top, weights, input_tensor, input_shape, pooling, classes,
        classifier_activation, name: as in `keras.applications` (see
            `NFResNet50`).
        stochdepth_rate: stochastic-depth rate; block i of N gets
            `rate * i / N` (DeepMind's default: 0.1).
        seed: optional seed for stochastic depth and dropout.
        remat: recompute each block's residual branch in the backward pass
            (see `nfnet_keras.models.layers.NFBlock`).
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
    no_imagenet = f"No ImageNet weights are published for NF-ResNet-{variant_name}: DeepMind released none. "
    no_imagenet += "Use weights=None or a path."
    applications.check_arguments(include_top, weights, pooling, classes, classifier_activation, no_imagenet)
    input_shape = applications.input_shape(input_shape, input_tensor, config["test_imsize"], include_top, weights)
    img_input = applications.image_input(input_shape, input_tensor)

    channels = int(config["stem_width"] * config["width_multiplier"])
    x = WSConv2D(channels, 7, strides=2, name="initial_conv")(img_input)
    # No activation before the pool: the first block activates its input.
    x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)
    x = _body(x, channels, config, stochdepth_rate, seed, remat)
    x = ScaledActivation(config["activation"], name="final_act")(x)
    x = applications.classification_head(
        x,
        include_top,
        pooling,
        classes,
        classifier_activation,
        config["drop_rate"],
        seed,
        kernel_initializer=keras.initializers.RandomNormal(0.0, 0.01),
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
    """DeepMind's block loop."""
    num_blocks = sum(config["depths"])
    expected_std = 1.0
    index = 0
    for stage, (width, depth, stride) in enumerate(zip(config["widths"], config["depths"], config["strides"])):
        out_channels = int(width * config["width_multiplier"])
        for j in range(depth):
            x = NFBlock(
                channels,
                out_channels,
                expansion=config["bottleneck_ratio"],
                group_width=None,
                big_width=True,
                stride=stride if j == 0 else 1,
                beta=1.0 / expected_std,
                alpha=config["alpha"],
                se_ratio=config["se_ratio"],
                se_position="output" if config["use_se"] else None,
                downsample="strided_conv",
                stochdepth_rate=stochdepth_rate * index / num_blocks,
                activation=config["activation"],
                use_two_convs=False,
                skip_gain_init=config["skip_gain_init"],
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
    return x


def default_name(variant):
    """The registry and model name of a variant: `"50"` -> `"nf_resnet50"`."""
    return f"{FAMILY}{variant}"


def _application(variant):
    return applications.application_function(
        NFResNet, variant, f"NFResNet{variant}", default_name(variant), _APPLICATION_DOC.format(variant=variant)
    )


NFResNet50 = _application("50")
NFResNet101 = _application("101")
NFResNet152 = _application("152")
NFResNet200 = _application("200")
NFResNet288 = _application("288")
NFResNet600 = _application("600")
