"""NFNet-F models (DeepMind's `nfnet.py`) as `NFModel`s, in the `keras.applications` style."""

import functools

import keras

from nfnet_keras.models import applications, variants
from nfnet_keras.models.layers import ScaledActivation, WSConv2D
from nfnet_keras.models.nf_stages import nf_stages
from nfnet_keras.weights import loading

# The keras.applications-style functions, one per variant of `variants.VARIANTS`
# starting with F, are defined at the end of this module.
__all__ = ["NFNet"] + ["NFNet" + v.replace("+", "Plus") for v in variants.variant_names()]

_APPLICATION_DOC = """Instantiates the NFNet-{variant} architecture (Brock et al., 2021).

    Numerically the same function as DeepMind's Haiku `NFNet(variant='{variant}')`
    in evaluation mode. Inputs are RGB images normalised with
    `nfnet_keras.preprocess_input` (ImageNet mean/std on 0-255 values), NHWC.
    The default size is the variant's test resolution ({test_imsize} px); the
    network is fully convolutional, so any size >= 32 px works.

    Args:
        include_top: whether to include the classifier (`predictions`).
        weights: `None` (random init), `"imagenet"` (DeepMind's checkpoint,
            converted and cached on first use) or the path of a weights file:
            a DeepMind checkpoint, a timm `dm_nfnet_*` `.safetensors`, a Keras
            `.weights.h5` or a converted `.npz`.
        input_tensor: optional Keras tensor to use as image input.
        input_shape: optional `(height, width, 3)`; `(None, None, 3)` for
            dynamic spatial size.
        pooling: with `include_top=False`: `None` (4-D feature map), `"avg"`
            or `"max"` (global pooling to 2-D).
        classes: number of classes with `include_top=True`. With pretrained
            weights and `classes != 1000` everything but the classifier is
            loaded, for fine-tuning.
        classifier_activation: activation of the classifier, `None` for
            logits. Pretrained top weights allow only `None` or `"softmax"`.
        name: model name.
        **kwargs: passed to `nfnet_keras.NFNet` (`drop_rate`,
            `stochdepth_rate`, `seed`, architecture overrides).

    Returns:
        A `keras.Model`.
    """


def build(variant, arguments, stochdepth_rate=0.1, seed=None, remat=False, **config_overrides):
    """Builds an NFNet from the variant table or a custom configuration.

    Args:
        variant: `"F0"` ... `"F7"`, `"F0+"` ... `"F7+"`, a small configuration
            (`"nano"`, `"micro"`), or a dict of configuration keys
            (see `nfnet_keras.models.variants.CONFIG_KEYS`).
        include_top, weights, input_tensor, input_shape, pooling, classes,
        classifier_activation, name: as in `keras.applications` (see
            `NFNetF0`).
        stochdepth_rate: stochastic-depth rate of the last block; block i of
            N gets `rate * i / N` (DeepMind's rule). 0.1 is the reference
            constructor default; the paper's training recipe uses 0.25.
        seed: optional seed for stochastic depth and dropout.
        remat: recompute each block's residual branch during the backward
            pass instead of storing its activations (`keras.remat`), for
            training the large variants in less memory; see
            benchmarks/RESULTS.md for the measured saving and cost.
        **config_overrides: architecture keys overriding the variant's values:
            `widths`, `depths`, `strides`, `stem_widths`, `group_width`,
            `expansion`, `big_width`, `alpha`, `se_ratio`, `final_conv_mult`,
            `activation`, `use_two_convs`, `drop_rate`, plus `train_imsize`,
            `test_imsize` (default input size), `randaugment`.

    Returns:
        An `NFModel`: a functional `keras.Model` that also carries its
        evaluation preprocessing (`model.preprocessing`: the input size, the
        variant's crop padding, bicubic, ImageNet mean/std) and its class names
        (`model.class_names`: ImageNet's with ImageNet weights). Layer names follow DeepMind's structure:
        `stem_conv0..3`, `nf_block_{i}` (each with `conv0`, `conv1`,
        `conv1b`, `conv2`, optional `conv_shortcut`, `squeeze_excite`,
        `skip_gain`), `final_conv`, `predictions`. The output of stage k
        (1-based) is the layer `stage{k}`.
    """
    config = variants.get_config(variant, **config_overrides)
    variant_name = variants.canonical_name(variant) if isinstance(variant, str) else None
    no_imagenet = None
    if variant_name not in variants.PRETRAINED_VARIANTS:
        released = f"DeepMind released {', '.join(variants.PRETRAINED_VARIANTS)} only"
        no_imagenet = applications.no_imagenet_message(f"NFNet-{variant_name or 'custom'}", released)
    features = functools.partial(_features, config=config, stochdepth_rate=stochdepth_rate, seed=seed, remat=remat)
    name = _default_name(variant_name) if variant_name else "nfnet"
    load = functools.partial(loading.load_pretrained, variant=variant_name)
    return applications.build_model(
        features, config, arguments, name, seed=seed, head_stddev=0.01, no_imagenet=no_imagenet, load_weights=load
    )


NFNet = applications.family_builder(build, "F0", "NFNet", build.__doc__)


def _features(images, config, stochdepth_rate, seed, remat):
    """The stem, the stages and the final conv and activation (DeepMind's `NFNet.__call__` before the head)."""
    stem_channels = tuple(config["stem_widths"]) + (config["widths"][0] // 2,)
    x = images
    for i, channels in enumerate(stem_channels):
        x = WSConv2D(channels, 3, strides=2 if i in (0, 3) else 1, name=f"stem_conv{i}")(x)
        if i < 3:  # no activation after stem_conv3: the first block activates its input.
            x = ScaledActivation(config["activation"], name=f"stem_act{i}")(x)
    x, _ = nf_stages(
        x,
        stem_channels[-1],
        list(zip(config["widths"], config["depths"], config["strides"])),
        alpha=config["alpha"],
        stochdepth_rate=stochdepth_rate,
        seed=seed,
        remat=remat,
        expansion=config["expansion"],
        group_width=config["group_width"],
        big_width=config["big_width"],
        se_ratio=config["se_ratio"],
        activation=config["activation"],
        use_two_convs=config["use_two_convs"],
    )
    final_channels = int(config["final_conv_mult"] * config["widths"][-1])
    x = WSConv2D(final_channels, 1, name="final_conv")(x)
    return ScaledActivation(config["activation"], name="final_act")(x)


def _default_name(variant):
    return "nfnet_" + variant.lower().replace("+", "_plus")


def _application(variant):
    return applications.application_function(
        build,
        variant,
        "NFNet" + variant.replace("+", "Plus"),
        _APPLICATION_DOC.format(variant=variant, test_imsize=variants.VARIANTS[variant]["test_imsize"]),
        default_name=_default_name(variant),
        default_weights="imagenet" if variant in variants.PRETRAINED_VARIANTS else None,
    )


NFNetF0 = _application("F0")
NFNetF1 = _application("F1")
NFNetF2 = _application("F2")
NFNetF3 = _application("F3")
NFNetF4 = _application("F4")
NFNetF5 = _application("F5")
NFNetF6 = _application("F6")
NFNetF7 = _application("F7")
NFNetF0Plus = _application("F0+")
NFNetF1Plus = _application("F1+")
NFNetF2Plus = _application("F2+")
NFNetF3Plus = _application("F3+")
NFNetF4Plus = _application("F4+")
NFNetF5Plus = _application("F5+")
NFNetF6Plus = _application("F6+")
NFNetF7Plus = _application("F7+")
