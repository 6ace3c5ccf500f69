"""Float64 numpy forward passes of DeepMind's NF-ResNet and NF-RegNet (evaluation mode).

Written from DeepMind's `nfnets/nf_resnet.py`, `nf_regnet.py` and `base.py`, not
from nfnet_keras, so the tests compare two independent implementations. Each
function reads a Haiku-layout tree `{module: {param: array}}` (conv `w` HWIO with
`gain`, `bias`; linear `w` (in, out), `b`; block `skip_gain`) and returns
`{"logits", "pool"}` for NHWC images. Sizes are small in the tests: the
convolutions are plain einsums over sliding windows.
"""

import functools

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

# DeepMind's base.nonlinearities: f(x) * gamma.
_ACTIVATIONS = {
    "relu": lambda x: np.maximum(x, 0.0) * 1.7139588594436646,
    "silu": lambda x: x / (1.0 + np.exp(-x)) * 1.7881293296813965,
}


def _same_padding(size, kernel, stride):
    total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _pad(x, kernel, stride, value):
    pads = [(0, 0), _same_padding(x.shape[1], kernel, stride), _same_padding(x.shape[2], kernel, stride), (0, 0)]
    return np.pad(x, pads, constant_values=value)


def _windows(x, kernel, stride, value=0.0):
    """(N, Ho, Wo, C, k, k) windows of a SAME-padded input."""
    return sliding_window_view(_pad(x, kernel, stride, value), (kernel, kernel), axis=(1, 2))[:, ::stride, ::stride]


def ws_conv(x, p, stride=1, groups=1):
    """WSConv2D: scaled weight standardisation with the 1e-4 floor on var * fan_in, SAME, always a bias."""
    w = np.asarray(p["w"], np.float64)
    fan_in = np.prod(w.shape[:-1])
    mean = w.mean(axis=(0, 1, 2), keepdims=True)
    var = w.var(axis=(0, 1, 2), keepdims=True)
    scale = 1.0 / np.sqrt(np.maximum(var * fan_in, 1e-4)) * p["gain"]
    w = w * scale - mean * scale
    kernel, _, group_in, out = w.shape
    windows = _windows(x, kernel, stride)
    group_out = out // groups
    outs = [
        np.einsum(
            "nhwcij,ijco->nhwo",
            windows[:, :, :, g * group_in : (g + 1) * group_in],
            w[..., g * group_out : (g + 1) * group_out],
        )
        for g in range(groups)
    ]
    return np.concatenate(outs, axis=-1) + p["bias"]


def avg_pool_2x2(x):
    """hk.avg_pool(2, 2, 'SAME'): the mean of the valid elements of each window."""
    total = _windows(x, 2, 2).sum(axis=(-1, -2))
    count = _windows(np.ones_like(x[..., :1]), 2, 2).sum(axis=(-1, -2))
    return total / count


def max_pool_3x3(x):
    """hk.max_pool(3, 2, 'SAME')."""
    return _windows(x, 3, 2, value=-np.inf).max(axis=(-1, -2))


def squeeze_excite(x, fc0, fc1):
    hidden = np.maximum(x.mean(axis=(1, 2)) @ fc0["w"] + fc0["b"], 0.0)
    return (1.0 / (1.0 + np.exp(-(hidden @ fc1["w"] + fc1["b"]))))[:, None, None, :]


def _block_params(params, root, index):
    """`{submodule: params}` of block `index` (`""`: the block's own `skip_gain`)."""
    module = f"{root}/~/nf_block" + (f"_{index}" if index else "")
    return {
        key.removeprefix(module).removeprefix("/~/"): value
        for key, value in params.items()
        if key == module or key.startswith(module + "/~/")
    }


def _block_conv(block, name, x, stride=1, groups=1):
    return ws_conv(x, block[name], stride=stride, groups=groups)


def _head(params, root, pool):
    fc = params[f"{root}/~/linear"]
    return {"pool": pool, "logits": pool @ fc["w"] + fc["b"]}


def nf_resnet(params, x, depths, width=4, alpha=0.2, activation="relu", use_se=False):
    """DeepMind's `NF_ResNet(...)(x, is_training=False)`."""
    root, act = "NF_ResNet", _ACTIVATIONS[activation]
    out = max_pool_3x3(ws_conv(np.asarray(x, np.float64), params[f"{root}/~/initial_conv"], stride=2))
    channels, index, expected_std = 16 * width, 0, 1.0
    for stage, depth in enumerate(depths):
        out_channels = (64, 128, 256, 512)[stage] * width
        for j in range(depth):
            stride = (1, 2, 2, 2)[stage] if j == 0 else 1
            block = _block_params(params, root, index)
            conv = functools.partial(_block_conv, block)
            h = act(out) * (1.0 / expected_std)
            shortcut = conv("conv_shortcut", h, stride) if stride > 1 or channels != out_channels else out
            h = conv("conv2", act(conv("conv1", act(conv("conv0", h)), stride)))
            if use_se:
                h = 2 * squeeze_excite(h, block["squeeze_excite/~/linear"], block["squeeze_excite/~/linear_1"]) * h
            out = h * block[""]["skip_gain"] * alpha + shortcut
            expected_std = np.sqrt((1.0 if j == 0 else expected_std) ** 2 + alpha**2)
            channels, index = out_channels, index + 1
    return _head(params, root, act(out).mean(axis=(1, 2)))


def nf_regnet(params, x, widths, depths, width=0.75, expansion=2.25, group_size=8, alpha=0.2, activation="silu"):
    """DeepMind's `NF_RegNet(..., activation=activation)(x, is_training=False)`."""
    root, act = "NF_RegNet", _ACTIVATIONS[activation]
    channels = int(widths[0] * width)
    out = ws_conv(np.asarray(x, np.float64), params[f"{root}/~/initial_conv"], stride=2)
    index, expected_std = 0, 1.0
    for block_width, depth in zip(widths, depths):
        out_channels = int(block_width * width)
        for j in range(depth):
            stride = 2 if j == 0 else 1
            groups = int(channels * (1 if index == 0 else expansion)) // group_size
            block = _block_params(params, root, index)
            conv = functools.partial(_block_conv, block)
            h = act(out) * (1.0 / expected_std)
            if stride > 1:
                shortcut = conv("conv_shortcut", avg_pool_2x2(h))
            elif channels != out_channels:
                shortcut = conv("conv_shortcut", h)
            else:
                shortcut = out
            h = conv("conv1", act(conv("conv0", h)), stride, groups)
            se = squeeze_excite(h, block["squeeze_excite/~/linear"], block["squeeze_excite/~/linear_1"])
            h = conv("conv2", act(2 * se * h))
            out = h * block[""]["skip_gain"] * alpha + shortcut
            expected_std = np.sqrt((1.0 if j == 0 else expected_std) ** 2 + alpha**2)
            channels, index = out_channels, index + 1
    out = act(ws_conv(out, params[f"{root}/~/final_conv"]))
    return _head(params, root, out.mean(axis=(1, 2)))


def nf_regnet_count_flops(widths, depths, size, width=0.75, expansion=2.25, group_size=8, se_ratio=0.5, classes=1000):
    """DeepMind's `NF_RegNet.count_flops(size, size)` total: MACs of the convs, SE linears and classifier.

    Like DeepMind's, it halves the map size as a float at each stride, so it counts
    whole pixels only where the size divides by 32.
    """

    def conv(in_ch, out_ch, kernel, h, stride=1, groups=1):
        return out_ch * h * h / stride**2 * (in_ch / groups) * kernel * kernel

    channels = int(widths[0] * width)
    flops = conv(3, channels, 3, size, 2)
    h, index = size / 2, 0
    for block_width, depth in zip(widths, depths):
        out_channels = int(block_width * width)
        for j in range(depth):
            stride = 2 if j == 0 else 1
            groups = int(channels * (1 if index == 0 else expansion)) // group_size
            mid = groups * group_size
            hidden = max(1, int(mid * se_ratio))
            flops += conv(channels, mid, 1, h) + conv(mid, mid, 3, h, stride, groups)
            h /= stride
            if stride > 1 or channels != out_channels:
                flops += conv(channels, out_channels, 1, h)
            flops += hidden * mid * 2 + conv(mid, out_channels, 1, h)
            channels, index = out_channels, index + 1
    final = int(1280 * channels // 440)
    return flops + conv(channels, final, 1, h) + final * classes
