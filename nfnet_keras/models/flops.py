"""Multiply-accumulate counter with DeepMind's convention (convs and linears only)."""

import keras

from nfnet_keras.models.layers import NFBlock, WSConv2D

_SPATIAL_POOLS = (keras.layers.AveragePooling2D, keras.layers.MaxPooling2D)
_GLOBAL_POOLS = (keras.layers.GlobalAveragePooling2D, keras.layers.GlobalMaxPooling2D)


def count_macs(model, image_size=None):
    """Counts the multiply-accumulates of one forward pass on one image.

    DeepMind's `count_flops` (and the NFNet README's "FLOPs") count the MACs of
    convolutions and linear layers only; this counter does the same, so
    NFNet-F0 at 256 px gives 12.38 G. Feature maps have their real SAME-padded
    sizes; DeepMind's counter halves sizes as floats, so the two agree where
    the input size divides by the total stride (NF-RegNet B2 and B5-B7 at
    their test sizes do not).

    Args:
        model: any model built by this package (NFNet, NF-RegNet, NF-ResNet).
        image_size: int or (height, width); defaults to the model's static
            input size.

    Returns:
        int, MACs per image.
    """
    if image_size is None:
        height, width = model.input_shape[1:3]
        if height is None or width is None:
            raise ValueError("The model has a dynamic input size: pass image_size")
    elif isinstance(image_size, int):
        height = width = image_size
    else:
        height, width = image_size
    total = 0
    for layer in model.layers:
        if isinstance(layer, (WSConv2D, NFBlock)):
            macs, (height, width) = layer.count_macs(height, width)
            total += macs
        elif isinstance(layer, keras.layers.Dense):
            total += layer.kernel.shape[0] * layer.kernel.shape[1]
        elif isinstance(layer, _SPATIAL_POOLS):
            height, width = -(-height // layer.strides[0]), -(-width // layer.strides[1])
        elif isinstance(layer, _GLOBAL_POOLS):
            height = width = 1
    return int(total)
