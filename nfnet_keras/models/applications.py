"""What every family's builder shares: the variant lookup, the `keras.applications` rules, the input, the head.

NFNet-F (`nfnet.py`), NF-RegNet (`nf_regnet.py`), NF-ResNet (`nf_resnet.py`)
and timm's NFNets (`timm_nfnet.py`) differ in their stem and blocks
only; their arguments follow `keras.applications` and are checked here, once.
"""

import copy
import dataclasses
import inspect
import os

import keras

from nfnet_keras.checks import check_integer
from nfnet_keras.models.base import CLASSIFIER_LAYER, IMAGENET_CLASSES, NFModel
from nfnet_keras.preprocessing.settings import EvalPreprocessing

__all__ = [
    "Arguments",
    "application_doc",
    "application_function",
    "build_model",
    "family_builder",
    "canonical_variant",
    "check_arguments",
    "classification_head",
    "config_function",
    "image_input",
    "eval_preprocessing",
    "make_model",
    "no_imagenet_message",
    "resolve_input_shape",
    "unpublished_weights_doc",
    "variant_config",
]


#: The smallest input side every family accepts (five stride-2 stages).
MIN_INPUT_SIZE = 32


def canonical_variant(variant, upper=False, prefix="", integers=False):
    """A family's table key for what a user typed: stripped, case-folded, without `prefix`.

    Args:
        variant: the name as given (`" b0"`, `"ResNet50"`, `"timm/ECA_NFNet_L0"`).
        upper: fold to upper case (NF-RegNet's `"B0"`), else to lower case.
        prefix: removed from the front after folding (`"resnet"`, `"timm/"`),
            compared in the same case.
        integers: accept an int too (NF-ResNet's `50`); never a bool.

    Raises:
        TypeError: for anything but a string (or an int where accepted).
    """
    accepted = (str, int) if integers else str
    if isinstance(variant, bool) or not isinstance(variant, accepted):
        kinds = "a string or an int" if integers else "a string"
        raise TypeError(f"variant must be {kinds}, got {type(variant).__name__}")
    name = str(variant).strip()
    if upper:
        return name.upper().removeprefix(prefix.upper())
    return name.lower().removeprefix(prefix.lower())


def variant_config(family, variants, variant, name, overrides, stage_keys):
    """A copy of the variant's table entry with `overrides` applied, checked.

    Args:
        family: the family as messages name it (`"NF-RegNet"`).
        variants: the family's table, `{name: config}`; every config has the
            same keys, and those are the keys a caller may override.
        variant: the variant as the caller spelled it (for the message).
        name: its canonical spelling, a key of `variants`.
        overrides: `{key: value}`; None values leave the table's value.
        stage_keys: the per-stage sequences (`"depths"` among them) that must
            have one entry per stage each.

    Raises:
        ValueError: for an unknown variant or key, stage sequences of
            different lengths, or a stage of depth < 1.
    """
    if name not in variants:
        raise ValueError(f"Unknown {family} variant {variant!r}. Choose one of {', '.join(variants)}.")
    config = copy.deepcopy(variants[name])
    unknown = sorted(set(overrides) - set(config))
    if unknown:
        raise ValueError(f"Unknown {family} configuration keys {unknown}; accepted: {list(config)}")
    config.update({key: value for key, value in overrides.items() if value is not None})
    if len({len(config[key]) for key in stage_keys}) != 1 or min(config["depths"]) < 1:
        got = ", ".join(f"{key} {config[key]}" for key in stage_keys)
        raise ValueError(f"{family}: {'/'.join(stage_keys)} need one entry per stage each, every depth >= 1; got {got}")
    return config


def config_function(family, variants, canonical_name, stage_keys):
    """A family's `get_config(variant, **overrides)`: `variant_config` on its table.

    Args:
        family, variants, stage_keys: as for `variant_config`.
        canonical_name: the family's spelling function (`canonical_variant`).
    """

    def get_config(variant, **overrides):
        return variant_config(family, variants, variant, canonical_name(variant), overrides, stage_keys)

    get_config.__doc__ = f"""The configuration of one {family} variant ({', '.join(variants)}), with `overrides` applied.

    Raises:
        ValueError: for an unknown variant or key.
    """
    return get_config


def unpublished_weights_doc(family):
    """What `weights` accepts for a DeepMind family without published weights, for `application_doc`."""
    return f"""`None` (random init) or the path of a weights file (a
            DeepMind-layout checkpoint, a Keras `.weights.h5`). DeepMind
            published no {family} weights, so `"imagenet"` is refused."""


def check_arguments(include_top, weights, pooling, classes, classifier_activation, no_imagenet=None):
    """Checks the `keras.applications` arguments before anything is built or downloaded.

    Args:
        include_top, weights, pooling, classes, classifier_activation: as in
            `keras.applications`.
        no_imagenet: None when `weights="imagenet"` is available, else the
            one-line message that refuses it.

    Raises:
        ValueError: for an invalid argument or combination.
    """
    if not (weights in (None, "imagenet") or (isinstance(weights, (str, os.PathLike)) and os.path.exists(weights))):
        raise ValueError(
            "The `weights` argument should be either `None` (random initialization), `'imagenet'` "
            f"(pre-training on ImageNet), or the path to the weights file to be loaded. Received: weights={weights}"
        )
    if weights == "imagenet" and no_imagenet:
        raise ValueError(no_imagenet)
    if keras.config.image_data_format() != "channels_last":
        raise ValueError(
            "NF models support only the 'channels_last' image data format (DeepMind's weights are NHWC/HWIO); "
            "set keras.config.set_image_data_format('channels_last')."
        )
    if pooling not in (None, "avg", "max"):
        raise ValueError(f"`pooling` must be None, 'avg' or 'max'. Received: pooling={pooling}")
    if include_top:
        check_integer(classes, "`classes`")
    pretrained_top = include_top and weights is not None and classes == 1000
    if pretrained_top and classifier_activation not in (None, "softmax"):
        raise ValueError(
            "Only `None` and `softmax` activations are allowed for the `classifier_activation` argument "
            f"when using pretrained weights, with `include_top=True`; Received: {classifier_activation}"
        )


def resolve_input_shape(shape, input_tensor, default_size, include_top, weights):
    """The `(height, width, 3)` input shape: the given one, the tensor's, or the default.

    Without a top the default is `(None, None, 3)`; with one, the family's test size.

    Raises:
        ValueError: for a shape that is not 3-D, too small, or not RGB with weights.
    """
    if shape is None and input_tensor is not None:
        if len(input_tensor.shape) != 4:
            raise ValueError(f"input_tensor must be 4-D (N, H, W, 3), got shape {input_tensor.shape}")
        shape = tuple(input_tensor.shape[1:])
    if shape is None:
        return (default_size, default_size, 3) if include_top else (None, None, 3)
    shape = tuple(shape)
    if len(shape) != 3:
        raise ValueError(f"`input_shape` must be a tuple of three integers (height, width, 3). Received: {shape}")
    if weights is not None and shape[-1] != 3:
        raise ValueError(f"The input must have 3 channels with pretrained weights; Received: input_shape={shape}")
    for size in shape[:2]:
        if size is not None and size < MIN_INPUT_SIZE:
            raise ValueError(
                f"Input size must be at least {MIN_INPUT_SIZE}x{MIN_INPUT_SIZE}; Received: input_shape={shape}"
            )
    return shape


def image_input(shape, input_tensor):
    """The image input tensor of a model: `input_tensor` (wrapped if it is not a Keras tensor) or a new one."""
    if input_tensor is None:
        return keras.layers.Input(shape=shape, name="images")
    if not keras.backend.is_keras_tensor(input_tensor):
        return keras.layers.Input(tensor=input_tensor, shape=shape, name="images")
    return input_tensor


def classification_head(x, include_top, pooling, classes, classifier_activation, drop_rate, seed, kernel_initializer):
    """Global average pool, dropout and the `predictions` layer; or only the pooling without a top.

    Args:
        x: the activated final feature map.
        include_top, pooling, classes, classifier_activation: as in `keras.applications`.
        drop_rate: dropout before the classifier (training only).
        seed: optional dropout seed.
        kernel_initializer: the classifier's kernel initialiser (DeepMind's
            differ per family).
    """
    if include_top:
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        if drop_rate > 0:
            x = keras.layers.Dropout(drop_rate, seed=seed, name="top_dropout")(x)
        return keras.layers.Dense(
            classes,
            activation=classifier_activation,
            kernel_initializer=kernel_initializer,
            # float32 logits also under mixed precision.
            dtype="float32",
            name=CLASSIFIER_LAYER,
        )(x)
    if pooling == "avg":
        return keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if pooling == "max":
        return keras.layers.GlobalMaxPooling2D(name="max_pool")(x)
    return x


def make_model(img_input, input_tensor, outputs, name, shape, config, include_top, classes):
    """The `NFModel` with its evaluation preprocessing and class names.

    The preprocessing is the variant's (`eval_preprocessing`) at the model's
    fixed square input size, else at its test size; a 1000-class head names
    ImageNet's classes (as in `keras.applications`; `train.py` names its
    dataset's).
    """
    inputs = keras.utils.get_source_inputs(input_tensor) if input_tensor is not None else img_input
    fixed_size = shape[0] if shape[0] is not None and shape[0] == shape[1] else None
    return NFModel(
        inputs,
        outputs,
        name=name,
        preprocessing=eval_preprocessing(config, fixed_size),
        class_names=IMAGENET_CLASSES if include_top and classes == 1000 else None,
    )


def eval_preprocessing(config, image_size=None):
    """The `EvalPreprocessing` of a variant's configuration, at `image_size` or its test size.

    The one place where a configuration's `test_imsize`, `eval_padding` and
    `eval_resize` become a model's preprocessing.
    """
    return EvalPreprocessing(
        image_size or config["test_imsize"], crop_padding=config["eval_padding"], resize=config["eval_resize"]
    )


@dataclasses.dataclass(frozen=True)
class Arguments:
    """The `keras.applications` arguments of one build, as the caller gave them."""

    include_top: bool = True
    weights: object = None
    input_tensor: object = None
    input_shape: tuple = None
    pooling: str = None
    classes: int = 1000
    classifier_activation: object = "softmax"
    name: str = None

    def check(self, config, no_imagenet=None):
        """Checks every argument (`check_arguments`) and returns the input shape (`resolve_input_shape`).

        Args:
            config: the variant's configuration (its `test_imsize` is the default size).
            no_imagenet: as in `check_arguments`.

        Raises:
            ValueError: for an invalid argument or combination, before anything is built or downloaded.
        """
        check_arguments(
            self.include_top, self.weights, self.pooling, self.classes, self.classifier_activation, no_imagenet
        )
        return resolve_input_shape(
            self.input_shape, self.input_tensor, config["test_imsize"], self.include_top, self.weights
        )


def no_imagenet_message(model, released):
    """The refusal of `weights="imagenet"` for a model without published weights (`check_arguments`)."""
    return f"No ImageNet weights are published for {model}: {released}. Use weights=None or a path."


def build_model(features, config, arguments, default_name, *, seed, head_stddev, no_imagenet=None, load_weights=None):
    """Checks the arguments, builds the input, the family's features, the head and the `NFModel`, loads weights.

    Args:
        features: `features(images) -> x`, the family's network from the
            image input to its activated final feature map.
        config: the variant's configuration (`test_imsize`, `eval_padding`,
            `drop_rate` are read here).
        arguments: the caller's `Arguments`.
        default_name: the model's name where `arguments.name` is None.
        seed: optional dropout seed.
        head_stddev: the standard deviation of the classifier's normal
            initialisation; 0 for zeros (DeepMind's differ per family).
        no_imagenet: as in `check_arguments`.
        load_weights: `load_weights(model, weights)`, the family's loader of
            `arguments.weights` when they are not None.

    Raises:
        ValueError: for an invalid argument or combination, before anything is built.
    """
    shape = arguments.check(config, no_imagenet)
    images = image_input(shape, arguments.input_tensor)
    x = classification_head(
        features(images),
        arguments.include_top,
        arguments.pooling,
        arguments.classes,
        arguments.classifier_activation,
        config["drop_rate"],
        seed,
        keras.initializers.RandomNormal(0.0, head_stddev) if head_stddev else "zeros",
    )
    name = arguments.name or default_name
    model = make_model(images, arguments.input_tensor, x, name, shape, config, arguments.include_top, arguments.classes)
    if arguments.weights is not None and load_weights is not None:
        load_weights(model, arguments.weights)
    return model


def application_doc(summary, reference, default_size, weights, builder):
    """The docstring of a variant's `keras.applications`-style function.

    Args:
        summary: the first line (`"Instantiates the NF-RegNet-B0 architecture ..."`).
        reference: the function it reproduces (`"DeepMind's Haiku ..."`).
        default_size: the default input size, in words.
        weights: what `weights` accepts, in words.
        builder: the family builder that takes the other keywords, in words.
    """
    return f"""{summary}

    Numerically the same function as
    {reference} in evaluation mode.
    Inputs are RGB images normalised with `nfnet_keras.preprocess_input`
    (ImageNet mean/std on 0-255 values), NHWC; the default size is
    {default_size}.

    Args:
        include_top, input_tensor, input_shape, pooling, classes,
        classifier_activation, name: as in `keras.applications`.
        weights: {weights}
        **kwargs: passed to {builder}.

    Returns:
        An `NFModel` carrying its evaluation preprocessing and class names.
    """


def application_function(build, variant, function_name, doc, default_name=None, default_weights=None):
    """A `keras.applications`-style function for one variant of a family.

    Args:
        build: the family's `build(variant, arguments, **family_arguments)`,
            called with the `Arguments` and the remaining keywords.
        variant: the family's variant name.
        function_name: the public name (`"NFNetF0"`).
        doc: the function's docstring.
        default_name: the default model name (`"nfnet_f0"`); None lets the
            family name it.
        default_weights: `"imagenet"` where published weights exist, else None.
    """

    def application(
        include_top=True,
        weights=default_weights,
        input_tensor=None,
        input_shape=None,
        pooling=None,
        classes=1000,
        classifier_activation="softmax",
        name=default_name,
        **kwargs,
    ):
        arguments = Arguments(
            include_top, weights, input_tensor, input_shape, pooling, classes, classifier_activation, name
        )
        return build(variant, arguments, **kwargs)

    application.__name__ = application.__qualname__ = function_name
    application.__doc__ = doc
    return application


def family_builder(build, default_variant, function_name, doc):
    """A family's public builder: `builder(variant, <keras.applications arguments>, <the family's own>)`.

    The builder takes the arguments of `application_function`'s functions
    after `variant`, then `build`'s own as keywords (`stochdepth_rate`, ...);
    its signature, as `inspect` and `help` show it, lists all three.

    Args:
        build: as in `application_function`.
        default_variant: the variant built when none is named.
        function_name: the public name (`"NFNet"`).
        doc: the builder's docstring.
    """

    def builder(variant=default_variant, *args, **kwargs):
        return application_function(build, variant, function_name, doc)(*args, **kwargs)

    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    application_parameters = inspect.signature(application_function(build, default_variant, function_name, doc))
    own_parameters = list(inspect.signature(build).parameters.values())[2:]  # after variant, arguments
    builder.__signature__ = inspect.Signature(
        [inspect.Parameter("variant", kind, default=default_variant)]
        + [p for p in application_parameters.parameters.values() if p.kind is kind]
        + [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) if p.kind is kind else p for p in own_parameters]
    )
    builder.__name__ = builder.__qualname__ = function_name
    builder.__doc__ = doc
    return builder
