"""What happens to an image before the model and to its logits after.

- `settings`: `EvalPreprocessing`, the settings a model carries.
- `transform`: the evaluation transform (squash-resize, centre crop), defined once.
- `normalization`: ImageNet mean/std, `normalize`, `preprocess_input`.
- `decoding`: image files to uint8 RGB (PIL on the host, `tf.io` in graphs).
- `images`: `prepare_images`, files or arrays to a normalised batch.
- `imagenet`: the ImageNet class names and `decode_predictions`.

Backend-neutral (`keras.ops`); only `eval_transform_tf` and `decode_image` need
TensorFlow, which they import when called.
"""

from nfnet_keras.preprocessing.decoding import decode_image, load_image
from nfnet_keras.preprocessing.imagenet import decode_predictions, imagenet_class_names
from nfnet_keras.preprocessing.images import prepare_images
from nfnet_keras.preprocessing.normalization import MEAN_RGB, STDDEV_RGB, normalize, preprocess_input
from nfnet_keras.preprocessing.settings import DEFAULT_CROP_PADDING, EvalPreprocessing, resolve_preprocessing
from nfnet_keras.preprocessing.transform import eval_transform, eval_transform_tf

__all__ = [
    "DEFAULT_CROP_PADDING",
    "EvalPreprocessing",
    "MEAN_RGB",
    "STDDEV_RGB",
    "decode_image",
    "decode_predictions",
    "eval_transform",
    "eval_transform_tf",
    "imagenet_class_names",
    "load_image",
    "normalize",
    "prepare_images",
    "preprocess_input",
    "resolve_preprocessing",
]
