"""Signal-propagation plots (SPPs): how the activation statistics evolve with depth.

The NF papers (Brock, De & Smith 2021, *Characterizing signal propagation to
close the performance gap in unnormalized ResNets*; Brock et al. 2021,
*High-Performance Large-Scale Image Recognition Without Normalization*) study a
network at initialisation through three statistics of the activations, per
residual block, computed on a batch of real images:

- the **average channel squared mean**: the mean over channels of
  (mean over N, H, W)^2,
- the **average channel variance**: the mean over channels of the variance over
  N, H, W (population variance, ddof=0),
- the **residual average channel variance**: the same variance for the output
  of the block's residual branch.

:func:`signal_propagation` computes them exactly as DeepMind's
`NFNet(..., return_metrics=True)` does (`signal/avg_sq_mean_{k}`,
`signal/avg_var_{k}`, `signal/res_avg_var_{j}`): index k = 0 is the stem output
(the input of the first block), k = j + 1 the output of block j; the residual
variance of block j is taken after the ``2 * squeeze_excite`` gate, before
stochastic depth and the skip gain (:meth:`NFBlock.residual_and_shortcut`).

Two kinds of model are understood:

- **NFNets** built by this package (any model whose layers include
  :class:`~nfnet_keras.models.layers.NFBlock`): the blocks are the `NFBlock` layers.
- **Functional models with additive residual connections**, e.g. the
  BatchNorm ResNets of ``keras.applications`` (``ResNet50``,
  ``ResNet50V2``, ...). Every two-input ``keras.layers.Add`` is one residual
  block. Its two inputs are told apart by their distance (in layers) to the
  nearest tensor both depend on, the block input: the longer path is the
  residual branch, the shorter one the shortcut (identity or projection).
  The block output is the ``Add`` output, or, when that feeds only an
  activation layer (post-activation ResNets such as ``ResNet50``, where it is
  the ``conv{s}_block{b}_out`` ReLU), that activation's output. So for
  ``keras.applications.ResNet50`` the block outputs are the ``*_out`` layers,
  k = 0 is ``pool1_pool`` (the input of ``conv2_block1``), and the residual
  branch is the ``*_3_bn`` output; for ``ResNet50V2`` the block outputs are
  the ``*_out`` additions and k = 0 is the first block's pre-activation
  (``conv2_block1_preact_relu``), where its two paths split.

BatchNorm networks normalise with batch statistics only in training mode: pass
``training=True`` to see that (the paper's BN-ResNet SPPs); the moving averages
that a training-mode call updates are restored afterwards. Leave
``training=False`` (the default) for NFNets, whose stochastic depth would
otherwise drop residual branches at random.

Helpers for the paper's comparisons: :func:`set_skip_gains` (e.g. skip gains of
1 instead of the zero init) and :func:`set_activation_gamma` (gamma = 1, i.e.
the same network without the variance-preserving activation scaling).

All statistics are reduced on the device with ``keras.ops`` in float32 (two-pass
mean and variance per channel) and combined in float64 on the host, so any
backend works and large image sets can be processed in chunks
(``batch_size``) with the same result as one batch.

:func:`plot_signal_propagation` draws the SPP with matplotlib, an optional
dependency (``pip install "nfnet-keras[plots]"``).
"""

import collections
import dataclasses

import keras
import numpy as np
from keras import ops

from nfnet_keras import keras_internals
from nfnet_keras.models.layers import NFBlock, ScaledActivation

__all__ = [
    "SignalPropagation",
    "signal_propagation",
    "plot_signal_propagation",
    "set_skip_gains",
    "set_activation_gamma",
]


@dataclasses.dataclass(frozen=True)
class SignalPropagation:
    """Per-block activation statistics of one model on one set of images.

    Attributes:
        names: ``K + 1`` labels: ``"stem"`` (k = 0) and then the name of each
            block (the `NFBlock` layer, or the block-output layer).
        avg_sq_mean: float64 ``(K + 1,)``, average channel squared mean of the
            stem output (k = 0) and of each block output (k = j + 1).
        avg_var: float64 ``(K + 1,)``, average channel variance, same indexing.
        res_avg_var: float64 ``(K,)``, average channel variance of each block's
            residual branch.
        transition: bool ``(K,)``, whether block j changes the shape or has a
            projection shortcut (the blocks where NF networks reset the
            expected variance).
        num_images: how many images the statistics were computed on.
    """

    names: tuple
    avg_sq_mean: np.ndarray
    avg_var: np.ndarray
    res_avg_var: np.ndarray
    transition: np.ndarray
    num_images: int

    @property
    def num_blocks(self):
        return len(self.res_avg_var)

    def as_dict(self):
        """The metrics under DeepMind's names: ``avg_sq_mean_{k}``, ``avg_var_{k}``, ``res_avg_var_{j}``."""
        out = {}
        for k in range(len(self.avg_var)):
            out[f"avg_sq_mean_{k}"] = float(self.avg_sq_mean[k])
            out[f"avg_var_{k}"] = float(self.avg_var[k])
        for j in range(len(self.res_avg_var)):
            out[f"res_avg_var_{j}"] = float(self.res_avg_var[j])
        return out


# ----------------------------------------------------------------------------
# Model helpers
# ----------------------------------------------------------------------------
def _nf_blocks(model):
    return [layer for layer in model.layers if isinstance(layer, NFBlock)]


def set_skip_gains(model, value):
    """Sets the skip gain of every `NFBlock` of `model` to `value` (in place).

    The default init is 0 (every block starts as its shortcut); 1 gives the
    `x + alpha * f(x / beta)` networks of the NF-ResNet paper, whose variance
    grows by about `alpha**2` per block.

    Returns:
        The number of blocks changed.

    Raises:
        ValueError: if `model` has no `NFBlock` layers.
    """
    blocks = _nf_blocks(model)
    if not blocks:
        raise ValueError(f"model '{model.name}' has no NFBlock layers: it is not an NFNet of this package")
    for block in blocks:
        block.skip_gain.assign(ops.cast(float(value), block.skip_gain.dtype))
    return len(blocks)


def set_activation_gamma(model, gamma):
    """Sets `gamma` of every `ScaledActivation` of `model` to `gamma` (in place).

    `set_activation_gamma(model, 1.0)` turns an NFNet into the same network
    without the variance-preserving gammas (`act(x) = gelu(x)` instead of
    `gelu(x) * 1.7015`), the ablation of the NF papers. Weights and the
    alpha/beta constants are unchanged.

    The value is read at call time, so call this before the model runs (or
    before a new `predict`/`fit` traces it). It is not part of the model's
    saved configuration: the activations inside `NFBlock` layers take their
    gamma from the activation name, so a saved and reloaded model has the
    default gammas again.

    Returns:
        The number of `ScaledActivation` layers changed.

    Raises:
        ValueError: if `model` has no `ScaledActivation` layers, or `gamma` is
            not a finite positive number.
    """
    gamma = float(gamma)
    if not np.isfinite(gamma) or gamma <= 0.0:
        raise ValueError(f"gamma must be a finite positive number, got {gamma}")
    acts = [layer for layer in keras_internals.nested_layers(model) if isinstance(layer, ScaledActivation)]
    if not acts:
        raise ValueError(f"model '{model.name}' has no ScaledActivation layers")
    for act in acts:
        act.gamma = gamma
    return len(acts)


# ----------------------------------------------------------------------------
# Finding the residual blocks of a functional model
# ----------------------------------------------------------------------------
def _parents(tensor):
    history = getattr(tensor, "_keras_history", None)
    if history is None or history.operation is None:
        return []
    node = history.operation._inbound_nodes[history.node_index]  # noqa: SLF001
    return list(node.input_tensors)


def _distances(tensor):
    """Breadth-first `{id(t): (layers between t and tensor, t)}` over the ancestors of `tensor`."""
    found = {id(tensor): (0, tensor)}
    frontier = [tensor]
    while frontier:
        following = []
        for current in frontier:
            depth = found[id(current)][0] + 1
            for parent in _parents(current):
                if id(parent) not in found:
                    found[id(parent)] = (depth, parent)
                    following.append(parent)
        frontier = following
    return found


def _block_output(add_layer, model_layer_ids):
    """The Add output, or the output of the activation that alone consumes it."""
    consumers = [
        node.operation for node in add_layer._outbound_nodes if id(node.operation) in model_layer_ids  # noqa: SLF001
    ]
    if len(consumers) == 1 and isinstance(consumers[0], (keras.layers.Activation, keras.layers.ReLU)):
        return consumers[0].output, consumers[0].name
    return add_layer.output, add_layer.name


_AddBlock = collections.namedtuple("_AddBlock", "name block_input residual output transition")


def _add_blocks(model):
    ids = {id(layer) for layer in model.layers}
    blocks = []
    for layer in model.layers:
        if not isinstance(layer, keras.layers.Add) or len(layer._inbound_nodes) != 1:  # noqa: SLF001
            continue
        inputs = layer._inbound_nodes[0].input_tensors  # noqa: SLF001
        if len(inputs) != 2:
            continue
        first, second = (_distances(t) for t in inputs)
        common = set(first) & set(second)
        if not common:
            continue
        # The nearest common ancestor is where the block's two paths split: the block input.
        split = min(common, key=lambda i: (first[i][0] + second[i][0], max(first[i][0], second[i][0])))
        d_first, d_second = first[split][0], second[split][0]
        # The residual branch is the longer path; Keras' ResNets write Add()([shortcut, residual]).
        residual, shortcut_length = (inputs[0], d_second) if d_first > d_second else (inputs[1], d_first)
        output, name = _block_output(layer, ids)
        block_input = first[split][1]
        transition = shortcut_length > 0 or tuple(block_input.shape) != tuple(output.shape)
        blocks.append(_AddBlock(name, block_input, residual, output, bool(transition)))
    return blocks


# ----------------------------------------------------------------------------
# Statistics
# ----------------------------------------------------------------------------
class _Moments:
    """Per-channel count, mean and sum of squared deviations, merged over chunks in float64."""

    def __init__(self):
        self.count = 0
        self.mean = None
        self.m2 = None

    def add(self, x):
        x = ops.cast(x, "float32")
        axes = tuple(range(len(x.shape) - 1))
        count = int(np.prod([int(s) for s in x.shape[:-1]]))
        mean = ops.mean(x, axis=axes)
        m2 = ops.sum(ops.square(x - mean), axis=axes)
        mean = ops.convert_to_numpy(mean).astype(np.float64)
        m2 = ops.convert_to_numpy(m2).astype(np.float64)
        if self.mean is None:
            self.count, self.mean, self.m2 = count, mean, m2
            return
        total = self.count + count
        delta = mean - self.mean
        self.mean = self.mean + delta * (count / total)
        self.m2 = self.m2 + m2 + delta**2 * (self.count * count / total)
        self.count = total

    def avg_sq_mean(self):
        return float(np.mean(self.mean**2))

    def avg_var(self):
        return float(np.mean(self.m2 / self.count))


def _check_images(model, images, batch_size):
    if len(model.inputs) != 1:
        raise ValueError(f"signal_propagation needs a model with one input; '{model.name}' has {len(model.inputs)}")
    if not hasattr(images, "shape"):
        images = np.asarray(images)
    shape = tuple(images.shape)
    expected = tuple(model.inputs[0].shape)
    if len(shape) != len(expected):
        raise ValueError(
            f"images must be a batch of shape {('N',) + expected[1:]} (already preprocessed for the model); "
            f"got shape {shape}"
        )
    if shape[0] == 0:
        raise ValueError("images is an empty batch: the statistics need at least one image")
    for got, want in zip(shape[1:], expected[1:]):
        if want is not None and got != want:
            raise ValueError(f"images of shape {shape} do not fit the model input {('N',) + expected[1:]}")
    if isinstance(images, np.ndarray):
        if not np.issubdtype(images.dtype, np.number):
            raise ValueError(f"images must be numeric, got dtype {images.dtype}")
        if not np.all(np.isfinite(images)):
            raise ValueError("images contain NaN or infinite values")
    elif not bool(ops.convert_to_numpy(ops.all(ops.isfinite(ops.cast(images, "float32"))))):
        raise ValueError("images contain NaN or infinite values")
    if batch_size is None:
        batch_size = shape[0]
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int or None, got {batch_size!r}")
    return images, shape[0], int(batch_size)


def signal_propagation(model, images, *, batch_size=None, training=False):
    """Signal-propagation statistics of `model` on `images`, per residual block.

    Args:
        model: an NFNet of this package (blocks: its `NFBlock` layers) or a
            functional model with residual `Add` layers, such as
            `keras.applications.ResNet50(weights=None)` (see the module
            docstring for how its blocks are found).
        images: a batch `(N, H, W, C)` already preprocessed for the model
            (e.g. `nfnet_keras.prepare_images(paths, 256)`); a numpy array or
            a backend tensor. Use real photos: white noise has no spatial
            correlation, so the average-pool shortcuts of transition blocks
            remove much more of its variance than of a photo's.
        batch_size: evaluate the images in chunks of this many (default: all
            at once). The statistics are merged exactly, so for a model
            without batch-dependent layers the result does not depend on it;
            with `training=True` BatchNorm normalises each chunk on its own.
        training: the `training` flag of the forward pass. `True` makes
            BatchNorm use batch statistics; the BatchNorm moving averages (all
            non-trainable variables) are restored afterwards.

    Returns:
        A `SignalPropagation`: `avg_sq_mean` and `avg_var` for the stem output
        (k = 0) and every block output (k = j + 1), `res_avg_var` for every
        block's residual branch (for an `NFBlock`: after the `2 * SE` gate,
        before stochastic depth and the skip gain), the block names and which
        blocks are transitions. `as_dict()` gives DeepMind's metric names.

    Raises:
        ValueError: for a model with no residual blocks or several inputs, or
            images that are not a non-empty, finite batch of the model's input
            shape; also for a bad `batch_size`.
    """
    images, num_images, batch_size = _check_images(model, images, batch_size)
    nf_blocks = _nf_blocks(model)
    if nf_blocks:
        names = ("stem",) + tuple(block.name for block in nf_blocks)
        transition = np.array([block.use_projection for block in nf_blocks], dtype=bool)
        probe = keras.Model(
            model.inputs[0], [block.input for block in nf_blocks] + [block.output for block in nf_blocks]
        )
        num_blocks = len(nf_blocks)
    else:
        add_blocks = _add_blocks(model)
        if not add_blocks:
            raise ValueError(
                f"model '{model.name}' has no residual blocks: neither NFBlock layers nor two-input Add layers "
                "whose inputs share an ancestor"
            )
        names = ("stem",) + tuple(block.name for block in add_blocks)
        transition = np.array([block.transition for block in add_blocks], dtype=bool)
        probe = keras.Model(
            model.inputs[0],
            [add_blocks[0].block_input]
            + [block.output for block in add_blocks]
            + [block.residual for block in add_blocks],
        )
        num_blocks = len(add_blocks)

    saved = [ops.convert_to_numpy(v) for v in model.non_trainable_variables] if training else None
    activations = [_Moments() for _ in range(num_blocks + 1)]
    residuals = [_Moments() for _ in range(num_blocks)]
    try:
        for start in range(0, num_images, batch_size):
            chunk = images[start : start + batch_size]
            chunk = ops.cast(chunk, model.inputs[0].dtype or "float32")
            outputs = probe(chunk, training=training)
            if nf_blocks:
                block_inputs, block_outputs = outputs[:num_blocks], outputs[num_blocks:]
                activations[0].add(block_inputs[0])
                for j, block in enumerate(nf_blocks):
                    activations[j + 1].add(block_outputs[j])
                    branch, _ = block.residual_and_shortcut(block_inputs[j])
                    residuals[j].add(branch)
            else:
                for k in range(num_blocks + 1):
                    activations[k].add(outputs[k])
                for j in range(num_blocks):
                    residuals[j].add(outputs[num_blocks + 1 + j])
            del outputs
    finally:
        if saved is not None:
            for variable, value in zip(model.non_trainable_variables, saved):
                variable.assign(value)

    return SignalPropagation(
        names=names,
        avg_sq_mean=np.array([m.avg_sq_mean() for m in activations]),
        avg_var=np.array([m.avg_var() for m in activations]),
        res_avg_var=np.array([m.avg_var() for m in residuals]),
        transition=transition,
        num_images=num_images,
    )


# ----------------------------------------------------------------------------
# Plot
# ----------------------------------------------------------------------------
def _import_pyplot():
    try:
        from matplotlib import pyplot  # noqa: PLC0415
    except ImportError as error:
        raise ImportError(
            "plot_signal_propagation needs matplotlib, an optional dependency: "
            'pip install "nfnet-keras[plots]" (or pip install matplotlib)'
        ) from error
    return pyplot


def _as_curves(results, labels):
    if isinstance(results, SignalPropagation):
        results = [results]
    if isinstance(results, dict):
        if labels is not None:
            raise ValueError("pass labels only with a list of results, not with a dict (its keys are the labels)")
        labels, results = list(results.keys()), list(results.values())
    results = list(results)
    if not results:
        raise ValueError("nothing to plot: results is empty")
    for result in results:
        if not isinstance(result, SignalPropagation):
            raise TypeError(f"expected SignalPropagation results (from signal_propagation), got {type(result).__name__}")
    if labels is None:
        labels = [None] * len(results) if len(results) == 1 else [f"model {i}" for i in range(len(results))]
    labels = list(labels)
    if len(labels) != len(results):
        raise ValueError(f"{len(labels)} labels for {len(results)} results")
    return list(zip(labels, results))


def plot_signal_propagation(results, labels=None, *, log_scale=False, title=None, axes=None, figsize=(14, 4)):
    """Draws signal-propagation plots: three panels against block depth.

    Panels: average channel squared mean and average channel variance of the
    stem output (x = 0) and of each block output (x = j + 1), and the residual
    branch's average channel variance (at x = j + 1). Transition blocks are
    drawn with open squares.

    Args:
        results: a `SignalPropagation`, a list of them (with `labels`), or a
            dict `{label: SignalPropagation}`.
        labels: legend labels for a list of results.
        log_scale: logarithmic y axes (useful when curves differ by orders of
            magnitude, e.g. with gamma = 1).
        title: optional figure title.
        axes: three matplotlib axes to draw into (default: a new figure).
        figsize: size of a new figure, in inches.

    Returns:
        The matplotlib `Figure`.

    Raises:
        ImportError: if matplotlib is not installed.
        ValueError, TypeError: for empty or mismatched inputs.
    """
    curves = _as_curves(results, labels)
    pyplot = _import_pyplot()
    if axes is None:
        fig, axes = pyplot.subplots(1, 3, figsize=figsize)
    else:
        axes = list(np.ravel(axes))
        if len(axes) != 3:
            raise ValueError(f"axes must hold 3 matplotlib axes, got {len(axes)}")
        fig = axes[0].figure
    panels = (
        ("Average channel squared mean", "avg_sq_mean"),
        ("Average channel variance", "avg_var"),
        ("Residual branch: average channel variance", "res_avg_var"),
    )
    for ax, (panel_title, key) in zip(axes, panels):
        for label, result in curves:
            values = getattr(result, key)
            depth = np.arange(len(values)) + (1 if key == "res_avg_var" else 0)
            (line,) = ax.plot(depth, values, marker="o", markersize=3, label=label)
            marked = np.flatnonzero(result.transition) + 1
            ax.plot(
                marked,
                values[marked - 1] if key == "res_avg_var" else values[marked],
                linestyle="none",
                marker="s",
                markersize=7,
                markerfacecolor="none",
                color=line.get_color(),
            )
        ax.set_title(panel_title, fontsize=10)
        ax.set_xlabel("block depth (0 = stem output)" if key != "res_avg_var" else "block depth")
        if log_scale:
            ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
    if any(label is not None for label, _ in curves):
        axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
