"""DeepMind's stage loop: the `NFBlock`s of NFNet-F, NF-RegNet and NF-ResNet with their signal bookkeeping."""

import math

import keras

from nfnet_keras.models.layers import NFBlock

__all__ = ["nf_stages"]


def nf_stages(x, channels, stages, *, alpha, stochdepth_rate, seed, remat, first_block=None, **block_arguments):
    """Stacks DeepMind's residual stages, as its three model files do.

    Each block's input is divided by the expected standard deviation of the
    signal (`beta = 1 / expected_std`), which grows by `alpha` per block
    (`std^2 += alpha^2`) and restarts at 1 after each stage's first block,
    where the shortcut is a fresh projection. Block i of N drops its residual
    branch with rate `stochdepth_rate * i / N`.

    Args:
        x: the stem's output.
        channels: its channel count.
        stages: `(out_channels, depth, stride)` per stage; the stride applies
            to the stage's first block.
        alpha: the residual branch scale.
        stochdepth_rate: the last block's stochastic-depth rate.
        seed: optional seed; block i uses `seed + i`.
        remat: recompute each residual branch in the backward pass.
        first_block: `NFBlock` arguments that differ for the very first block
            (NF-RegNet's `expansion=1`).
        **block_arguments: the `NFBlock` arguments every block shares.

    Returns:
        `(x, channels)`: the last stage's output and its channels. The output
        of stage k (1-based) is also the layer `stage{k}`, block i the layer
        `nf_block_{i}`.
    """
    num_blocks = sum(depth for _, depth, _ in stages)
    expected_std = 1.0
    index = 0
    for stage, (out_channels, depth, stride) in enumerate(stages):
        for j in range(depth):
            arguments = dict(block_arguments, **first_block) if index == 0 and first_block else block_arguments
            x = NFBlock(
                channels,
                out_channels,
                stride=stride if j == 0 else 1,
                beta=1.0 / expected_std,
                alpha=alpha,
                stochdepth_rate=stochdepth_rate * index / num_blocks,
                seed=None if seed is None else seed + index,
                remat=remat,
                name=f"nf_block_{index}",
                **arguments,
            )(x)
            if j == 0:
                expected_std = 1.0
            expected_std = math.sqrt(expected_std**2 + alpha**2)
            channels = out_channels
            index += 1
        x = keras.layers.Identity(name=f"stage{stage + 1}")(x)
    return x, channels
