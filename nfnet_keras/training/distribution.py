"""Pick the data-parallel engine for the active Keras backend.

`get_distribution(...)` returns an `Engine`; create the model, the
`NFNetTrainer` and the optimizer, compile and fit inside `engine.scope()`:

```python
engine = get_distribution(global_batch_size=4096)
with engine.scope():
    model = nfnet_keras.NFNet("F0", weights=None)
    trainer = NFNetTrainer(model)
    trainer.compile(optimizer=..., loss=...)
    trainer.fit(dataset, ...)
```

| backend | request | engine |
|---|---|---|
| tensorflow | no GPU, no `devices` | default strategy (one device) |
| tensorflow | one device | `tf.distribute.OneDeviceStrategy` |
| tensorflow | several devices (all local GPUs by default, or `devices=`) | `tf.distribute.MirroredStrategy` |
| tensorflow | `tpu=...` | `tf.distribute.TPUStrategy` (untested: no TPU here) |
| tensorflow | several hosts | **error**: `MultiWorkerMirroredStrategy` + `fit` is broken in Keras 3.15 (keras-team/keras#20585); use the JAX backend |
| jax | one device | no distribution (plain single-device Keras) |
| jax | several local devices | `keras.distribution.DataParallel` over them |
| jax | several hosts (`job_addresses`/`num_processes`/`process_id` or `KERAS_DISTRIBUTION_*` env) | `keras.distribution.initialize(...)` (JAX distributed runtime), then `DataParallel` over all global devices |

Multi-host JAX data: each process feeds its own part of the global batch
(`engine.per_host_batch_size(global_batch)` examples per step). A
`tf.data.Dataset` of the *global* batch is sharded by Keras itself when
`auto_shard_dataset=True` (the default); if you already feed per-host data
(numpy arrays, a per-host dataset), pass `auto_shard_dataset=False`.
`engine.host_slice(global_batch_size)` gives this process' rows of a global
batch.
"""

import contextlib
import json
import os

import keras
import numpy as np

from nfnet_keras.checks import check_integer

__all__ = ["Engine", "gather_across_hosts", "get_distribution", "is_chief", "process_count", "process_index"]

_MULTIWORKER_TF_MESSAGE = (
    "Multi-host training on the TensorFlow backend would need "
    "tf.distribute.MultiWorkerMirroredStrategy, and `model.fit` with it is "
    "broken in Keras 3.15 (keras-team/keras#20585: PerReplica values reach "
    "`_maybe_symbolic_build` and the per-replica log reduction). nfnet_keras "
    "does not patch Keras. Use the JAX backend for multi-host training: set "
    "KERAS_BACKEND=jax and call get_distribution(job_addresses='host0:port', "
    "num_processes=N, process_id=i) (or set KERAS_DISTRIBUTION_JOB_ADDRESSES, "
    "KERAS_DISTRIBUTION_NUM_PROCESSES, KERAS_DISTRIBUTION_PROCESS_ID)."
)

# Arguments of the JAX distributed runtime initialised by this process (it can
# only be initialised once per process).
_JAX_INITIALIZED = None


def process_index():
    """The index of this process: JAX's process index, 0 on the other backends.

    Only JAX runs one process per host here (TensorFlow multi-host is refused).
    """
    if keras.backend.backend() == "jax":
        import jax

        return jax.process_index()
    return 0


def process_count():
    """The number of processes of the run: JAX's process count, 1 on the other backends."""
    if keras.backend.backend() == "jax":
        import jax

        return jax.process_count()
    return 1


def is_chief(index=None):
    """True on process 0, the one that writes checkpoints, logs and models.

    Args:
        index: a process index; default: this process' (`process_index()`).
    """
    return (process_index() if index is None else index) == 0


def gather_across_hosts(value, num_hosts):
    """This integer from every host, in process order (a collective: all hosts call it at the same point).

    Args:
        value: this host's integer.
        num_hosts: processes in the run; with 1 there is no communication.

    Returns:
        A list of `num_hosts` ints.
    """
    if num_hosts == 1:
        return [int(value)]
    from jax.experimental import multihost_utils  # noqa: PLC0415  (multi-host runs are JAX runs)

    return [int(v) for v in np.asarray(multihost_utils.process_allgather(np.int64(value))).reshape(-1)]


class Engine:
    """The chosen data-parallel engine and facts about it.

    Attributes:
        backend: `"tensorflow"` or `"jax"` (or another Keras backend, then
            single device only).
        kind: `"default"`, `"one_device"`, `"mirrored"`, `"tpu"` (TF) or
            `"single"`, `"data_parallel"` (JAX).
        strategy: the `tf.distribute.Strategy` (TF), else `None`.
        distribution: the `keras.distribution.DataParallel` (JAX with more
            than one device), else `None`.
        num_replicas: number of model replicas (devices) in sync.
        num_hosts: number of processes/hosts.
        process_index: index of this process (0 is the chief).
        devices: names of the devices used.
    """

    def __init__(
        self,
        backend,
        kind,
        strategy=None,
        distribution=None,
        num_replicas=1,
        num_hosts=1,
        process_index=0,
        devices=(),
    ):
        self.backend = backend
        self.kind = kind
        self.strategy = strategy
        self.distribution = distribution
        self.num_replicas = int(num_replicas)
        self.num_hosts = int(num_hosts)
        self.process_index = int(process_index)
        self.devices = tuple(devices)

    @classmethod
    def for_strategy(cls, kind, strategy, devices, num_hosts=1):
        """A TensorFlow engine around `strategy`, with as many replicas as it keeps in sync."""
        replicas = strategy.num_replicas_in_sync
        return cls("tensorflow", kind, strategy=strategy, num_replicas=replicas, num_hosts=num_hosts, devices=devices)

    @property
    def is_chief(self):
        """True on process 0 (the one that should write checkpoints/logs)."""
        return is_chief(self.process_index)

    @property
    def devices_per_host(self):
        """Local devices of each host in a JAX data-parallel run (None otherwise).

        Keras splits every batch over all devices, so each host must feed
        batches that divide evenly over its devices, and all hosts the same number.
        """
        return self.num_replicas // self.num_hosts if self.kind == "data_parallel" else None

    def scope(self):
        """Context manager for creating, compiling and fitting the model.

        TF: `strategy.scope()`. JAX: `distribution.scope()` (the data is
        sharded by the distribution active while `fit` runs, so keep `fit`
        inside too). Single device: no-op.
        """
        if self.strategy is not None:
            return self.strategy.scope()
        if self.distribution is not None:
            return self.distribution.scope()
        return contextlib.nullcontext()

    def check_batch_size(self, global_batch_size):
        """Return the per-replica batch size; ValueError if it does not divide.

        Args:
            global_batch_size: examples per step over all replicas and hosts.
        """
        b = check_integer(global_batch_size, "global batch size")
        for what, n in (("replicas (devices)", self.num_replicas), ("hosts", self.num_hosts)):
            if b % n:
                raise ValueError(
                    f"The global batch size {b} is not divisible by the number of {what} "
                    f"{n} ({self.kind} engine on {self.backend}); every replica must get the "
                    f"same number of examples. Use a multiple of {n}, e.g. "
                    f"{max(n, b - b % n)} or {b - b % n + n}."
                )
        return b // self.num_replicas

    def per_host_batch_size(self, global_batch_size):
        """Examples this process feeds per step (after `check_batch_size`)."""
        self.check_batch_size(global_batch_size)
        return int(global_batch_size) // self.num_hosts

    def host_slice(self, global_batch_size):
        """`slice` of this process' rows in a global batch (contiguous blocks)."""
        n = self.per_host_batch_size(global_batch_size)
        return slice(self.process_index * n, (self.process_index + 1) * n)

    def __repr__(self):
        return (
            f"Engine(backend={self.backend!r}, kind={self.kind!r}, num_replicas={self.num_replicas}, "
            f"num_hosts={self.num_hosts}, process_index={self.process_index}, devices={list(self.devices)})"
        )


def _env_int(name):
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else None


def _tf_config_workers():
    """Number of workers declared in TF_CONFIG (0 if unset)."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return 0
    try:
        cluster = json.loads(raw).get("cluster", {})
    except ValueError:
        return 0
    return sum(len(cluster.get(k, [])) for k in ("chief", "worker"))


def _multi_host_args(job_addresses, num_processes, process_id):
    """The JAX multi-host arguments, each falling back to its `KERAS_DISTRIBUTION_*` variable."""
    if job_addresses is None:
        job_addresses = os.environ.get("KERAS_DISTRIBUTION_JOB_ADDRESSES") or None
    if num_processes is None:
        num_processes = _env_int("KERAS_DISTRIBUTION_NUM_PROCESSES")
    if process_id is None:
        process_id = _env_int("KERAS_DISTRIBUTION_PROCESS_ID")
    return job_addresses, num_processes, process_id


def _multi_host_requested(job_addresses, num_processes):
    job_addresses, num_processes, _ = _multi_host_args(job_addresses, num_processes, None)
    if num_processes is not None and num_processes > 1:
        return True
    if job_addresses and "," in job_addresses:
        return True
    return False


def _tf_engine(tpu, devices, job_addresses, num_processes, process_id):
    import tensorflow as tf

    if _multi_host_requested(job_addresses, num_processes) or _tf_config_workers() > 1:
        raise ValueError(_MULTIWORKER_TF_MESSAGE)
    if tpu:
        # Thin and untested (no TPU available to the test-suite). Keras'
        # own TPU examples use the JAX backend, which is the better choice
        # on TPU VMs.
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu="" if tpu is True else tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        strategy = tf.distribute.TPUStrategy(resolver)
        tpus = [d.name for d in tf.config.list_logical_devices("TPU")]
        return Engine.for_strategy("tpu", strategy, tpus, num_hosts=strategy.extended.num_hosts)
    if devices is None or isinstance(devices, int):
        gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
        pool = gpus or [d.name for d in tf.config.list_logical_devices("CPU")]
        if devices is None:
            devices = gpus
        else:
            if devices < 1 or devices > len(pool):
                raise ValueError(f"devices={devices} requested, but only {len(pool)} are available: {pool}")
            devices = pool[:devices]
    devices = [str(d) for d in devices]
    if not devices:
        strategy = tf.distribute.get_strategy()
        return Engine("tensorflow", "default", strategy=strategy, devices=["default"])
    if len(devices) == 1:
        strategy = tf.distribute.OneDeviceStrategy(devices[0])
        return Engine("tensorflow", "one_device", strategy=strategy, devices=devices)
    return Engine.for_strategy("mirrored", tf.distribute.MirroredStrategy(devices), devices)


def _jax_engine(tpu, devices, job_addresses, num_processes, process_id, auto_shard_dataset):
    global _JAX_INITIALIZED
    job_addresses, num_processes, process_id = _multi_host_args(job_addresses, num_processes, process_id)
    multi_host = _multi_host_requested(job_addresses, num_processes)
    # On a TPU pod slice the runtime finds its peers itself (all arguments
    # None). Untested here.
    if multi_host or tpu:
        request = (job_addresses, num_processes, process_id)
        if _JAX_INITIALIZED is None:
            keras.distribution.initialize(job_addresses, num_processes, process_id)
            _JAX_INITIALIZED = request
        elif _JAX_INITIALIZED != request:
            raise ValueError(
                f"The JAX distributed runtime was already initialised with "
                f"(job_addresses, num_processes, process_id)={_JAX_INITIALIZED}; "
                f"it cannot be re-initialised with {request} in the same process."
            )
    import jax

    if tpu and jax.devices()[0].platform != "tpu":
        raise ValueError(f"tpu={tpu!r} was requested but JAX sees no TPU: {jax.devices()}")
    available = keras.distribution.list_devices()
    if devices is None:
        devices = available
    elif isinstance(devices, int):
        if devices < 1 or devices > len(available):
            raise ValueError(f"devices={devices} requested, but only {len(available)} are available: {available}")
        devices = available[:devices]
    devices = [str(d) for d in devices]
    num_hosts = jax.process_count()
    if len(devices) == 1 and num_hosts == 1:
        return Engine("jax", "single", devices=devices)
    distribution = keras.distribution.DataParallel(devices=devices, auto_shard_dataset=auto_shard_dataset)
    return Engine(
        "jax",
        "data_parallel",
        distribution=distribution,
        num_replicas=len(devices),
        num_hosts=num_hosts,
        process_index=process_index(),
        devices=devices,
    )


def get_distribution(
    backend=None,
    tpu=None,
    devices=None,
    job_addresses=None,
    num_processes=None,
    process_id=None,
    global_batch_size=None,
    auto_shard_dataset=True,
):
    """Return the `Engine` for the active backend and the given flags.

    Call it at program start (on JAX multi-host before any JAX computation:
    it initialises the distributed runtime).

    Args:
        backend: `"tensorflow"` or `"jax"`; defaults to the active Keras
            backend. It must equal the active backend (`KERAS_BACKEND` is read
            when `keras` is imported); it exists to make scripts explicit.
        tpu: TPU name/address for `TPUClusterResolver` (TF), or `True` for the
            local TPU. Untested (no TPU available); on TPU VMs prefer the JAX
            backend.
        devices: list of device names (`"/gpu:0"`, `"/cpu:1"` on TF;
            `"gpu:0"`, `"cpu:1"` on JAX) or a count (the first N); default:
            all GPUs on TF (one CPU if none), all devices of all hosts on JAX.
        job_addresses: JAX multi-host: coordinator address `"host:port"` (or
            the comma-separated list of all hosts, first = coordinator).
            Env `KERAS_DISTRIBUTION_JOB_ADDRESSES` is used when `None`.
        num_processes: JAX multi-host: number of processes (env
            `KERAS_DISTRIBUTION_NUM_PROCESSES`).
        process_id: JAX multi-host: this process' index (env
            `KERAS_DISTRIBUTION_PROCESS_ID`).
        global_batch_size: if given, checked with `Engine.check_batch_size`.
        auto_shard_dataset: JAX multi-host: let Keras shard a global
            `tf.data.Dataset` per host (`True`), or feed per-host data
            yourself (`False`; required for numpy inputs).

    Returns:
        An `Engine`.

    Raises:
        ValueError: multi-host on TensorFlow (keras-team/keras#20585, use
            JAX), a backend mismatch, unknown devices, or a global batch size
            not divisible by the replicas.
    """
    active = keras.backend.backend()
    backend = backend or active
    if backend != active:
        raise ValueError(
            f"backend={backend!r} requested but Keras runs on {active!r}; set KERAS_BACKEND={backend} "
            "before importing keras."
        )
    if backend == "tensorflow":
        engine = _tf_engine(tpu, devices, job_addresses, num_processes, process_id)
    elif backend == "jax":
        engine = _jax_engine(tpu, devices, job_addresses, num_processes, process_id, auto_shard_dataset)
    else:
        n = devices if isinstance(devices, int) else (1 if devices is None else len(devices))
        if tpu or n > 1 or _multi_host_requested(job_addresses, num_processes):
            raise ValueError(
                f"Distributed training is supported on the tensorflow and jax backends, not {backend!r}."
            )
        engine = Engine(backend, "single", devices=["default"])
    if global_batch_size is not None:
        engine.check_batch_size(global_batch_size)
    return engine
