"""NFNetSGD / AGC optimizers / weight EMA against numpy references (single device)."""

import contextlib

import numpy as np
import pytest

import keras
from keras import ops

from support import agc_models
from support import agc_reference as ref
from nfnet_keras.training import optimizers
from nfnet_keras.training.agc import agc_clip_fraction
from nfnet_keras.training.losses import NFNetCrossEntropy
from nfnet_keras.training.optimizers import AGCAdamW, AGCSGD, NFNetSGD, with_agc
from nfnet_keras.training.schedules import WarmupCosineDecay

# Variable paths as in the NFNet model; flags: (clipped by AGC, weight decay).
SPECS = [
    ("stem_conv0/kernel", (3, 3, 3, 8), True, True),
    ("stem_conv0/gain", (8,), True, False),
    ("stem_conv0/bias", (8,), True, False),
    ("nf_block_0/skip_gain", (), True, False),
    ("nf_block_0/conv1/kernel", (3, 3, 4, 8), True, True),  # grouped conv kernel
    ("nf_block_0/squeeze_excite/linear/kernel", (8, 4), True, True),
    ("nf_block_0/squeeze_excite/linear/bias", (4,), True, False),
    ("predictions/kernel", (8, 5), False, True),
    ("predictions/bias", (5,), True, False),
]
N = 5  # steps


def _variables(seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for path, shape, _, _ in SPECS:
        scope, name = path.rsplit("/", 1)
        value = rng.standard_normal(shape).astype("float32")
        if name == "skip_gain":
            value = np.full(shape, 0.2, "float32")
        with contextlib.ExitStack() as stack:
            for part in scope.split("/"):
                stack.enter_context(keras.name_scope(part))
            out.append(keras.Variable(value, name=name))
    assert [v.path for v in out] == [s[0] for s in SPECS]
    return out


def _grads(variables, step, seed=1):
    """Gradients with unit norms between 0.2x and 5x the AGC threshold."""
    rng = np.random.default_rng(seed + 100 * step)
    grads = []
    for v in variables:
        p = ops.convert_to_numpy(v)
        raw = rng.standard_normal(p.shape)
        threshold = 0.01 * np.maximum(ref.unitwise_norm(p), 1e-3)
        norm = ref.unitwise_norm(raw)
        factor = np.exp(rng.uniform(np.log(0.2), np.log(5.0), size=np.shape(norm)))
        grads.append((raw / norm * threshold * factor).astype("float32"))
    return grads


def _schedule():
    # lr(0) = 0, warmup to 1.0 at step 2.5, then cosine: 5 different values.
    return WarmupCosineDecay(base_learning_rate=1.0, global_batch_size=256, total_steps=8, warmup_steps=2.5)


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30)


def _run_against_reference(mode, nesterov=True, wd=2e-5):
    variables = _variables()
    schedule = _schedule()
    opt = NFNetSGD(learning_rate=schedule, weight_decay=wd, weight_decay_mode=mode, nesterov=nesterov)
    params = [ops.convert_to_numpy(v).astype(np.float64) for v in variables]
    bufs = [np.zeros_like(p) for p in params]
    lrs, triggered = [], 0
    for t in range(N):
        grads = _grads(variables, t)
        lr = float(ops.convert_to_numpy(schedule(t)))
        lrs.append(lr)
        # The reference consumes the same float32 inputs, computes in float64.
        current = [ops.convert_to_numpy(v) for v in variables]
        for i, (_, _, clip, decay) in enumerate(SPECS):
            if clip:
                triggered += int(np.sum(ref.agc(grads[i], current[i])[1]))
            params[i], bufs[i] = ref.nfnet_sgd_step(
                current[i], grads[i], bufs[i], lr, clip=clip, decay=decay, wd=wd,
                nesterov=nesterov, mode=mode,
            )
        opt.apply(grads, variables)
        for i, v in enumerate(variables):
            assert _rel(ops.convert_to_numpy(v), params[i]) <= 1e-6, (t, SPECS[i][0])
            assert _rel(ops.convert_to_numpy(opt.momentums[i]), bufs[i]) <= 1e-5, (t, SPECS[i][0])
    assert len(set(lrs)) == N and lrs[0] == 0.0
    assert triggered > 0
    return opt


def test_nfnet_sgd_matches_numpy_reference_coupled_decay():
    opt = _run_against_reference("coupled")
    assert int(ops.convert_to_numpy(opt.iterations)) == N


def test_nfnet_sgd_matches_numpy_reference_decoupled_decay():
    _run_against_reference("decoupled")


def test_nfnet_sgd_matches_numpy_reference_without_nesterov():
    _run_against_reference("coupled", nesterov=False)


def test_keras_weight_decay_stays_none():
    opt = NFNetSGD(weight_decay=2e-5)
    assert opt.weight_decay is None
    assert opt.nf_weight_decay == 2e-5
    assert opt.get_config()["weight_decay"] == 2e-5


def test_excluded_classifier_kernel_is_not_clipped():
    variables = _variables()
    grads = [g * 100.0 for g in _grads(variables, 0)]  # far above every threshold
    before = [ops.convert_to_numpy(v) for v in variables]
    opt = NFNetSGD(learning_rate=0.1, weight_decay=0.0)
    opt.apply(grads, variables)
    counts = ops.convert_to_numpy(opt.agc_clipped_units)
    for i, (path, shape, clip, _) in enumerate(SPECS):
        # First step, no decay: p -= lr * (1 + momentum) * processed_grad.
        processed = ref.agc(grads[i], before[i])[0] if clip else grads[i]
        expected = before[i] - 0.1 * 1.9 * processed
        assert _rel(ops.convert_to_numpy(variables[i]), expected) <= 1e-6, path
        assert (counts[i] > 0) == clip, path
    assert opt._agc_flags == [s[2] for s in SPECS]


def test_custom_agc_exclude_patterns():
    variables = _variables()
    opt = NFNetSGD(agc_exclude=["squeeze_excite", "predictions"])
    opt.build(variables)
    assert opt._agc_flags == [
        not ("squeeze_excite" in p or "predictions" in p) for p, *_ in SPECS
    ]


def test_gains_biases_and_skip_gains_get_no_weight_decay():
    variables = _variables()
    before = [ops.convert_to_numpy(v) for v in variables]
    zero_grads = [np.zeros(s, "float32") for _, s, _, _ in SPECS]
    opt = NFNetSGD(learning_rate=0.5, weight_decay=1e-2)
    opt.apply(zero_grads, variables)
    for i, (path, _, _, decay) in enumerate(SPECS):
        after = ops.convert_to_numpy(variables[i])
        if decay:
            # g = wd * p, buf = g, step = g + 0.9 * buf.
            np.testing.assert_allclose(after, before[i] * (1 - 0.5 * 1.9 * 1e-2), rtol=1e-6, err_msg=path)
        else:
            np.testing.assert_array_equal(after, before[i], err_msg=path)


@pytest.mark.parametrize(
    "agc_class,keras_class,kwargs",
    [
        (AGCSGD, keras.optimizers.SGD, dict(learning_rate=0.1, momentum=0.9, nesterov=True)),
        (AGCAdamW, keras.optimizers.AdamW, dict(learning_rate=1e-2, weight_decay=0.0)),
    ],
    ids=["AGCSGD", "AGCAdamW"],
)
def test_agc_optimizer_equals_keras_optimizer_on_preclipped_gradients(agc_class, keras_class, kwargs):
    variables_a, variables_b = _variables(), _variables()
    opt_a, opt_b = agc_class(**kwargs), keras_class(**kwargs)
    for t in range(3):
        grads = _grads(variables_a, t)
        preclipped = [
            g if not clip else ref.agc(g, ops.convert_to_numpy(v))[0].astype("float32")
            for g, v, (_, _, clip, _) in zip(grads, variables_b, SPECS)
        ]
        opt_a.apply(grads, variables_a)
        opt_b.apply(preclipped, variables_b)
        for a, b in zip(variables_a, variables_b):
            np.testing.assert_allclose(ops.convert_to_numpy(a), ops.convert_to_numpy(b), rtol=1e-6, atol=1e-7)


def test_with_agc_builds_registered_cached_class():
    cls = with_agc(keras.optimizers.Lion)
    assert cls is with_agc(keras.optimizers.Lion)
    assert issubclass(cls, optimizers.AGCMixin) and issubclass(cls, keras.optimizers.Lion)
    assert keras.saving.get_registered_name(cls) == "nfnet_keras>AGCLion"
    opt = cls(learning_rate=1e-3, clipping=0.02)
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(opt))
    assert type(restored) is cls and restored.clipping == 0.02
    with pytest.raises(TypeError):
        with_agc(dict)


def test_get_by_name():
    opt = optimizers.get("nfnet_sgd", learning_rate=0.2, ema_decay=0.999)
    assert isinstance(opt, NFNetSGD) and opt.ema_decay == 0.999
    assert isinstance(optimizers.get("agc_adamw", learning_rate=1e-3), AGCAdamW)
    assert type(optimizers.get("agc_lion")) is with_agc(keras.optimizers.Lion)
    assert type(optimizers.get("sgd", learning_rate=0.3)) is keras.optimizers.SGD
    assert optimizers.get(opt) is opt


def test_config_round_trip_with_schedule():
    opt = NFNetSGD(
        learning_rate=_schedule(), momentum=0.8, weight_decay=1e-4, weight_decay_mode="decoupled",
        clipping=0.02, eps=1e-4, agc_exclude=["head"], decay_exclude=["gain$"], ema_decay=0.999,
    )
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(opt))
    assert type(restored) is NFNetSGD
    assert restored.get_config() == opt.get_config()
    assert isinstance(restored._learning_rate, WarmupCosineDecay)
    adamw = AGCAdamW(learning_rate=1e-3, weight_decay=0.05, clipping=0.04)
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(adamw))
    assert type(restored) is AGCAdamW and restored.get_config() == adamw.get_config()


def test_invalid_arguments_raise():
    with pytest.raises(ValueError):
        NFNetSGD(weight_decay_mode="l2")
    with pytest.raises(ValueError):
        NFNetSGD(clipping=-1.0)
    with pytest.raises(ValueError):
        NFNetSGD(ema_decay=1.5)


def test_clip_fraction_matches_agc_clip_fraction():
    variables = _variables()
    grads = _grads(variables, 0)
    clipped = [i for i, s in enumerate(SPECS) if s[2]]
    want = agc_clip_fraction([grads[i] for i in clipped], [variables[i] for i in clipped])
    opt = NFNetSGD(learning_rate=0.1)
    opt.apply(grads, variables)
    got = ops.convert_to_numpy(opt.clip_fraction)
    np.testing.assert_allclose(got, ops.convert_to_numpy(want), rtol=1e-6)
    assert 0.0 < got < 1.0


# ---------------------------------------------------------------------- EMA
def test_ema_first_three_steps_match_formula():
    variables = _variables()
    opt = NFNetSGD(learning_rate=0.1, ema_decay=0.2)  # the cap binds at t=2
    ema = [ops.convert_to_numpy(v).astype(np.float64) for v in variables]
    for i, a in enumerate(ema):
        np.testing.assert_array_equal(a, ops.convert_to_numpy(variables[i]))
    for t in range(3):
        opt.apply(_grads(variables, t), variables)
        decay = min(0.2, (1.0 + t) / (10.0 + t))
        assert decay == [0.1, 2.0 / 11.0, 0.2][t]
        ema = [ref.ema_update(e, ops.convert_to_numpy(v), 0.2, t) for e, v in zip(ema, variables)]
        for i, a in enumerate(opt.average_variables):
            np.testing.assert_allclose(ops.convert_to_numpy(a), ema[i], rtol=1e-6, atol=1e-8)


def test_ema_starts_from_weights_loaded_after_build():
    variables = _variables()
    opt = NFNetSGD(learning_rate=0.1, ema_decay=0.99)
    opt.build(variables)
    loaded = [ops.convert_to_numpy(v) + 1.0 for v in variables]
    for v, value in zip(variables, loaded):
        v.assign(value)
    opt.apply(_grads(variables, 0), variables)
    for i, a in enumerate(opt.average_variables):
        want = 0.1 * loaded[i].astype(np.float64) + 0.9 * ops.convert_to_numpy(variables[i])
        np.testing.assert_allclose(ops.convert_to_numpy(a), want, rtol=1e-6, atol=1e-8)


def test_swap_average_weights_swaps_and_second_call_restores():
    variables = _variables()
    opt = NFNetSGD(learning_rate=0.1, ema_decay=0.999)
    for t in range(2):
        opt.apply(_grads(variables, t), variables)
    model_values = [ops.convert_to_numpy(v) for v in variables]
    average_values = [ops.convert_to_numpy(a) for a in opt.average_variables]
    assert any(not np.array_equal(m, a) for m, a in zip(model_values, average_values))
    opt.swap_average_weights(variables)
    for v, a, m, e in zip(variables, opt.average_variables, model_values, average_values):
        np.testing.assert_array_equal(ops.convert_to_numpy(v), e)
        np.testing.assert_array_equal(ops.convert_to_numpy(a), m)
    opt.swap_average_weights()
    for v, a, m, e in zip(variables, opt.average_variables, model_values, average_values):
        np.testing.assert_array_equal(ops.convert_to_numpy(v), m)
        np.testing.assert_array_equal(ops.convert_to_numpy(a), e)


def test_average_variables_raise_when_ema_is_off():
    opt = NFNetSGD()
    opt.build(_variables())
    with pytest.raises(ValueError, match="EMA"):
        opt.average_variables  # noqa: B018


def test_fit_does_not_overwrite_weights_with_ema():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4, name="hidden"),
                              keras.layers.Dense(3, name="predictions")])
    opt = NFNetSGD(learning_rate=0.1, ema_decay=0.9)
    model.compile(optimizer=opt, loss=NFNetCrossEntropy())
    x = np.random.default_rng(0).standard_normal((8, 6)).astype("float32")
    y = np.arange(8) % 3
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    averages = [ops.convert_to_numpy(a) for a in opt.average_variables]
    weights = [ops.convert_to_numpy(v) for v in model.trainable_variables]
    assert all(not np.allclose(a, w) for a, w in zip(averages, weights))


def _ema_after_one_fit(jit_compile):
    """The EMA and weights of a small model after one epoch of `fit` (the optimizer built in the first step)."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4, name="hidden"),
                              keras.layers.Dense(3, name="predictions")])
    opt = NFNetSGD(learning_rate=0.1, ema_decay=0.9)
    model.compile(optimizer=opt, loss=NFNetCrossEntropy(), jit_compile=jit_compile)
    x = np.random.default_rng(0).standard_normal((8, 6)).astype("float32")
    model.fit(x, np.arange(8) % 3, batch_size=4, epochs=1, verbose=0)
    return [ops.convert_to_numpy(a) for a in opt.average_variables + model.trainable_variables]


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="TensorFlow's lazy optimizer build under XLA")
def test_ema_optimizer_trains_under_xla_with_the_same_result():
    for compiled, plain in zip(_ema_after_one_fit(True), _ema_after_one_fit(False)):
        np.testing.assert_allclose(compiled, plain, rtol=1e-5, atol=1e-6)


def test_saved_model_file_restores_optimizer_state_and_ema(tmp_path):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4, name="hidden"),
                              keras.layers.Dense(3, name="predictions")])
    model.compile(optimizer=NFNetSGD(learning_rate=WarmupCosineDecay(0.1, 256, total_steps=10, warmup_steps=1),
                                     ema_decay=0.999), loss=NFNetCrossEntropy())
    x = np.random.default_rng(0).standard_normal((8, 6)).astype("float32")
    model.fit(x, np.arange(8) % 3, batch_size=4, epochs=1, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded.optimizer) is NFNetSGD
    for a, b in zip(model.optimizer.variables, loaded.optimizer.variables):
        np.testing.assert_array_equal(ops.convert_to_numpy(a), ops.convert_to_numpy(b))
    for a, b in zip(model.optimizer.average_variables, loaded.optimizer.average_variables):
        np.testing.assert_array_equal(ops.convert_to_numpy(a), ops.convert_to_numpy(b))


# ---------------------------------------------------------- mixed precision
LOSS_MULTIPLIER = 30.0  # puts the nano NFNet's unit ratios around the AGC threshold


class _MultipliedLoss(NFNetCrossEntropy):
    def call(self, y_true, y_pred):
        return super().call(y_true, y_pred) * LOSS_MULTIPLIER


def _one_step_buffers(policy, clipping, init_weights, x, y):
    """Momentum buffers after one applied step (= the processed gradient, wd=0)."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        model = agc_models.build_model()
        model.set_weights(init_weights)
        inner = NFNetSGD(learning_rate=0.1, weight_decay=0.0, clipping=clipping)
        model.compile(optimizer=inner, loss=_MultipliedLoss())
        for _ in range(10):  # a loss-scale overflow skips the step; retry
            model.train_on_batch(x, y)
            if int(ops.convert_to_numpy(inner.iterations)) == 1:
                break
        assert int(ops.convert_to_numpy(inner.iterations)) == 1
        buffers = [ops.convert_to_numpy(b) for b in inner.momentums]
        dtypes = {
            "weights": {str(v.dtype) for v in model.trainable_variables},
            "optimizer": {str(v.dtype) for v in inner.variables if "iteration" not in v.path},
            "optimizer_class": type(model.optimizer).__name__,
        }
        paths = [v.path for v in model.trainable_variables]
        return buffers, paths, dtypes, ops.convert_to_numpy(inner.clip_fraction)
    finally:
        keras.config.set_dtype_policy(previous)


@pytest.fixture(scope="module")
def fp32_raw_gradients():
    x, y = agc_models.fixed_batch(batch_size=8)
    model = agc_models.build_model()
    init = model.get_weights()
    raw, paths, _, _ = _one_step_buffers("float32", None, init, x, y)
    params = [ops.convert_to_numpy(v) for v in model.trainable_variables]
    return init, params, raw, paths, x, y


def test_mixed_float16_makes_same_agc_decisions_as_float32(fp32_raw_gradients):
    init, params, raw, paths, x, y = fp32_raw_gradients
    clipped16, paths16, dtypes, _ = _one_step_buffers("mixed_float16", 0.01, init, x, y)
    assert paths16 == paths
    assert dtypes["optimizer_class"] == "LossScaleOptimizer"
    assert dtypes["weights"] == {"float32"} and dtypes["optimizer"] == {"float32"}
    agree = clipped = kept = 0
    error, norm = 0.0, 0.0
    for path, p, g32, c16 in zip(paths, params, raw, clipped16):
        if path == "predictions/kernel":
            continue
        max_norm = 0.01 * np.maximum(ref.unitwise_norm(p), 1e-3)
        ratio = ref.unitwise_norm(g32) / max_norm * np.ones_like(max_norm)
        # Leave out borderline units, where fp16 rounding may flip the decision.
        clear = (ratio < 0.8) | (ratio > 1.25)
        # A clipped unit leaves AGC with norm == max_norm (float32 arithmetic).
        decided_clip16 = np.abs(ref.unitwise_norm(c16) / max_norm - 1.0) < 1e-3
        want = ratio > 1.0
        np.testing.assert_array_equal(decided_clip16[clear], want[clear], err_msg=path)
        agree += int(clear.sum())
        clipped += int((want & clear).sum())
        kept += int((~want & clear & (ratio > 1e-3)).sum())
        expected = ref.agc(g32, p)[0]
        error += float(np.sum((c16 - expected) ** 2))
        norm += float(np.sum(expected**2))
    # The processed gradient is AGC(float32 gradient) to fp16 accuracy (AGC
    # before unscaling would be off by orders of magnitude).
    assert np.sqrt(error / norm) < 5e-2
    assert clipped > 100 and kept > 100, (clipped, kept)
    assert agree > 0.9 * sum(int(np.size(ref.unitwise_norm(p))) for p in params)


def test_mixed_bfloat16_keeps_float32_master_weights_and_state(fp32_raw_gradients):
    init, params, raw, paths, x, y = fp32_raw_gradients
    clipped, _, dtypes, clip_fraction = _one_step_buffers("mixed_bfloat16", 0.01, init, x, y)
    assert dtypes["optimizer_class"] == "NFNetSGD"
    assert dtypes["weights"] == {"float32"} and dtypes["optimizer"] == {"float32"}
    assert all(b.dtype == np.float32 and np.all(np.isfinite(b)) for b in clipped)
    assert 0.2 < float(clip_fraction) < 0.95


def test_sparse_embedding_gradient_is_clipped_as_dense():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,), dtype="int32"), keras.layers.Embedding(10, 4, name="embedding"),
                              keras.layers.GlobalAveragePooling1D(), keras.layers.Dense(2, name="predictions")])
    opt = AGCSGD(learning_rate=1.0)
    model.compile(optimizer=opt, loss=NFNetCrossEntropy())
    table = ops.convert_to_numpy(model.get_layer("embedding").embeddings)
    x, y = np.array([[1, 2, 2], [3, 1, 0]], "int32"), np.array([0, 1])
    model.train_on_batch(x, y)
    new_table = ops.convert_to_numpy(model.get_layer("embedding").embeddings)
    # Plain SGD, lr 1: the change is the clipped gradient; every embedding
    # column (unit) is rescaled to clipping * its norm or less.
    change = ref.unitwise_norm(table - new_table)
    limit = 0.01 * ref.unitwise_norm(table)
    assert np.all(change <= limit * (1 + 1e-4))
    assert np.sum(np.isclose(change, limit, rtol=1e-4)) >= 2  # clipped units
