"""The NFNet variant table: the one place where architectures are defined.

Every model in the package is described by a plain dict of architecture
hyper-parameters (see `BASE_CONFIG`).  The F-series values are DeepMind's
(`nfnets/base.py`, `nfnet_params`); the "+" variants widen the stages to
(384, 768, 2048, 2048).  The small configurations at the end are ours: they keep
every structural feature of an NFNet (stem, transition and identity blocks,
grouped 3x3 convs, SE, skip gains, final conv) at a size that trains on a CPU.
"""

import copy

# Defaults shared by every F variant (DeepMind's NFNet constructor defaults).
BASE_CONFIG = {
    "widths": (256, 512, 1536, 1536),
    "depths": (1, 2, 6, 3),
    "strides": (1, 2, 2, 2),
    "stem_widths": (16, 32, 64),  # stem_conv3 has widths[0] // 2 channels
    "group_width": 128,
    "expansion": 0.5,
    "big_width": True,
    "alpha": 0.2,
    "se_ratio": 0.5,
    "final_conv_mult": 2.0,
    "activation": "gelu",
    "use_two_convs": True,
    "drop_rate": 0.2,
    "train_imsize": 192,
    "test_imsize": 256,
    # Evaluation: squash-resize to test_imsize + eval_padding, centre crop test_imsize.
    "eval_padding": 32,
    "eval_resize": "squash",
    # RandAugment (num_layers, magnitude): DeepMind's 'cutmix_mixup_randaugment_NNN'.
    "randaugment": (4, 5),
}

PLUS_WIDTHS = (384, 768, 2048, 2048)

# name: depths, train/test resolution, dropout, RandAugment, paper top-1 (None: no weights).
_F_TABLE = {
    "F0": ((1, 2, 6, 3), 192, 256, 0.2, (4, 5), 83.6),
    "F1": ((2, 4, 12, 6), 224, 320, 0.3, (4, 10), 84.7),
    "F2": ((3, 6, 18, 9), 256, 352, 0.4, (4, 10), 85.1),
    "F3": ((4, 8, 24, 12), 320, 416, 0.4, (4, 15), 85.7),
    "F4": ((5, 10, 30, 15), 384, 512, 0.5, (4, 15), 85.9),
    "F5": ((6, 12, 36, 18), 416, 544, 0.5, (4, 15), 86.0),
    "F6": ((7, 14, 42, 21), 448, 576, 0.5, (4, 15), 86.5),
    "F7": ((8, 16, 48, 24), 480, 608, 0.5, (4, 15), None),
}

# Variants with DeepMind ImageNet checkpoints (F6 was trained with SAM).
PRETRAINED_VARIANTS = ("F0", "F1", "F2", "F3", "F4", "F5", "F6")

VARIANTS = {}
TOP1 = {}
for _name, (_depths, _train, _test, _drop, _ra, _top1) in _F_TABLE.items():
    VARIANTS[_name] = dict(
        BASE_CONFIG, depths=_depths, train_imsize=_train, test_imsize=_test, drop_rate=_drop, randaugment=_ra
    )
    VARIANTS[_name + "+"] = dict(VARIANTS[_name], widths=PLUS_WIDTHS)
    TOP1[_name] = _top1

# Small configurations for tests, CPU demos and the default `train.py` run, at 32 px:
# name: widths, depths, stem widths, group width, dropout.
_SMALL_TABLE = {
    "nano": ((32, 64, 96, 128), (1, 1, 1, 1), (8, 16, 32), 16, 0.0),
    "micro": ((64, 128, 256, 256), (1, 1, 2, 1), (16, 32, 64), 32, 0.2),
}
for _name, (_widths, _depths, _stem, _group, _drop) in _SMALL_TABLE.items():
    VARIANTS[_name] = dict(
        BASE_CONFIG,
        widths=_widths,
        depths=_depths,
        stem_widths=_stem,
        group_width=_group,
        drop_rate=_drop,
        train_imsize=32,
        test_imsize=32,
        eval_padding=4,  # DeepMind's 32 px is sized for ImageNet; at 32 px it would keep the centre half
        randaugment=(2, 5),
    )

# Keys a caller may override when building a model.
ARCH_KEYS = (
    "widths",
    "depths",
    "strides",
    "stem_widths",
    "group_width",
    "expansion",
    "big_width",
    "alpha",
    "se_ratio",
    "final_conv_mult",
    "activation",
    "use_two_convs",
    "drop_rate",
)
CONFIG_KEYS = ARCH_KEYS + ("train_imsize", "test_imsize", "eval_padding", "eval_resize", "randaugment")


def canonical_name(variant):
    """Normalises user spellings: 'f0' -> 'F0', 'F0plus'/'f0+' -> 'F0+', 'nano'."""
    if not isinstance(variant, str):
        raise TypeError(f"variant must be a string or a dict, got {type(variant).__name__}")
    name = variant.strip()
    if name.lower() in ("nano", "micro"):
        return name.lower()
    name = name.upper()
    if name.endswith("PLUS"):
        name = name[: -len("PLUS")] + "+"
    return name


def get_config(variant, **overrides):
    """Returns the architecture dict of `variant` with `overrides` applied.

    Args:
        variant: a name from `VARIANTS` (case-insensitive, 'F0+' or 'F0plus'),
            or a dict of configuration keys (missing keys take `BASE_CONFIG`
            values) for a custom architecture.
        **overrides: any key of `CONFIG_KEYS`; `None` values are ignored.

    Raises:
        ValueError: for an unknown variant or key, or an invalid value.
    """
    if isinstance(variant, dict):
        config = dict(copy.deepcopy(BASE_CONFIG))
        unknown = sorted(set(variant) - set(CONFIG_KEYS))
        if unknown:
            raise ValueError(f"Unknown NFNet configuration keys {unknown}; accepted: {list(CONFIG_KEYS)}")
        config.update(variant)
    else:
        name = canonical_name(variant)
        if name not in VARIANTS:
            raise ValueError(
                f"Unknown NFNet variant {variant!r}. Choose one of {sorted(VARIANTS, key=_sort_key)} "
                "or pass a dict of configuration keys."
            )
        config = dict(copy.deepcopy(VARIANTS[name]))
    unknown = sorted(set(overrides) - set(CONFIG_KEYS))
    if unknown:
        raise ValueError(f"Unknown NFNet configuration keys {unknown}; accepted: {list(CONFIG_KEYS)}")
    config.update({k: v for k, v in overrides.items() if v is not None})
    _validate(config)
    return config


def _sort_key(name):
    return (0, int(name[1]), name) if name[0] == "F" else (1, 0, name)


def _validate(config):
    for key in ("widths", "depths", "strides"):
        config[key] = tuple(int(v) for v in config[key])
    config["stem_widths"] = tuple(int(v) for v in config["stem_widths"])
    if not (len(config["widths"]) == len(config["depths"]) == len(config["strides"])):
        raise ValueError(
            "widths, depths and strides must have the same length, got "
            f"{config['widths']}, {config['depths']}, {config['strides']}"
        )
    if len(config["stem_widths"]) != 3:
        raise ValueError(f"stem_widths must have 3 entries (stem_conv0..2), got {config['stem_widths']}")
    if any(d < 1 for d in config["depths"]):
        raise ValueError(f"every stage needs at least one block, got depths {config['depths']}")
    for width in config["widths"]:
        # Checks the big_width bottleneck; NFBlock re-checks the exact one it builds.
        mid = int(width * config["expansion"])
        if mid // config["group_width"] < 1:
            raise ValueError(
                f"stage width {width} with expansion {config['expansion']} gives a bottleneck of {mid} "
                f"channels, less than one group of group_width={config['group_width']}"
            )
    if not 0.0 <= float(config["drop_rate"]) < 1.0:
        raise ValueError(f"drop_rate must be in [0, 1), got {config['drop_rate']}")


def variant_names(pretrained_only=False):
    """The F and F+ variant names, in order."""
    names = [n for n in VARIANTS if n[0] == "F"]
    names.sort(key=lambda n: (n.endswith("+"), int(n[1])))
    if pretrained_only:
        names = [n for n in names if n in PRETRAINED_VARIANTS]
    return names
