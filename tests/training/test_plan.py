"""RunPlan: a run's sizes, exact step count, checkpoint chunks and fit calls, from train.py's settings."""

import ast
import os

import pytest

from nfnet_keras.models import get_spec
from nfnet_keras.training.plan import (
    OTHER_KEYS,
    TRAINING_KEYS,
    FitCall,
    RunError,
    check_settings,
    config_differences,
    make_plan,
    run_config,
)

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


def test_a_run_stopped_mid_chunk_first_finishes_that_chunk():
    plan = _plan(steps=9, checkpoint_every=4)
    assert plan.fit_calls(3) == [FitCall(0, 1, 1, 3), FitCall(1, 2, 4, 4), FitCall(2, 3, 1, 8)]
    assert plan.fit_calls(6) == [FitCall(1, 2, 2, 6), FitCall(2, 3, 1, 8)]
    assert plan.fit_calls(8) == [FitCall(2, 3, 1, 8)]


def test_a_stop_inside_the_short_last_chunk_resumes_to_the_last_step():
    plan = _plan(steps=10, checkpoint_every=4)
    assert plan.fit_calls(9) == [FitCall(2, 3, 1, 9)]


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


def test_run_config_holds_the_training_flags_and_the_data_identity_not_the_other_flags():
    settings = {key: f"value of {key}" for key in TRAINING_KEYS + OTHER_KEYS}
    config = run_config(settings, 1234, ("cat", "dog"))
    expected = {key: f"value of {key}" for key in TRAINING_KEYS}
    assert config == dict(expected, dataset_examples=1234, class_names=["cat", "dog"])


def train_py_flags():
    """The flag names that train.py defines (read from its source: importing it would define them here)."""
    with open(os.path.join(os.path.dirname(__file__), "..", "..", "train.py")) as handle:
        tree = ast.parse(handle.read())
    return {
        node.args[1].value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "_define"
    }


def test_every_train_py_flag_either_changes_the_training_or_may_differ_on_resume():
    flags = train_py_flags()
    assert "variant" in flags and "verbose" in flags
    assert flags - set(TRAINING_KEYS) - set(OTHER_KEYS) == set()


def test_no_flag_both_changes_the_training_and_may_differ_on_resume():
    assert set(TRAINING_KEYS) & set(OTHER_KEYS) == set()


def test_configs_differ_only_in_the_keys_both_hold():
    stored = {"variant": "nano", "dataset": "folder:/a", "checkpoint_every": 5}
    assert config_differences(stored, {"variant": "nano", "class_names": ["cat"]}) == []
    assert config_differences(stored, {"variant": "micro"}) == ["--variant 'nano' there, 'micro' now"]


def test_a_validation_split_that_an_older_stored_config_does_not_record_differs_unless_unset():
    """Runs of the version before --validation_fraction evaluated on the dataset's own split (None now)."""
    assert config_differences({}, {"validation_fraction": None}) == []
    assert config_differences({}, {"validation_fraction": 0.1}) == [
        "--validation_fraction None there (not recorded), 0.1 now"
    ]


def test_differing_class_names_are_shown_by_their_first_difference_not_all_of_them():
    before = [f"class {i}" for i in range(1000)]
    now = [*before[:500], "other", *before[501:]]
    assert config_differences({"class_names": before}, {"class_names": now}) == [
        "class names: 1000 there, 1000 now, first different at 500: 'class 500' there, 'other' now"
    ]
