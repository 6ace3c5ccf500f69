"""Prints the README's variant table: parameters and MACs measured on the built models.

    python tools/variant_table.py [--variants F0 F1 ...]

Models are built inside `keras.StatelessScope(initialize_variables=False)`, so no weights are
allocated (the script exits right after, so the deferred variables are never initialised).
"""

import argparse

import keras

import nfnet_keras
from nfnet_keras.models import variants


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--variants", nargs="*", default=variants.variant_names())
    args = parser.parse_args()
    print("| variant | params | MACs @ test | train / test px | dropout | RandAugment | paper top-1 | weights |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.variants:
        config = variants.get_config(name)
        with keras.StatelessScope(initialize_variables=False):
            model = nfnet_keras.NFNet(name)
            params, macs = model.count_params(), nfnet_keras.models.count_macs(model)
        top1 = variants.TOP1.get(name)
        print(
            f"| {name} | {params:,} | {macs / 1e9:.2f} G | {config['train_imsize']} / {config['test_imsize']} "
            f"| {config['drop_rate']} | {config['randaugment'][0]} layers, M={config['randaugment'][1]} "
            f"| {top1 if top1 else '-'}{' (SAM)' if name == 'F6' else ''} "
            f"| {'ImageNet' if name in variants.PRETRAINED_VARIANTS else '-'} |"
        )


if __name__ == "__main__":
    main()
