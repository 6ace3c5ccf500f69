"""Multiply-accumulate counter with DeepMind's convention (convs and linears only)."""

import math

import keras

from nfnet_keras.models.layers import (
    EfficientChannelAttention,
    NFBlock,
    NormFreeBlock,
    ScaledStdConv2D,
    SqueezeExcite,
    SymmetricMaxPool2D,
    WSConv2D,
)

_SPATIAL_POOLS = (keras.layers.AveragePooling2D, keras.layers.MaxPooling2D)
_GLOBAL_POOLS = (keras.layers.GlobalAveragePooling2D, keras.layers.GlobalMaxPooling2D)


def count_macs(model, image_size=None):
    """Counts the multiply-accumulates of one forward pass on one image.

    DeepMind's `count_flops` (and the NFNet README's "FLOPs") count the MACs of
    convolutions and linear layers only; this counter does the same, so
    NFNet-F0 at 256 px gives 12.38 G. Feature maps have their real sizes (SAME
    padding for DeepMind's layers, timm's symmetric padding for timm's);
    DeepMind's counter halves sizes as floats, so the two agree where the input
    size divides by the total stride (NF-RegNet B2 and B5-B7 at their test
    sizes do not). Attention counts its linears (SE) or its 1-D conv (ECA),
    not the gating product.

    timm's published GMACs (fvcore) also charge 5 FLOPs per conv weight for
    the standardisation `ScaledStdConv2d` recomputes at every call; this
    counter leaves that out (folding removes it, and DeepMind's convention has
    no such term), so timm's `eca_nfnet_l0` at 224 px gives 4.24 G here and
    4.24 + 0.11 = 4.35 G in timm's results.

    Args:
        model: any model built by this package (NFNet, NF-RegNet, NF-ResNet,
            timm's NFNets, NF-RegNets and NF-ResNets), folded or not.
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
        elif isinstance(layer, ScaledStdConv2D):
            macs, (height, width) = _std_conv_macs(layer, height, width)
            total += macs
        elif isinstance(layer, NormFreeBlock):
            macs, (height, width) = _norm_free_block_macs(layer, height, width)
            total += macs
        elif isinstance(layer, keras.layers.Dense):
            total += layer.kernel.shape[0] * layer.kernel.shape[1]
        elif isinstance(layer, _SPATIAL_POOLS):
            height, width = -(-height // layer.strides[0]), -(-width // layer.strides[1])
        elif isinstance(layer, SymmetricMaxPool2D):
            height, width = layer.output_size(height), layer.output_size(width)
        elif isinstance(layer, _GLOBAL_POOLS):
            height = width = 1
    return int(total)


def _std_conv_macs(conv, height, width):
    """MACs of a `ScaledStdConv2D` (grouped or not) and its output size, with its symmetric padding."""
    out_h, out_w = (
        (size + 2 * pad - k) // stride + 1
        for size, k, stride, pad in zip((height, width), conv.kernel_size, conv.strides, conv.padding)
    )
    # kernel.shape[2] is in_channels / groups: each output sees only its group.
    macs = out_h * out_w * conv.filters * math.prod(conv.kernel_size) * conv.kernel.shape[2]
    return macs, (out_h, out_w)


def _norm_free_block_macs(block, height, width):
    """MACs of a timm `NormFreeBlock` (its convs and attention) and its output size."""
    macs, (h, w) = _std_conv_macs(block.conv1, height, width)
    m, (h, w) = _std_conv_macs(block.conv2, h, w)
    macs += m
    for conv in (block.conv2b, block.conv3):
        if conv is not None:
            macs += _std_conv_macs(conv, h, w)[0]
    if block.downsample_conv is not None:
        # The shortcut's 1x1 conv sees the pooled map (2x2 windows, ceil) at stride 2.
        pooled = (height, width) if block.downsample_pool is None else (-(-height // 2), -(-width // 2))
        macs += _std_conv_macs(block.downsample_conv, *pooled)[0]
    # The gate after conv2 (reg=True) sees the mid channels, the one after conv3 the output's.
    for gate in (block.attn, block.attn_last):
        if isinstance(gate, SqueezeExcite):
            macs += gate.count_macs()
        elif isinstance(gate, EfficientChannelAttention):
            # One k-tap 1-D conv over the pooled channels.
            macs += gate.kernel_size * gate.channels
    return macs, (h, w)
