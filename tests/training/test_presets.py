"""`--preset paper`: each family's recipe as DeepMind's experiment configuration states it."""

import subprocess
import sys

import pytest

from nfnet_keras.models import registry
from nfnet_keras.training.plan import RunError
from nfnet_keras.training.presets import paper_preset
from nfnet_keras.training.schedules import WarmupCosineDecay
from support import REPO_ROOT


def test_nfnet_recipe_is_experiment_nfnets():
    preset = paper_preset(registry.get_spec("nfnet_f0"))
    assert (preset["global_batch_size"], preset["epochs"], preset["learning_rate"]) == (4096, 360, 0.1)
    assert preset["clipping"] == 0.01 and preset["weight_decay"] == 2e-5 and preset["randaugment"]
    assert "sam_rho" not in preset


def test_f6_is_trained_with_sam_as_deepminds_checkpoint_was():
    assert paper_preset(registry.get_spec("nfnet_f6"))["sam_rho"] == 0.05


def test_nf_regnet_recipe_is_experiment_nf_regnets_peak_lr_0_4_at_batch_1024_cosine_to_0_001():
    preset = paper_preset(registry.get_spec("nf_regnet_b0"))
    schedule = WarmupCosineDecay(
        base_learning_rate=preset["learning_rate"],
        global_batch_size=preset["global_batch_size"],
        steps_per_epoch=1251,
        total_steps=1251 * preset["epochs"],
        warmup_epochs=preset["warmup_epochs"],
        min_value=preset["final_learning_rate"],
    )
    assert schedule.peak_value == pytest.approx(0.4)
    assert float(schedule(1251 * 360)) == pytest.approx(0.001)
    assert preset["clipping"] == 0.0 and not preset["randaugment"] and preset["mixup_cutmix"]
    assert preset["stochdepth_rate"] == 0.1 and preset["ema_decay"] == 0.99999


@pytest.mark.parametrize(
    "variant, decay", [("b0", 5e-5), ("b1", 6e-5), ("b3", 8e-5), ("b5", 1e-4), ("b6", 1.1e-4), ("b8", 1.3e-4)]
)
def test_nf_regnet_weight_decay_is_5e_5_plus_1e_5_per_level(variant, decay):
    assert paper_preset(registry.get_spec(f"nf_regnet_{variant}"))["weight_decay"] == pytest.approx(decay)


def test_nf_resnet_recipe_is_the_resnet_baseline_of_experiment_py():
    preset = paper_preset(registry.get_spec("nf_resnet50"))
    assert (preset["global_batch_size"], preset["epochs"], preset["weight_decay"]) == (1024, 90, 1e-4)
    assert preset["ema_decay"] == 0.0 and not preset["mixup_cutmix"] and preset["clipping"] == 0.0


def test_timm_models_have_no_paper_recipe_and_say_so_in_one_line():
    with pytest.raises(RunError, match="timm's own recipe") as caught:
        paper_preset(registry.get_spec("timm/eca_nfnet_l0"))
    assert "\n" not in str(caught.value)


def test_train_py_applies_the_variants_family_recipe_under_flags_given_explicitly():
    program = (
        "import sys; sys.argv = ['train.py', '--preset=paper', '--variant=nf_regnet_b2', '--epochs=3']\n"
        "import train\n"
        "train.FLAGS(sys.argv)\n"
        "s = train.resolve_settings()\n"
        "print(s['weight_decay'], s['clipping'], s['epochs'], s['randaugment'], s['final_learning_rate'])\n"
    )
    result = subprocess.run([sys.executable, "-c", program], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[-5:] == ["7e-05", "0.0", "3", "False", "0.001"]
