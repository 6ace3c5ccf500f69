"""SAM / EMA cases shared by tests/training/test_sam.py and tests/training/test_callbacks.py.

Each `case_*` function runs on the active Keras backend and returns a dict of
plain numbers/bools that the tests assert on. The TensorFlow tests call them
in-process; the JAX tests run this file as a script
(`KERAS_BACKEND=jax python tests/scripts/trainer_cases.py case1 case2 ...`), which prints
one JSON line `RESULT {...}`.
"""

import json
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))

import keras  # noqa: E402

from nfnet_keras.training.sam import NFNetTrainer  # noqa: E402

LR = 0.1


# ---------------------------------------------------------------- data/models
def dense_data(n=8, d_in=4, d_out=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d_in)).astype("float32")
    y = rng.normal(size=(n, d_out)).astype("float32")
    return x, y


def dense_model(seed=1, d_in=4, hidden=5, d_out=3, dtype=None):
    """Input -> Dense(hidden, tanh) -> Dense(d_out), deterministic init."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((d_in,))
    h = keras.layers.Dense(hidden, activation="tanh", name="hidden", dtype=dtype)(inputs)
    outputs = keras.layers.Dense(d_out, name="out", dtype="float32")(h)
    return keras.Model(inputs, outputs)


def nano(seed=0, stochdepth_rate=0.0, drop_rate=0.0):
    import nfnet_keras

    keras.utils.set_random_seed(seed)
    return nfnet_keras.NFNet(
        "nano",
        classes=10,
        input_shape=(32, 32, 3),
        weights=None,
        classifier_activation=None,
        stochdepth_rate=stochdepth_rate,
        drop_rate=drop_rate,
        seed=seed,
    )


def small_nf(seed=0, stochdepth_rate=0.0, drop_rate=0.0):
    """A few-variable NFNet-like net from nfnet_keras layers (fast to trace).

    WSConv2D stem, one residual branch (WSConv2D, scaled gelu, stochastic
    depth, skip gain), GAP, dropout, float32 `predictions` classifier (the
    variable AGC skips). Input 8x8x3, 10 classes.
    """
    from nfnet_keras.models.layers import ScaledActivation, StochasticDepth, WSConv2D

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 3), name="images")
    x = WSConv2D(8, 3, strides=2, name="stem_conv0")(inputs)
    x = ScaledActivation("gelu", name="stem_act")(x)
    r = WSConv2D(8, 3, name="block_conv")(x)
    r = ScaledActivation("gelu", name="block_act")(r)
    if stochdepth_rate:
        r = StochasticDepth(stochdepth_rate, seed=seed, name="block_stochdepth")(r)
    x = keras.layers.Add(name="block_add")([x, r])
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if drop_rate:
        x = keras.layers.Dropout(drop_rate, seed=seed, name="top_dropout")(x)
    outputs = keras.layers.Dense(10, dtype="float32", name="predictions")(x)
    return keras.Model(inputs, outputs, name="small_nf")


def net(kind, **kw):
    return nano(**kw) if kind == "nano" else small_nf(**kw)


def image_data(n=16, seed=0, classes=10, hw=32):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, hw, hw, 3)).astype("float32")
    y = rng.integers(0, classes, size=(n,)).astype("int32")
    return x, y


def nfnet_sgd(**kw):
    from nfnet_keras.training.optimizers import NFNetSGD

    args = dict(learning_rate=0.1, momentum=0.9, weight_decay=2e-5, clipping=0.01, ema_decay=0.99999)
    args.update(kw)
    return NFNetSGD(**args)


def ce_loss():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def weights_np(model):
    return [np.asarray(keras.ops.convert_to_numpy(v), dtype=np.float64) for v in model.trainable_variables]


def rel_diff(a_list, b_list):
    """max over variables of max|a-b| / max|b|."""
    out = 0.0
    for a, b in zip(a_list, b_list):
        a = np.asarray(a, np.float64)
        b = np.asarray(b, np.float64)
        out = max(out, float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-12)))
    return out


def abs_diff(a_list, b_list):
    return max(float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)))) for a, b in zip(a_list, b_list))


# ------------------------------------------------------------ numpy reference
def np_mlp_grads(params, x, y):
    """Gradients of mean((tanh(x W1 + b1) W2 + b2 - y)^2) (Keras' MSE)."""
    w1, b1, w2, b2 = params
    h = np.tanh(x @ w1 + b1)
    p = h @ w2 + b2
    d = 2.0 * (p - y) / p.size
    dh = (d @ w2.T) * (1.0 - h**2)
    return [x.T @ dh, dh.sum(0), h.T @ d, d.sum(0)]


def np_sam_sgd(params, x, y, rho, lr, steps):
    params = [np.asarray(p, np.float64) for p in params]
    x = x.astype(np.float64)
    y = y.astype(np.float64)
    for _ in range(steps):
        g1 = np_mlp_grads(params, x, y)
        if rho > 0:
            norm = np.sqrt(sum(float((g**2).sum()) for g in g1))
            perturbed = [p + rho * g / norm for p, g in zip(params, g1)]
            g = np_mlp_grads(perturbed, x, y)
        else:
            g = g1
        params = [p - lr * gi for p, gi in zip(params, g)]
    return params


# ------------------------------------------------------------------- cases
def _hw(kind):
    return 32 if kind == "nano" else 8


def case_rho0_equals_plain(kind="small"):
    """NFNet net + NFNetSGD(AGC, EMA) with stochastic depth and dropout on:
    trainer(sam_rho=0).fit == plain model.fit (same seeds, 3 steps)."""
    x, y = image_data(12, hw=_hw(kind))
    results = []
    for use_trainer in (False, True):
        model = net(kind, seed=3, stochdepth_rate=0.2, drop_rate=0.2)
        target = NFNetTrainer(model, sam_rho=0.0) if use_trainer else model
        target.compile(optimizer=nfnet_sgd(), loss=ce_loss())
        w0 = weights_np(target)
        hist = target.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)
        results.append((w0, weights_np(target), hist.history["loss"][0]))
    (p0, p1, p_loss), (t0, t1, t_loss) = results
    return {
        "initial_max_abs": abs_diff(p0, t0),
        "final_max_abs": abs_diff(p1, t1),
        "update_max_abs": abs_diff(p1, p0),
        "loss_plain": p_loss,
        "loss_trainer": t_loss,
    }


def case_sam_matches_numpy(rho=0.5, steps=2):
    """Trainer(sam_rho) with SGD(lr) vs the numpy two-pass SAM computation."""
    x, y = dense_data()
    model = dense_model()
    w0 = weights_np(model)
    trainer = NFNetTrainer(model, sam_rho=rho)
    trainer.compile(optimizer=keras.optimizers.SGD(LR), loss="mse")
    trainer.fit(x, y, batch_size=len(x), epochs=steps, shuffle=False, verbose=0)
    got = weights_np(trainer)
    ref_sam = np_sam_sgd(w0, x, y, rho, LR, steps)
    ref_plain = np_sam_sgd(w0, x, y, 0.0, LR, steps)
    return {
        "max_abs_vs_numpy_sam": abs_diff(got, ref_sam),
        "max_abs_vs_numpy_plain": abs_diff(got, ref_plain),
        "sam_vs_plain_numpy": abs_diff(ref_sam, ref_plain),
    }


def case_sam_composes_with_nfnet_sgd(rho=0.5, steps=2):
    """SAM + NFNetSGD (AGC, coupled decay, Nesterov, EMA): the optimizer gets
    exactly g2. Reference: numpy g2 at w + e, applied by a fresh NFNetSGD to
    a second copy of the model with `apply_gradients`."""
    x, y = dense_data()
    opt_args = dict(learning_rate=LR, clipping=0.05, weight_decay=1e-2, ema_decay=0.9)
    trainer = NFNetTrainer(dense_model(), sam_rho=rho)
    trainer.compile(optimizer=nfnet_sgd(**opt_args), loss="mse")
    trainer.fit(x, y, batch_size=len(x), epochs=steps, shuffle=False, verbose=0)

    manual = dense_model()
    optimizer = nfnet_sgd(**opt_args)
    optimizer.build(manual.trainable_variables)
    for _ in range(steps):
        w = weights_np(manual)
        g1 = np_mlp_grads(w, x.astype(np.float64), y.astype(np.float64))
        norm = np.sqrt(sum(float((g**2).sum()) for g in g1))
        g2 = np_mlp_grads([p + rho * g / norm for p, g in zip(w, g1)], x.astype(np.float64), y.astype(np.float64))
        optimizer.apply_gradients(zip([g.astype(np.float32) for g in g2], manual.trainable_variables))
    ema_t = [keras.ops.convert_to_numpy(v) for v in trainer.optimizer.average_variables]
    ema_m = [keras.ops.convert_to_numpy(v) for v in optimizer.average_variables]
    plain = NFNetTrainer(dense_model(), sam_rho=0.0)
    plain.compile(optimizer=nfnet_sgd(**opt_args), loss="mse")
    plain.fit(x, y, batch_size=len(x), epochs=steps, shuffle=False, verbose=0)
    return {
        "weights_max_abs": abs_diff(weights_np(trainer), weights_np(manual)),
        "ema_max_abs": abs_diff(ema_t, ema_m),
        "sam_vs_plain_max_abs": abs_diff(weights_np(trainer), weights_np(plain)),
    }


def case_sam_trains(kind="small", steps=30, rho=0.05, lr=0.1):
    """NFNet net, NFNetSGD(AGC, EMA), SAM: loss over 30 steps on 16 images."""
    x, y = image_data(16, seed=1, hw=_hw(kind))
    model = net(kind, seed=0)
    trainer = NFNetTrainer(model, sam_rho=rho)
    trainer.compile(optimizer=nfnet_sgd(learning_rate=lr), loss=ce_loss())
    hist = trainer.fit(x, y, batch_size=16, epochs=steps, shuffle=False, verbose=0)
    losses = [float(v) for v in hist.history["loss"]]
    return {"first": losses[0], "last": losses[-1], "finite": bool(np.all(np.isfinite(losses)))}


def _manual_sam_sgd(model, x, y, rho, lr):
    """Independent two-pass SAM step written directly against the backend:
    assign w+e, take the gradient, assign w back, SGD update."""
    variables = model.trainable_variables
    loss_fn = keras.losses.MeanSquaredError()
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        @tf.function  # graph mode like fit (bf16 rounding differs eagerly)
        def graph_grads():
            with tf.GradientTape() as tape:
                loss = loss_fn(y, model(x, training=True))
            return tape.gradient(loss, variables)

        def grads_at_current():
            return [g.numpy().astype(np.float64) for g in graph_grads()]

    else:
        import jax

        def grads_at_current():
            def f(tv):
                out, _ = model.stateless_call(tv, [v.value for v in model.non_trainable_variables], x, training=True)
                return loss_fn(y, out)

            g = jax.grad(f)([v.value for v in variables])
            return [np.asarray(gi, np.float64) for gi in g]

    # float32 arithmetic for w + e, like the trainer (a 1-ulp difference in a
    # float32 weight can flip its bfloat16 rounding).
    w = [keras.ops.convert_to_numpy(v).astype(np.float32) for v in variables]
    g1 = [g.astype(np.float32) for g in grads_at_current()]
    norm = np.float32(np.sqrt(sum(float((g.astype(np.float64) ** 2).sum()) for g in g1)))
    scale = np.float32(rho) / norm
    for v, wi, gi in zip(variables, w, g1):
        v.assign(wi + gi * scale)
    g2 = grads_at_current()
    new = [wi.astype(np.float64) - lr * gi for wi, gi in zip(w, g2)]
    for v, wi in zip(variables, w):
        v.assign(wi)
    return new, g1


def case_sam_mixed_precision(policy="mixed_bfloat16", rho=0.5):
    """Trainer SAM step under a mixed policy vs the manual two-pass step under
    the same policy; and SAM vs the plain step (the change SAM makes)."""
    x, y = dense_data()
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        model = dense_model()
        compute_dtype = model.get_layer("hidden").compute_dtype
        ref, _ = _manual_sam_sgd(model, x, y, rho, LR)
        w0 = weights_np(model)
        trainer = NFNetTrainer(model, sam_rho=rho)
        trainer.compile(optimizer=keras.optimizers.SGD(LR), loss="mse")
        optimizer_type = type(trainer.optimizer).__name__
        trainer.fit(x, y, batch_size=len(x), epochs=1, shuffle=False, verbose=0)
        got = weights_np(trainer)

        plain = dense_model()
        plain.compile(optimizer=keras.optimizers.SGD(LR), loss="mse")
        plain.fit(x, y, batch_size=len(x), epochs=1, shuffle=False, verbose=0)
        plain_w = weights_np(plain)
    finally:
        keras.config.set_dtype_policy(previous)
    return {
        "compute_dtype": compute_dtype,
        "optimizer": optimizer_type,
        "max_abs_vs_manual": abs_diff(got, ref),
        "sam_update_max_abs": abs_diff(got, w0),
        "sam_vs_plain_max_abs": abs_diff(got, plain_w),
    }


def case_sam_mixed_bfloat16():
    return case_sam_mixed_precision("mixed_bfloat16")


def case_sam_mixed_float16():
    return case_sam_mixed_precision("mixed_float16")


def case_bf16_trains(kind="small", steps=30, rho=0.05):
    """NFNet net under mixed_bfloat16 with SAM: loss goes down."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        result = case_sam_trains(kind, steps=steps, rho=rho)
    finally:
        keras.config.set_dtype_policy(previous)
    return result


def _dropout_linear_model(seed):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((32,))
    h = keras.layers.Dropout(0.5, seed=7)(inputs)
    outputs = keras.layers.Dense(1, use_bias=False, kernel_initializer="ones")(h)
    return keras.Model(inputs, outputs)


def case_same_dropout_mask():
    """Both SAM passes draw the same dropout mask.

    One example, `Dropout(0.5)` on 32 input features, a linear head: a kernel
    row moves iff its feature was kept in the pass(es) whose gradient is
    applied. Plain step and SAM step start from identical RNG states, so with
    the same draw in both SAM passes the moved rows are the same set; with a
    fresh draw in the second pass they would be the rows of another mask.
    """
    rng = np.random.default_rng(5)
    x = rng.uniform(1.0, 2.0, size=(1, 32)).astype("float32")
    y = np.array([[-3.0]], "float32")
    moved = []
    for rho in (0.0, 0.5):
        model = _dropout_linear_model(seed=11)
        trainer = NFNetTrainer(model, sam_rho=rho)
        trainer.compile(optimizer=keras.optimizers.SGD(LR), loss="mse")
        k0 = weights_np(trainer)[0]
        trainer.fit(x, y, batch_size=1, epochs=1, shuffle=False, verbose=0)
        k1 = weights_np(trainer)[0]
        moved.append(np.abs(k1 - k0).ravel() > 0)
    return {
        "moved_plain": int(moved[0].sum()),
        "moved_sam": int(moved[1].sum()),
        "same_rows": bool(np.array_equal(moved[0], moved[1])),
    }


def case_save_load_trainer(kind="small"):
    """`.keras` round trip of a SAM trainer (config, weights, predictions)."""
    x, y = image_data(8, seed=2, hw=_hw(kind))
    trainer = NFNetTrainer(net(kind, seed=1), sam_rho=0.05)
    trainer.compile(optimizer=nfnet_sgd(), loss=ce_loss())
    trainer.fit(x, y, batch_size=8, epochs=1, verbose=0)
    pred = keras.ops.convert_to_numpy(trainer.predict(x, verbose=0))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "trainer.keras")
        trainer.save(path)
        loaded = keras.saving.load_model(path)
    pred2 = keras.ops.convert_to_numpy(loaded.predict(x, verbose=0))
    return {
        "type": type(loaded).__name__,
        "sam_rho": loaded.sam_rho,
        "pred_max_abs": float(np.max(np.abs(pred - pred2))),
        "weights_max_abs": abs_diff(weights_np(trainer), weights_np(loaded)),
        "eval_loss": float(loaded.evaluate(x, y, verbose=0)),
    }


# --------------------------------------------------------------- EMA cases
class WeightRecorder(keras.callbacks.Callback):
    """Records the trainable weights at each epoch end."""

    def __init__(self):
        super().__init__()
        self.snapshots = []

    def on_epoch_end(self, epoch, logs=None):
        self.snapshots.append(weights_np(self.model))


def _ema_trainer(kind, seed=0):
    trainer = NFNetTrainer(net(kind, seed=seed), sam_rho=0.0)
    trainer.compile(optimizer=nfnet_sgd(learning_rate=0.2, ema_decay=0.9), loss=ce_loss(), metrics=["accuracy"])
    return trainer


def case_ema_evaluation(kind="small"):
    """EMAEvaluation: val_ema_* logged, differs from raw val, equals an
    explicit EMA evaluation, raw weights restored (recorded before/after the
    callback in the same epoch end), EMA itself unchanged by the swap pair."""
    from nfnet_keras.training.ema import EMAEvaluation, ema_weights

    x, y = image_data(16, seed=3, hw=_hw(kind))
    xv, yv = image_data(8, seed=4, hw=_hw(kind))
    trainer = _ema_trainer(kind)
    before, after = WeightRecorder(), WeightRecorder()
    hist = trainer.fit(
        x,
        y,
        batch_size=8,
        epochs=2,
        shuffle=False,
        verbose=0,
        validation_data=(xv, yv),
        callbacks=[before, EMAEvaluation((xv, yv), batch_size=8), after],
    )
    h = hist.history
    averages = [np.asarray(keras.ops.convert_to_numpy(v), np.float64) for v in trainer.optimizer.average_variables]
    raw = weights_np(trainer)
    with ema_weights(trainer):
        ema_eval = trainer.evaluate(xv, yv, batch_size=8, verbose=0, return_dict=True)
        swapped_in = weights_np(trainer)
    averages_after = [np.asarray(keras.ops.convert_to_numpy(v), np.float64) for v in trainer.optimizer.average_variables]
    return {
        "keys": sorted(h),
        "val_loss": h["val_loss"][-1],
        "val_ema_loss": h["val_ema_loss"][-1],
        "explicit_ema_loss": float(ema_eval["loss"]),
        "restored_max_abs": max(abs_diff(b, a) for b, a in zip(before.snapshots, after.snapshots)),
        "ema_vs_raw_max_abs": abs_diff(averages, raw),
        "swapped_in_is_ema": abs_diff(swapped_in, averages),
        "raw_after_context": abs_diff(weights_np(trainer), raw),
        "averages_after_context": abs_diff(averages_after, averages),
    }


def case_checkpoint_keeps_ema(kind="small"):
    """ModelCheckpoint(.keras) -> load_model: raw weights, EMA, step equal."""
    x, y = image_data(16, seed=3, hw=_hw(kind))
    trainer = _ema_trainer(kind)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "ckpt.keras")
        trainer.fit(
            x,
            y,
            batch_size=8,
            epochs=2,
            shuffle=False,
            verbose=0,
            callbacks=[keras.callbacks.ModelCheckpoint(path, save_weights_only=False)],
        )
        loaded = keras.saving.load_model(path)
    averages = [keras.ops.convert_to_numpy(v) for v in trainer.optimizer.average_variables]
    loaded_averages = [keras.ops.convert_to_numpy(v) for v in loaded.optimizer.average_variables]
    return {
        "optimizer": type(loaded.optimizer).__name__,
        "iterations": [int(trainer.optimizer.iterations.numpy()), int(loaded.optimizer.iterations.numpy())],
        "raw_max_abs": abs_diff(weights_np(trainer), weights_np(loaded)),
        "ema_max_abs": abs_diff(averages, loaded_averages),
        "ema_vs_raw_max_abs": abs_diff(averages, weights_np(trainer)),
    }


def case_save_ema_weights(kind="small"):
    """save_ema_weights / EMACheckpoint write the EMA of the wrapped NFNet."""
    from nfnet_keras.training.ema import EMACheckpoint, save_ema_weights

    x, y = image_data(16, seed=3, hw=_hw(kind))
    trainer = _ema_trainer(kind)
    with tempfile.TemporaryDirectory() as tmp:
        pattern = os.path.join(tmp, "ema_{epoch:02d}.weights.h5")
        ckpt = EMACheckpoint(pattern)
        trainer.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0, callbacks=[ckpt])
        averages = [keras.ops.convert_to_numpy(v) for v in trainer.optimizer.average_variables]
        raw = weights_np(trainer)
        fresh = net(kind, seed=9)
        fresh.load_weights(ckpt.last_filepath)
        from_callback = weights_np(fresh)
        path = os.path.join(tmp, "ema.weights.h5")
        save_ema_weights(trainer, path)
        fresh2 = net(kind, seed=10)
        fresh2.load_weights(path)
        from_function = weights_np(fresh2)
        files = sorted(os.listdir(tmp))
    return {
        "files": files,
        "callback_vs_ema": abs_diff(from_callback, averages),
        "function_vs_ema": abs_diff(from_function, averages),
        "raw_unchanged": abs_diff(weights_np(trainer), raw),
        "ema_vs_raw_max_abs": abs_diff(averages, raw),
    }


CASES = {name[len("case_"):]: fn for name, fn in globals().items() if name.startswith("case_")}


def main(argv):
    out = {}
    for spec in argv:
        name, _, kind = spec.partition(":")
        out[spec] = CASES[name](kind) if kind else CASES[name]()
    print("RESULT " + json.dumps(out), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
