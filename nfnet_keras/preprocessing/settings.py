"""`EvalPreprocessing`: how a model wants its evaluation images prepared.

A model built by this package carries one (`model.preprocessing`), it is saved
with the model in `.keras` files, and every consumer (`prepare_images`, the
tf.data evaluation pipeline, `predict`, `export.py`, the SavedModel graph and
the LiteRT calibration) reads it from there instead of guessing.
"""

import dataclasses

from nfnet_keras.checks import check_integer
from nfnet_keras.preprocessing.normalization import MEAN_RGB, STDDEV_RGB

__all__ = ["EvalPreprocessing", "DEFAULT_CROP_PADDING", "RESIZE_MODES"]

#: DeepMind's `resize_crop_32`: squash-resize to S + 32, centre crop S.
DEFAULT_CROP_PADDING = 32

#: How the whole image is resized before the centre crop: "squash" (DeepMind's
#: `resize_crop_32`, timm's crop_mode "squash": both sides to `S + padding`) or
#: "shorter_side" (timm's default crop_mode "center": the shorter side to
#: `S + padding`, the aspect ratio kept).
RESIZE_MODES = ("squash", "shorter_side")

_INTERPOLATIONS = ("bicubic", "bilinear")


@dataclasses.dataclass(frozen=True)
class EvalPreprocessing:
    """The evaluation transform and normalisation of one model.

    With `resize="squash"` the transform squash-resizes the whole image
    (aspect ratio not kept) to `image_size + crop_padding` on both sides,
    without antialiasing, then centre-crops `image_size` at offset
    `(crop_padding + 1) // 2` (DeepMind's `resize_crop_32`). With
    `resize="shorter_side"` it resizes the shorter side to `image_size +
    crop_padding` keeping the aspect ratio (the longer side to
    `floor(that * long / short)`), then centre-crops `image_size` at
    torchvision's offset `round((side - image_size) / 2)` (timm's eval
    transform: `floor(size / crop_pct)` is `image_size + crop_padding`). Both
    agree on square images when the padding is even. The result is
    normalised with `(x - mean) / std`.

    Attributes:
        image_size: the side `S` of the model's input.
        crop_padding: pixels added to `S` before the centre crop (32 for the
            F variants, 4 for the 32 px `nano`/`micro`).
        interpolation: `"bicubic"` (DeepMind) or `"bilinear"`.
        resize: one of `RESIZE_MODES`.
        mean: per-channel mean on the 0..255 scale.
        std: per-channel standard deviation on the 0..255 scale.
    """

    image_size: int
    crop_padding: int = DEFAULT_CROP_PADDING
    interpolation: str = "bicubic"
    mean: tuple = MEAN_RGB
    std: tuple = STDDEV_RGB
    resize: str = "squash"

    def __post_init__(self):
        object.__setattr__(self, "image_size", check_integer(self.image_size, "image_size"))
        object.__setattr__(self, "crop_padding", check_integer(self.crop_padding, "crop_padding", minimum=0))
        if self.interpolation not in _INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {_INTERPOLATIONS}, got {self.interpolation!r}")
        if self.resize not in RESIZE_MODES:
            raise ValueError(f"resize must be one of {RESIZE_MODES}, got {self.resize!r}")
        for name in ("mean", "std"):
            values = tuple(float(v) for v in getattr(self, name))
            if len(values) != 3:
                raise ValueError(f"{name} must have 3 values (R, G, B), got {values}")
            object.__setattr__(self, name, values)
        if min(self.std) <= 0:
            raise ValueError(f"std must be positive, got {self.std}")

    @property
    def resized_size(self):
        """The side the whole image is resized to before the crop."""
        return self.image_size + self.crop_padding

    @property
    def crop_offset(self):
        """Offset of the centre crop in a squash-resized image (DeepMind's rounding)."""
        return (self.crop_padding + 1) // 2

    def replace(self, **changes):
        """A copy with some fields changed (`None` values are ignored)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def get_config(self):
        """A JSON-serialisable dict (stored in a model's config)."""
        return {
            "image_size": self.image_size,
            "crop_padding": self.crop_padding,
            "interpolation": self.interpolation,
            "mean": list(self.mean),
            "std": list(self.std),
            "resize": self.resize,
        }

    @classmethod
    def from_config(cls, config):
        """The inverse of `get_config`; also accepts an `EvalPreprocessing`."""
        if isinstance(config, cls):
            return config
        if not isinstance(config, dict):
            raise TypeError(f"preprocessing must be an EvalPreprocessing or a dict, got {type(config).__name__}")
        unknown = sorted(set(config) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"unknown preprocessing keys {unknown}")
        return cls(**config)


def resolve_preprocessing(spec, crop_padding=None):
    """An `EvalPreprocessing` from what a caller passed.

    Args:
        spec: a model built by this package (its `preprocessing`), an
            `EvalPreprocessing`, its config dict, or an `int` image size (then
            DeepMind's defaults fill in the rest).
        crop_padding: overrides the padding of `spec` when not None.

    Raises:
        ValueError: for a model that carries no preprocessing, or bad values.
    """
    if isinstance(spec, (EvalPreprocessing, dict)):
        result = EvalPreprocessing.from_config(spec)
    elif hasattr(spec, "preprocessing"):
        if spec.preprocessing is None:
            raise ValueError(
                f"model {getattr(spec, 'name', spec)!r} carries no evaluation preprocessing; pass an image size"
            )
        result = spec.preprocessing
    else:
        result = EvalPreprocessing(check_integer(spec, "image_size"))
    return result.replace(crop_padding=crop_padding)
