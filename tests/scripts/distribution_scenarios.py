"""Distribution scenarios for tests/training/test_distribution.py, run as subprocesses.

Usage (the test sets KERAS_BACKEND / XLA_FLAGS):

    python tests/scripts/distribution_scenarios.py mirrored              # TF, 2 logical CPUs
    python tests/scripts/distribution_scenarios.py jax_dp                # JAX, 2 host devices
    python tests/scripts/distribution_scenarios.py worker PID PORT OUT   # JAX multi-host worker
    python tests/scripts/distribution_scenarios.py single OUT            # JAX one-process reference

The first two print one line `RESULT {json}`; the last two write
`OUT/weights_<tag>.npz`.

Training setup everywhere: `small_nf` (no dropout / stochastic depth, whose
per-replica draws would legitimately differ from one device), NFNetSGD
(AGC, coupled weight decay, Nesterov, EMA), `NFNetTrainer` with
`sam_rho` in {0, 0.1} (multi-host: 0.1), global batch 8, STEPS steps, `shuffle=False`.
"""

import json
import os
import sys

import numpy as np

MODE = sys.argv[1]
if MODE == "mirrored":
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
sys.path.insert(0, os.path.abspath(os.path.dirname(__file__)))

import keras  # noqa: E402

GLOBAL_BATCH = 8
STEPS = 2
RHOS = (0.0, 0.1)
# Multi-host runs only SAM (its norm needs the cross-host gradient; rho=0 is
# Keras' own step) to keep the three-process test short.
MULTI_HOST_RHOS = (0.1,)


def data():
    from trainer_cases import image_data

    return image_data(GLOBAL_BATCH * STEPS, seed=7, hw=8)


def host_np(variable):
    """numpy value of a (possibly multi-process replicated) variable."""
    value = variable.value if hasattr(variable, "value") else variable
    if keras.backend.backend() == "jax" and not value.is_fully_addressable:
        value = value.addressable_data(0)
    return np.asarray(keras.ops.convert_to_numpy(value), np.float64)


def make_trainer(rho, initial=None):
    from trainer_cases import ce_loss, nfnet_sgd, small_nf

    from nfnet_keras.training.sam import NFNetTrainer

    trainer = NFNetTrainer(small_nf(seed=0), sam_rho=rho)
    if initial is not None:
        trainer.set_weights(initial)
    trainer.compile(optimizer=nfnet_sgd(ema_decay=0.999), loss=ce_loss())
    return trainer


def state(trainer):
    return {
        "weights": [host_np(v) for v in trainer.trainable_variables],
        "ema": [host_np(v) for v in trainer.optimizer.average_variables],
    }


def compare(dist, ref, initial):
    """Largest relative differences (per variable, max|a-b| / max|b|)."""
    from trainer_cases import rel_diff

    upd_d = [a - i for a, i in zip(dist["weights"], initial)]
    upd_r = [b - i for b, i in zip(ref["weights"], initial)]
    return {
        "weights_rel": rel_diff(dist["weights"], ref["weights"]),
        "ema_rel": rel_diff(dist["ema"], ref["ema"]),
        "update_rel": rel_diff(upd_d, upd_r),
        "update_size": max(float(np.max(np.abs(u))) for u in upd_r),
    }


def run_pair(engine, x, y):
    """Same start, same data: one device vs the engine; for each rho."""
    out = {}
    for rho in RHOS:
        reference = make_trainer(rho)
        initial = [np.asarray(w) for w in reference.get_weights()]
        reference.fit(x, y, batch_size=GLOBAL_BATCH, epochs=1, shuffle=False, verbose=0)
        ref = state(reference)
        with engine.scope():
            trainer = make_trainer(rho, initial=initial)
            trainer.fit(x, y, batch_size=GLOBAL_BATCH, epochs=1, shuffle=False, verbose=0)
            dist = state(trainer)
            out[f"rho={rho}"] = compare(dist, ref, [np.asarray(w, np.float64) for w in initial])
            out[f"rho={rho}"]["ema_swap"] = ema_swap_check(trainer, x, y, dist)
    return out


def ema_swap_check(trainer, x, y, before):
    """`ema_weights` on the distributed trainer: EMA inside, raw after."""
    from trainer_cases import abs_diff

    from nfnet_keras.training.ema import ema_weights

    with ema_weights(trainer):
        inside = [host_np(v) for v in trainer.trainable_variables]
        loss = trainer.evaluate(x, y, batch_size=GLOBAL_BATCH, verbose=0)
    after = state(trainer)
    return {
        "inside_vs_ema": abs_diff(inside, before["ema"]),
        "after_vs_raw": abs_diff(after["weights"], before["weights"]),
        "ema_unchanged": abs_diff(after["ema"], before["ema"]),
        "ema_vs_raw": abs_diff(before["ema"], before["weights"]),
        "loss_finite": bool(np.isfinite(loss)),
    }


def main():
    from nfnet_keras.training.distribution import get_distribution

    x, y = data()
    if MODE == "mirrored":
        devices = ["/cpu:0", "/cpu:1"]
        engine = get_distribution(devices=devices, global_batch_size=GLOBAL_BATCH)
        result = {"kind": engine.kind, "num_replicas": engine.num_replicas}
        try:
            get_distribution(devices=devices, global_batch_size=7)
            result["batch7_error"] = None
        except ValueError as e:
            result["batch7_error"] = str(e)
        result.update(run_pair(engine, x, y))
        print("RESULT " + json.dumps(result), flush=True)
    elif MODE == "jax_dp":
        engine = get_distribution(global_batch_size=GLOBAL_BATCH)
        result = {"kind": engine.kind, "num_replicas": engine.num_replicas, "devices": list(engine.devices)}
        try:
            engine.check_batch_size(7)
            result["batch7_error"] = None
        except ValueError as e:
            result["batch7_error"] = str(e)
        result.update(run_pair(engine, x, y))
        print("RESULT " + json.dumps(result), flush=True)
    elif MODE == "worker":
        pid, port, out_dir = int(sys.argv[2]), sys.argv[3], sys.argv[4]
        engine = get_distribution(
            job_addresses=f"127.0.0.1:{port}",
            num_processes=2,
            process_id=pid,
            global_batch_size=GLOBAL_BATCH,
            auto_shard_dataset=False,
        )
        import jax

        info = {
            "kind": engine.kind,
            "num_replicas": engine.num_replicas,
            "num_hosts": engine.num_hosts,
            "process_index": engine.process_index,
            "local_devices": len(jax.local_devices()),
        }
        # This host's rows of every global batch, in step order.
        rows = engine.host_slice(GLOBAL_BATCH)
        xs = np.concatenate([x[s * GLOBAL_BATCH :][rows] for s in range(STEPS)])
        ys = np.concatenate([y[s * GLOBAL_BATCH :][rows] for s in range(STEPS)])
        arrays = {}
        for rho in MULTI_HOST_RHOS:
            with engine.scope():
                trainer = make_trainer(rho)
                trainer.fit(xs, ys, batch_size=engine.per_host_batch_size(GLOBAL_BATCH), epochs=1, shuffle=False, verbose=0)
            st = state(trainer)
            for k, vs in st.items():
                for i, v in enumerate(vs):
                    arrays[f"rho={rho}/{k}/{i}"] = v
        np.savez(os.path.join(out_dir, f"weights_{pid}.npz"), info=json.dumps(info), **arrays)
    elif MODE == "single":
        out_dir = sys.argv[2]
        arrays = {}
        for rho in MULTI_HOST_RHOS:
            trainer = make_trainer(rho)
            trainer.fit(x, y, batch_size=GLOBAL_BATCH, epochs=1, shuffle=False, verbose=0)
            st = state(trainer)
            for k, vs in st.items():
                for i, v in enumerate(vs):
                    arrays[f"rho={rho}/{k}/{i}"] = v
        np.savez(os.path.join(out_dir, "weights_single.npz"), info=json.dumps({}), **arrays)
    else:
        raise SystemExit(f"unknown mode {MODE}")


if __name__ == "__main__":
    main()
