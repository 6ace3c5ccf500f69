"""RunPlan: a run's sizes, exact step count, checkpoint chunks and fit calls, from train.py's settings."""

import pytest

from nfnet_keras.models import get_spec
from nfnet_keras.training.plan import RUN_KEYS, FitCall, RunError, check_settings, make_plan, run_config

# train.py's defaults for the keys the plan reads.
DEFAULTS = {
    "variant": "micro",
    "global_batch_size": 64,
    "epochs": 20,
    "steps": None,
    "checkpoint_every": None,
    "eval_batch_size": None,
    "train_image_size": None,
    "eval_image_size": None,
    "cpu_devices": None,
    "seed": 0,
    "verbose": 1,
    "warmup_epochs": 1.0,
}


def _plan(num_train=64 * 100, variant="micro", **changes):
    settings = dict(DEFAULTS, variant=variant, **changes)
    return make_plan(settings, get_spec(variant), num_train)


def test_steps_not_a_multiple_of_the_chunk_trains_exactly_those_steps():
    plan = _plan(steps=100, checkpoint_every=78)
    assert plan.total_steps == 100 and plan.num_chunks == 2
    assert plan.fit_calls(0) == [FitCall(0, 1, 78, 0), FitCall(1, 2, 22, 78)]
    assert [plan.chunk_end(i) for i in range(plan.num_chunks)] == [78, 100]


def test_steps_a_multiple_of_the_chunk_is_one_fit_call():
    plan = _plan(steps=6, checkpoint_every=2)
    assert plan.fit_calls(0) == [FitCall(0, 3, 2, 0)]


def test_a_resumed_run_continues_at_its_checkpoint():
    plan = _plan(steps=5, checkpoint_every=2)
    assert plan.fit_calls(2) == [FitCall(1, 2, 2, 2), FitCall(2, 3, 1, 4)]
    assert plan.fit_calls(4) == [FitCall(2, 3, 1, 4)]
    assert plan.fit_calls(5) == []


def test_epochs_train_whole_epochs_exactly():
    plan = _plan(num_train=1000, global_batch_size=64, epochs=3)  # 15 full batches per epoch
    assert plan.steps_per_epoch == 15 and plan.total_steps == 45 and plan.chunk == 15


def test_default_chunk_is_one_epoch_at_most_1000_steps_and_never_longer_than_the_run():
    assert _plan(num_train=64 * 5000, epochs=1).chunk == 1000
    assert _plan(num_train=64 * 100, steps=7).chunk == 7


def test_warmup_that_would_not_end_before_the_last_step_is_shortened_to_half_the_run():
    plan = _plan(num_train=64 * 100, steps=50, warmup_epochs=1.0)
    assert plan.warmup_shortened and plan.warmup_epochs == pytest.approx(0.25)
    assert not _plan(num_train=64 * 100, steps=500).warmup_shortened


@pytest.mark.parametrize("variant", ["nfnet_micro", "micro", "MICRO"])
def test_any_registry_spelling_gives_the_variant_sizes(variant):
    plan = _plan(variant=variant)
    assert plan.spec.name == "nfnet_micro"
    assert (plan.train_size, plan.eval_size) == (plan.spec.config["train_imsize"], plan.spec.config["test_imsize"])


def test_image_size_flags_override_the_variant_sizes():
    plan = _plan(train_image_size=48, eval_image_size=64)
    assert (plan.train_size, plan.eval_size) == (48, 64)


def test_fewer_images_than_one_batch_is_refused():
    with pytest.raises(RunError, match="10 training images are fewer than one batch of 64"):
        _plan(num_train=10)


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("steps", 0, "--steps must be a positive integer, got 0"),
        ("global_batch_size", -8, "--global_batch_size must be a positive integer, got -8"),
        ("checkpoint_every", 2.5, "--checkpoint_every must be a positive integer, got 2.5"),
        ("seed", -1, "--seed must be a non-negative integer, got -1"),
        ("cpu_devices", True, "--cpu_devices must be a positive integer, got True"),
    ],
)
def test_integer_settings_out_of_range_are_refused_by_flag_name(name, value, message):
    with pytest.raises(RunError, match=message):
        check_settings(dict(DEFAULTS, **{name: value}))


def test_run_config_holds_the_run_keys_and_the_dataset_size():
    settings = {key: f"value of {key}" for key in RUN_KEYS}
    config = run_config(dict(settings, model_dir="elsewhere"), 1234)
    assert config == dict(settings, dataset_examples=1234)
