"""MAC counting (`nfnet_keras.models.count_macs`) of timm's layers, light NFNets, NF-RegNets and NF-ResNets.

timm's published GMACs are fvcore's counts (timm `benchmark.py`; results CSVs
such as `results/benchmark-infer-amp-nchw-pt240-cu124-rtx3090.csv`, `infer_gmacs`):
conv and linear MACs, plus 5 FLOPs per element of every tensor that goes
through `F.batch_norm` in training mode, which timm's `ScaledStdConv2d` does
with its weight at every call. `count_macs` keeps DeepMind's convention
(convs, linears, attention's linears or 1-D conv), so the oracle here is its
count plus that fvcore term, against timm's figures to timm's two decimals.
"""

import math

import keras
import pytest

from nfnet_keras.models import count_macs, fold_weight_standardization
from nfnet_keras.models.layers import NormFreeBlock, ScaledStdConv2D, SymmetricMaxPool2D
from nfnet_keras.models.layers.eca import eca_kernel_size
from nfnet_keras.models.timm_nfnet import TimmNFNet
from nfnet_keras.weights import loading

# timm's results CSVs (infer_gmacs at infer_img_size), e.g. benchmark-infer-amp-nchw-pt240-cu124-rtx3090.csv.
TIMM_GMACS = {("eca_nfnet_l0", 224): 4.35, ("eca_nfnet_l0", 288): 7.12, ("nfnet_l0", 224): 4.36}
# timm's results/benchmark-infer-amp-nchw-pt240-cu124-rtx3090.csv, one size per kind (all 22 rows agree).
TIMM_NF_GMACS = {
    ("nf_regnet_b0", 256): 0.64,
    ("nf_regnet_b1", 288): 1.02,
    ("nf_resnet26", 224): 2.41,
    ("nf_seresnet26", 224): 2.41,
    ("nf_ecaresnet26", 224): 2.41,
    ("nf_resnet50", 288): 6.88,
}


@pytest.fixture(scope="module")
def eca_nfnet_l0():
    return TimmNFNet("eca_nfnet_l0", input_shape=(None, None, 3))


def fvcore_weight_standardization_flops(model):
    """fvcore's charge for timm's per-call `F.batch_norm` over each conv weight: 5 FLOPs per element."""
    weights = loading.model_weights(model)
    kernels = [weights[key.removesuffix("gain") + "kernel"] for key in weights if key.endswith("/gain")]
    return 5 * sum(math.prod(kernel.shape) for kernel in kernels)


def timm_gmacs(model, size):
    """What timm's results list for `model` at `size` px: our MACs plus fvcore's standardisation term, in G."""
    return round((count_macs(model, size) + fvcore_weight_standardization_flops(model)) / 1e9, 2)


def single_layer_model(layer, input_shape):
    inputs = keras.Input(input_shape)
    return keras.Model(inputs, layer(inputs))


@pytest.mark.parametrize("size", [224, 288])
def test_eca_nfnet_l0_counts_timm_published_gmacs_less_the_weight_standardization(eca_nfnet_l0, size):
    assert timm_gmacs(eca_nfnet_l0, size) == TIMM_GMACS[("eca_nfnet_l0", size)]


def test_eca_nfnet_l0_at_224_px_is_within_3_percent_of_timm_published_gmacs(eca_nfnet_l0):
    assert count_macs(eca_nfnet_l0, 224) / 1e9 == pytest.approx(4.35, rel=0.03)


def test_nfnet_l0_with_squeeze_excite_counts_timm_published_gmacs_less_the_weight_standardization():
    model = TimmNFNet("nfnet_l0", input_shape=(None, None, 3))
    assert timm_gmacs(model, 224) == TIMM_GMACS[("nfnet_l0", 224)]


@pytest.mark.parametrize("name, size", list(TIMM_NF_GMACS))
def test_nf_regnets_and_nf_resnets_count_timm_published_gmacs_less_the_weight_standardization(name, size):
    with keras.StatelessScope(initialize_variables=False):
        model = TimmNFNet(name, input_shape=(None, None, 3))
    assert timm_gmacs(model, size) == TIMM_NF_GMACS[(name, size)]


def test_regnet_block_counts_its_squeeze_excite_on_the_mid_channels():
    def block(attention):
        layer = NormFreeBlock(64, 64, bottle_ratio=2.25, group_size=8, attention=attention, reg=True, name="block")
        return single_layer_model(layer, (8, 8, 64))

    # Mid make_divisible(64 * 2.25, 8) = 144; SE hidden make_divisible(144 * 0.25, 8) = 40.
    assert count_macs(block("se")) - count_macs(block(None)) == 2 * 144 * 40


def test_stem_max_pool_halves_the_map_for_the_convs_after_it():
    inputs = keras.Input((9, 9, 4))
    x = ScaledStdConv2D(4, 1, name="conv")(SymmetricMaxPool2D(3, strides=2, padding=1)(inputs))
    # 9 -> (9 + 2 - 3) // 2 + 1 = 5.
    assert count_macs(keras.Model(inputs, x)) == 5 * 5 * 4 * 4


def test_grouped_std_conv_counts_one_group_of_input_channels_per_output():
    model = single_layer_model(ScaledStdConv2D(16, 3, strides=2, groups=4), (10, 10, 8))
    # Output 5x5 (symmetric padding 1), 16 filters, each 3x3 over 8 / 4 = 2 channels.
    assert count_macs(model) == 5 * 5 * 16 * 3 * 3 * 2


def test_eca_gate_counts_its_kernel_taps_once_per_channel():
    def block(attention):
        layer = NormFreeBlock(256, 256, group_size=8, attention=attention, name="block")
        return single_layer_model(layer, (8, 8, 256))

    assert count_macs(block("eca")) - count_macs(block(None)) == eca_kernel_size(256) * 256


def test_squeeze_excite_gate_counts_its_two_linears():
    def block(attention):
        return single_layer_model(NormFreeBlock(64, 64, group_size=8, attention=attention, name="block"), (8, 8, 64))

    # timm's SE hidden width: make_divisible(64 * 0.25, 8) = 16.
    assert count_macs(block("se")) - count_macs(block(None)) == 2 * 64 * 16


def test_strided_block_counts_each_conv_at_its_map_size():
    layer = NormFreeBlock(32, 64, stride=2, group_size=8, attention=None, name="block")
    # Bottleneck 16 channels in 2 groups of 8; stride 2 takes 9x9 to 5x5 (the shortcut pools 2x2, ceil).
    conv1 = 9 * 9 * 16 * 32
    conv2 = conv2b = 5 * 5 * 16 * (3 * 3 * 8)
    conv3 = 5 * 5 * 64 * 16
    shortcut = 5 * 5 * 64 * 32
    assert count_macs(single_layer_model(layer, (9, 9, 32))) == conv1 + conv2 + conv2b + conv3 + shortcut


def test_folded_timm_model_counts_the_same_macs():
    model = TimmNFNet(
        input_shape=(64, 64, 3), classes=10, channels=(32, 64, 96, 128), stem_chs=32, group_size=8, depths=(1, 1, 1, 1)
    )
    assert count_macs(fold_weight_standardization(model)) == count_macs(model) > 0
