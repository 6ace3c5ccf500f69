"""The papers' ImageNet recipes as `train.py` flag values, one per model family (`--preset paper`).

Each recipe is DeepMind's experiment configuration for that family
(google-deepmind/deepmind-research `nfnets/`), in `train.py`'s terms: the
learning rate is per 256 images (`lr * global_batch_size / 256`), so DeepMind's
unscaled NF-RegNet rate of 0.4 at batch 1024 is 0.1 here.

| family | DeepMind's config | recipe |
|---|---|---|
| NFNet-F (`nfnet`, timm's `dm_nfnet`) | `experiment_nfnets.py` | batch 4096, 360 epochs, lr 0.1/256, AGC 0.01, decay 2e-5, EMA, RandAugment + MixUp + CutMix, stochastic depth 0.25, bf16 (SAM 0.05 for F6) |
| NF-RegNet (`nf_regnet`) | `experiment_nf_regnets.py` | batch 1024, 360 epochs, lr 0.1/256 (0.4 at 1024) cosine to 0.001, no AGC, decay 5e-5 + 1e-5 per level (B0 5e-5 ... B5 1e-4, B8 1.3e-4), EMA, MixUp + CutMix without RandAugment, stochastic depth 0.1, float32 |
| NF-ResNet (`nf_resnet`) | `experiment.py` (the ResNet baseline) | batch 1024, 90 epochs, lr 0.1/256, no AGC (the paper's Figure 2 adds it with `--clipping`), decay 1e-4, no EMA, no augmentation beyond crop and flip, stochastic depth 0, float32 |

DeepMind's NF-RegNet experiment lists decays for B0 to B5 only (its comment:
"5e-5 + 1e-5 * level"); B6 to B8 follow that rule here. timm's light models
(`timm_nfnet`) were trained with timm's own recipe, which `train.py` does not
reproduce: they have no paper preset.

Pure Python; imports without TensorFlow.
"""

from nfnet_keras.training.plan import RunError

__all__ = ["paper_preset"]

_NFNET = {
    "dataset": "tfds:imagenet2012",
    "global_batch_size": 4096,
    "epochs": 360,
    "learning_rate": 0.1,
    "final_learning_rate": 0.0,
    "warmup_epochs": 5.0,
    "clipping": 0.01,
    "weight_decay": 2e-5,
    "label_smoothing": 0.1,
    "ema_decay": 0.99999,
    "stochdepth_rate": 0.25,
    "mixed_precision": "bf16",
    "crop_area_min": 0.08,
    "randaugment": True,
    "mixup_cutmix": True,
}

_NF_REGNET = {
    "dataset": "tfds:imagenet2012",
    "global_batch_size": 1024,
    "epochs": 360,
    "learning_rate": 0.1,
    "final_learning_rate": 0.001,
    "warmup_epochs": 5.0,
    "clipping": 0.0,
    "label_smoothing": 0.1,
    "ema_decay": 0.99999,
    "stochdepth_rate": 0.1,
    "mixed_precision": "none",
    "crop_area_min": 0.08,
    "randaugment": False,
    "mixup_cutmix": True,
}

_NF_RESNET = {
    "dataset": "tfds:imagenet2012",
    "global_batch_size": 1024,
    "epochs": 90,
    "learning_rate": 0.1,
    "final_learning_rate": 0.0,
    "warmup_epochs": 5.0,
    "clipping": 0.0,
    "weight_decay": 1e-4,
    "label_smoothing": 0.1,
    "ema_decay": 0.0,
    "stochdepth_rate": 0.0,
    "mixed_precision": "none",
    "crop_area_min": 0.08,
    "randaugment": False,
    "mixup_cutmix": False,
}


def _nf_regnet_weight_decay(variant):
    level = int(variant[1:])  # "B0" ... "B8"
    return round(5e-5 + 1e-5 * level, 10)


def paper_preset(spec):
    """The flag values of the paper's recipe for the model of `spec` (a `registry.ModelSpec`).

    Raises:
        RunError: for a family without a published recipe (timm's light models).
    """
    if spec.family in ("nfnet", "timm_dm_nfnet"):
        preset = dict(_NFNET)
        if spec.variant == "F6":
            preset["sam_rho"] = 0.05  # DeepMind's F6 checkpoint was trained with SAM
        return preset
    if spec.family == "nf_regnet":
        return dict(_NF_REGNET, weight_decay=_nf_regnet_weight_decay(spec.variant))
    if spec.family == "nf_resnet":
        return dict(_NF_RESNET)
    raise RunError(
        f"--preset paper: {spec.name} was trained with timm's own recipe, which train.py does not reproduce; "
        "set the flags yourself"
    )
