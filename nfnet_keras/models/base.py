"""`NFModel`: a functional `keras.Model` that carries its own settings.

Every model this package builds is an `NFModel`. Besides its layers it knows
how its evaluation images must be prepared (`model.preprocessing`, an
`EvalPreprocessing`) and what its classes are called (`model.class_names`).
Both are part of `get_config()`, so they survive `model.save("x.keras")` and
`keras.saving.load_model`, and everything downstream (`prepare_images`,
`predict`, `export.py`, the SavedModel graph, LiteRT) reads them from the model.
"""

import keras

from nfnet_keras.preprocessing.imagenet import NUM_CLASSES, imagenet_class_names
from nfnet_keras.preprocessing.settings import EvalPreprocessing

__all__ = ["NFModel", "CLASSIFIER_LAYER", "IMAGENET_CLASSES"]

#: Name of the classification layer of every model with a head.
CLASSIFIER_LAYER = "predictions"
#: The `class_names` value that stands for the 1,000 ImageNet classes.
IMAGENET_CLASSES = "imagenet"


@keras.saving.register_keras_serializable(package="nfnet_keras")
class NFModel(keras.Model):
    """A functional model with its evaluation preprocessing and class names.

    Built like `keras.Model(inputs, outputs)`; the two extra keyword arguments
    are stored in the config.

    Args:
        *args, **kwargs: as for a functional `keras.Model` (`inputs`, `outputs`, `name`).
        preprocessing: an `EvalPreprocessing` (or its config dict), or None for
            a model that does not know it.
        class_names: `None` (classes are numbered), `"imagenet"` (the 1,000
            ImageNet classes) or one name per class.
    """

    def __init__(self, *args, preprocessing=None, class_names=None, **kwargs):
        super().__init__(*args, **kwargs)
        # Set the stores first: Keras skips `self.x = v` when `self.x` already reads as `v`.
        self._nf_preprocessing = None
        self._nf_class_names = None
        self.preprocessing = preprocessing
        self.class_names = class_names

    @property
    def preprocessing(self):
        """The `EvalPreprocessing` of this model, or None when it is not known."""
        return self._nf_preprocessing

    @preprocessing.setter
    def preprocessing(self, value):
        self._nf_preprocessing = None if value is None else EvalPreprocessing.from_config(value)

    @property
    def num_classes(self):
        """Number of classes of the classifier, or None for a model without one."""
        try:
            layer = self.get_layer(CLASSIFIER_LAYER)
        except ValueError:
            return None
        return int(layer.output.shape[-1])

    @property
    def class_names(self):
        """One name per class (a tuple), or None for a model without a classifier.

        Models built with ImageNet weights name the ImageNet classes, `train.py`
        stores its dataset's names, and other models number their classes.
        """
        num_classes = self.num_classes
        if num_classes is None:
            return None
        if self._nf_class_names is None:
            return tuple(str(i) for i in range(num_classes))
        if self._nf_class_names == IMAGENET_CLASSES:
            return tuple(imagenet_class_names())
        return self._nf_class_names

    @class_names.setter
    def class_names(self, value):
        if value is not None and value != IMAGENET_CLASSES:
            if isinstance(value, str) or not all(isinstance(name, str) for name in value):
                raise TypeError(f"class_names must be None, {IMAGENET_CLASSES!r} or a sequence of strings")
            value = tuple(value)
        expected = self.num_classes
        count = NUM_CLASSES if value == IMAGENET_CLASSES else (None if value is None else len(value))
        if count is not None and expected is not None and count != expected:
            raise ValueError(f"{count} class names for a model with {expected} classes")
        self._nf_class_names = value

    def get_config(self):
        config = super().get_config()
        config["preprocessing"] = None if self.preprocessing is None else self.preprocessing.get_config()
        names = self._nf_class_names
        config["class_names"] = list(names) if isinstance(names, tuple) else names
        return config
