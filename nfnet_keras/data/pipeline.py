"""``tf.data`` input pipelines for NFNet training and evaluation, on any Keras backend.

Training (:func:`make_train_dataset`), DeepMind's ``cutmix_mixup_randaugment_NNN``
recipe (``nfnets/dataset.py`` with ``augment_before_mix=False``)::

    source examples (sharded per host, shuffled, repeated)
      -> decode -> Inception crop -> flip -> bicubic resize        (per image)
      -> batch at 2x -> MixUp on the first half, CutMix on the second (soft labels)
      -> clip to [0, 255] and truncate to uint8                     (per batch)
      -> unbatch -> RandAugment(N, M)                               (per image)
      -> batch -> normalise -> prefetch                             (per batch)

Evaluation (:func:`make_eval_dataset`): decode -> the model's evaluation
transform (:func:`nfnet_keras.preprocessing.eval_transform_tf`: squash-resize
to ``S + crop_padding``, centre crop ``S``; DeepMind's ``resize_crop_32``)
-> normalise with the model's mean and std -> batch.

Both yield ``(images, labels)``: float32 ``(B, S, S, 3)`` normalised with
:func:`nfnet_keras.preprocessing.normalize` and the model's mean and std, and float32 ``(B, num_classes)`` one-hot (eval) or soft (train)
labels. Only TensorFlow ops run inside the pipeline, so it feeds
``model.fit`` on the TensorFlow, JAX or PyTorch backend alike.

Determinism: with ``seed`` set, every random draw uses a stateless seed derived
from ``(seed, host_index)`` and the example's position in the stream, the
shuffle is seeded and ``tf.data`` runs with ``deterministic=True``: the same
seed gives the same batches, whatever the parallelism. With ``seed=None`` a
random seed is drawn and ``tf.data`` may reorder elements for speed.

Multi-host: pass ``num_hosts`` and ``host_index`` (batches are per host,
``global_batch_size // num_hosts``) or ``input_context`` (a
``tf.distribute.InputContext``, e.g. inside
``strategy.distribute_datasets_from_function``; batches are then per replica).
With a seed, an in-memory or folder source and no ``shuffle_buffer``, every host
walks the one global order and keeps its rows of each global batch, with the
draws keyed by the global position: host ``h``'s batch at step ``t`` is rows
``h*b .. (h+1)*b`` of the batch one host would make at step ``t``, whatever the
number of hosts, so a run resumes exactly on another number of hosts. Each host
decodes and augments only its rows. Otherwise (TFDS, ``seed=None``, a shuffle
buffer, ``input_context``) the examples are split with
``dataset.shard(num_hosts, host_index)`` before shuffling: hosts never see the
same example within an epoch, but the stream depends on the number of hosts.
MixUp/CutMix mix within each host's rows.

Throughput: ``python benchmarks/input_pipeline.py`` builds and times a pipeline.
"""

import numpy as np
import tensorflow as tf

from nfnet_keras.checks import check_integer
from nfnet_keras.data import augment, sources
from nfnet_keras.preprocessing.normalization import MEAN_RGB, STDDEV_RGB, normalize
from nfnet_keras.preprocessing.settings import resolve_preprocessing
from nfnet_keras.preprocessing.transform import eval_transform_tf

__all__ = [
    "evaluated_examples",
    "make_train_dataset",
    "make_eval_dataset",
    "randaugment_for_variant",
]

AUTOTUNE = tf.data.AUTOTUNE


def randaugment_for_variant(variant):
    """``(num_layers, magnitude)`` of a variant: F0 (4, 5), F1-F2 (4, 10), F3+ (4, 15)."""
    from nfnet_keras.models.variants import get_config  # noqa: PLC0415

    return tuple(get_config(variant)["randaugment"])


def _resolve_randaugment(randaugment):
    if randaugment is None:
        return None
    if isinstance(randaugment, str):
        randaugment = randaugment_for_variant(randaugment)
    try:
        num_layers, magnitude = randaugment
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"randaugment must be None, a variant name or (num_layers, magnitude). Received: {randaugment!r}"
        ) from err
    num_layers = check_integer(num_layers, "RandAugment num_layers", minimum=0)
    if not isinstance(magnitude, (int, float, np.integer, np.floating)) or magnitude < 0:
        raise ValueError(f"RandAugment magnitude must be a non-negative number. Received: {magnitude!r}")
    if num_layers == 0:
        return None
    return num_layers, magnitude


def _host_setup(global_batch_size, input_context, num_hosts, host_index):
    """Return (local batch size, number of shards, shard index)."""
    global_batch_size = check_integer(global_batch_size, "global_batch_size")
    if input_context is not None:
        local = input_context.get_per_replica_batch_size(global_batch_size)
        return int(local), int(input_context.num_input_pipelines), int(input_context.input_pipeline_id)
    num_hosts = check_integer(num_hosts, "num_hosts")
    host_index = check_integer(host_index, "host_index", minimum=0)
    if host_index >= num_hosts:
        raise ValueError(f"host_index must be below num_hosts ({num_hosts}), got {host_index}")
    if global_batch_size % num_hosts:
        raise ValueError(
            f"global_batch_size {global_batch_size} is not divisible by num_hosts {num_hosts}"
        )
    return global_batch_size // num_hosts, num_hosts, host_index


def _resolve_source(source, data_dir, manual_dir, skip_corrupt, verify):
    return sources.load_source(
        source, data_dir=data_dir, manual_dir=manual_dir, skip_corrupt=skip_corrupt, verify=verify
    )


def _resolve_num_classes(source, num_classes):
    if num_classes is None:
        return source.num_classes
    num_classes = check_integer(num_classes, "num_classes")
    if num_classes < source.num_classes:
        raise ValueError(
            f"num_classes={num_classes} is smaller than the {source.num_classes} classes of {source.name!r}"
        )
    return num_classes


def _options(deterministic, sharded):
    options = tf.data.Options()
    options.deterministic = bool(deterministic)
    options.experimental_optimization.map_parallelization = True
    options.experimental_optimization.parallel_batch = True
    if sharded:
        # Already split per host: keep tf.distribute from sharding again.
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return options


def make_train_dataset(
    source,
    global_batch_size,
    image_size,
    randaugment=(4, 5),
    seed=None,
    num_classes=None,
    input_context=None,
    num_hosts=1,
    host_index=0,
    *,
    split="train",
    mixup_cutmix=True,
    mixup_alpha=0.2,
    random_crop=True,
    random_flip=True,
    crop_area_range=(0.08, 1.0),
    translate_const=augment.TRANSLATE_CONST,
    cutout_const=augment.CUTOUT_CONST,
    dm_quirks=True,
    shuffle_buffer=None,
    data_dir=None,
    manual_dir=None,
    skip_corrupt=False,
    verify=True,
    start_step=0,
    mean=MEAN_RGB,
    std=STDDEV_RGB,
):
    """The NFNet training pipeline: an infinite dataset of ``(images, soft labels)``.

    Args:
        source: anything :func:`nfnet_keras.data.sources.load_source` accepts
            (``None``/``"cifar10_sample"``, an npz or folder path, ``"tfds:NAME"``)
            or an :class:`~nfnet_keras.data.sources.ImageSource`.
        global_batch_size: batch size summed over all hosts/replicas.
        image_size: training size ``S`` (the variant's ``train_imsize``), int or
            ``(h, w)``.
        randaugment: ``(N, M)``, a variant name (``"F0"`` -> ``(4, 5)``), or
            ``None`` / ``(0, M)`` for none. DeepMind: 405 for F0, 410 for F1-F2,
            415 for F3 and up.
        seed: int for a reproducible stream, or ``None``.
        num_classes: label width (default: the source's class count).
        input_context: a ``tf.distribute.InputContext``; overrides ``num_hosts``
            and ``host_index`` and makes batches per replica.
        num_hosts, host_index: shard the examples over hosts.
        split: ``"train"`` (default) or another split of the source.
        mixup_cutmix: MixUp on the first half / CutMix on the second half of
            each batch (needs an even per-host batch). ``False`` gives one-hot labels.
        mixup_alpha: MixUp Beta parameter (DeepMind: 0.2).
        random_crop, random_flip: the Inception crop and the horizontal flip;
            with ``random_crop=False`` the whole image is squash-resized.
        crop_area_range: area range of the Inception crop (DeepMind: 0.08-1).
        translate_const, cutout_const: RandAugment pixel constants at
            magnitude 10 (DeepMind: 100 and 40, sized for 224 px images).
        dm_quirks: reproduce DeepMind's Solarize/Contrast uint8 behaviour
            (see :mod:`nfnet_keras.data.augment`).
        shuffle_buffer: default: the whole shard for in-memory and folder
            sources, 10,000 for TFDS.
        data_dir, manual_dir, skip_corrupt, verify: passed to ``load_source``.
        start_step: the first batch to produce: batch ``k`` of a stream started at
            ``start_step=j`` equals batch ``j + k`` of a stream started at 0 (every
            random draw is keyed by the example's position, and the skip happens on
            the raw, undecoded examples, so resuming costs no augmentation work).
        mean, std: the per-channel normalisation on 0..255 pixels: the model's
            (``model.preprocessing.mean``/``.std``); default ImageNet's.

    Returns:
        A repeated ``tf.data.Dataset`` of ``(float32 (B, S, S, 3), float32 (B, C))``
        with a static batch dimension ``B``.
    """
    src = _resolve_source(source, data_dir, manual_dir, skip_corrupt, verify)
    classes = _resolve_num_classes(src, num_classes)
    size = augment.height_width(image_size)
    ra = _resolve_randaugment(randaugment)
    local_batch, shards, index = _host_setup(global_batch_size, input_context, num_hosts, host_index)
    if mixup_cutmix and local_batch % 2:
        raise ValueError(
            f"MixUp + CutMix needs an even per-host batch (half MixUp, half CutMix); got {local_batch}"
        )
    deterministic = seed is not None
    if seed is None:
        seed = int(np.random.SeedSequence().generate_state(1, dtype=np.uint32)[0])
    seed = int(seed)
    start_step = check_integer(start_step, "start_step", minimum=0)
    factor = 2 if mixup_cutmix else 1  # raw examples per output example
    # One global stream, split by rows of the global batch: every host sees the order and the
    # draws one host would (whatever the number of hosts, so a run may resume on another), and
    # decodes only its rows. TFDS sources (too large to list on every host), a shuffle buffer and
    # seed=None keep per-host shards, with their own draws.
    global_order = deterministic and shuffle_buffer is None and input_context is None and src.kind != "tfds"
    hosts, host = (shards, index) if global_order else (1, 0)
    base = tf.constant([seed, 0 if global_order else index], dtype=tf.int64)
    example_key = tf.random.experimental.stateless_fold_in(base, 0)
    augment_key = tf.random.experimental.stateless_fold_in(base, 1)

    def global_position(count, rows):
        """The position in the global stream of this host's element `count`, `rows` per host and step."""
        return count // rows * rows * hosts + host * rows + count % rows

    ds = src.make_dataset(
        split,
        num_shards=1 if global_order else shards,
        shard_index=0 if global_order else index,
        shuffle=True,
        seed=seed,
        shuffle_buffer=shuffle_buffer,
        repeat=True,
    )
    ds = ds.enumerate().skip(start_step * factor * local_batch * hosts)
    if hosts > 1:
        rows = factor * local_batch
        ds = ds.filter(lambda position, example: position % (rows * hosts) // rows == host)

    def prepare(count, example):
        raw, label = example
        key = tf.random.experimental.stateless_fold_in(example_key, count)
        transform_key, mixup_key, box_key = tf.unstack(tf.random.experimental.stateless_split(key, 3))
        image = augment.train_transform(
            src.decode(raw), size, transform_key, random_crop, random_flip, crop_area_range
        )
        out = {"images": image, "labels": tf.one_hot(label, classes, dtype=tf.float32)}
        if mixup_cutmix:
            out["mixup_ratio"] = augment.sample_mixup_ratio(mixup_key, mixup_alpha)
            out["cutmix_box"] = augment.sample_cutmix_box(size[0], size[1], box_key)
        return out

    ds = ds.map(prepare, num_parallel_calls=AUTOTUNE, deterministic=deterministic)

    if mixup_cutmix:
        ds = ds.batch(2 * local_batch, drop_remainder=True)

        def mix(batch):
            masks = augment.cutmix_mask(size[0], size[1], batch["cutmix_box"])
            images, labels = augment.mixup_cutmix(batch["images"], batch["labels"], batch["mixup_ratio"], masks)
            # RandAugment works on uint8: convert the whole batch here, in one op, not image by image.
            return (augment.clip_to_uint8(images) if ra is not None else images), labels

        ds = ds.map(mix, num_parallel_calls=AUTOTUNE, deterministic=deterministic)
        ds = ds.unbatch()
    else:
        ds = ds.map(lambda ex: (ex["images"], ex["labels"]))

    if ra is not None:
        num_layers, magnitude = ra

        def rand_augment(count, example):
            image, labels = example
            key = tf.random.experimental.stateless_fold_in(augment_key, global_position(count, local_batch))
            image = augment.randaugment(
                image,
                num_layers,
                magnitude,
                key,
                translate_const=translate_const,
                cutout_const=cutout_const,
                dm_quirks=dm_quirks,
            )
            return image, labels

        ds = ds.enumerate(start=start_step * local_batch).map(rand_augment, num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    # Batches of uint8 (after RandAugment) are a quarter of float32 ones; normalising a whole
    # batch is one vectorised op instead of one per image.
    ds = ds.batch(local_batch, drop_remainder=True)
    ds = ds.map(lambda x, y: (normalize(tf.cast(x, tf.float32), mean, std), y), num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    ds = ds.prefetch(AUTOTUNE)
    return ds.with_options(_options(deterministic, shards > 1 or input_context is not None))


def evaluated_examples(num_examples, num_hosts, devices_per_host):
    """How many of `num_examples` a data-parallel evaluation reads (see `make_eval_dataset`)."""
    per_host = num_examples // num_hosts // devices_per_host * devices_per_host
    return per_host * num_hosts


def make_eval_dataset(
    source,
    global_batch_size,
    preprocessing,
    num_classes=None,
    input_context=None,
    num_hosts=1,
    host_index=0,
    *,
    split="eval",
    drop_remainder=False,
    devices_per_host=None,
    data_dir=None,
    manual_dir=None,
    skip_corrupt=False,
    verify=True,
):
    """The evaluation pipeline: one pass of ``(images, one-hot labels)`` in source order.

    Each image goes through the model's evaluation transform
    (:func:`nfnet_keras.preprocessing.eval_transform_tf`: squash-resize to
    ``S + crop_padding``, bicubic, no antialiasing; centre crop ``S``) and is
    normalised with the model's mean and std: the same numbers as
    :func:`nfnet_keras.preprocessing.prepare_images` on the TensorFlow backend.

    Args:
        source, num_classes, input_context, num_hosts, host_index, data_dir,
            manual_dir, skip_corrupt, verify: as in :func:`make_train_dataset`.
        global_batch_size: summed over hosts/replicas.
        preprocessing: the model the images are for (its
            ``model.preprocessing``), an ``EvalPreprocessing``, or an ``int``
            image side ``S`` (DeepMind's padding of 32 and ImageNet statistics
            then apply).
        split: ``"eval"`` (the source's validation/val/test split) by default.
        drop_remainder: drop a last, smaller batch (default: keep it).
        devices_per_host: for a JAX data-parallel run (several devices or
            hosts), the local devices of each host. Every host then reads the
            same number of examples, a multiple of this, so that all hosts run
            the same batches and every batch splits evenly over the devices:
            fewer than `num_hosts * devices_per_host` examples are left out.
    """
    preprocessing = resolve_preprocessing(preprocessing)
    src = _resolve_source(source, data_dir, manual_dir, skip_corrupt, verify)
    classes = _resolve_num_classes(src, num_classes)
    local_batch, shards, index = _host_setup(global_batch_size, input_context, num_hosts, host_index)
    ds = src.make_dataset(split, num_shards=shards, shard_index=index, shuffle=False, repeat=False)
    if devices_per_host:
        ds = ds.take(evaluated_examples(src.num_examples(split), shards, devices_per_host) // shards)

    def prepare(raw, label):
        image = eval_transform_tf(src.decode(raw), preprocessing)
        image = normalize(image, preprocessing.mean, preprocessing.std)
        return image, tf.one_hot(label, classes, dtype=tf.float32)

    ds = ds.map(prepare, num_parallel_calls=AUTOTUNE, deterministic=True)
    ds = ds.batch(local_batch, drop_remainder=drop_remainder)
    ds = ds.prefetch(AUTOTUNE)
    return ds.with_options(_options(True, shards > 1 or input_context is not None))
