"""How much of the predicted class's map lies on the object: Fashion-MNIST garments against their background.

For every test image: the predicted class's map (:func:`ninlab.class_maps`, upsampled to 28 x 28: the 7 x 7 maps
of nin_fast are a whole factor smaller, so the upsampled map keeps its mean), its positive part (where the map
raises the class's logit), and the share of that positive mass on garment pixels (pixel value > 0; Fashion-MNIST's
background is exactly 0). Printed: the mean share over the test set, the mean share of the image the garment
covers (what a map spread evenly over the image would score), and how many images were counted.

    PYTHONPATH=src python scripts/class_map_localisation.py --pretrained fashion-mnist --data-root DIR
    PYTHONPATH=src python scripts/class_map_localisation.py --checkpoint runs/.../best.ckpt --data-root DIR
"""

from __future__ import annotations

import argparse

import torch

from ninlab import class_maps
from ninlab.data import load_dataset
from ninlab.inference.loading import load_classifier, load_pretrained_classifier
from ninlab.inference.predict import network_inputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint")
    source.add_argument("--pretrained")
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--batch-size", type=int, default=250)
    args = parser.parse_args()

    model = load_pretrained_classifier(args.pretrained) if args.pretrained else load_classifier(args.checkpoint)
    test = load_dataset(args.dataset, "test", args.data_root)
    on_object, coverage, correct = [], [], 0
    for start in range(0, len(test), args.batch_size):
        pixels = test.images[start : start + args.batch_size]
        x = network_inputs(model, pixels)
        maps = class_maps(model, x)
        predicted = maps.mean((2, 3)).argmax(1)
        correct += int((predicted == test.labels[start : start + args.batch_size]).sum())
        positive = maps[torch.arange(len(maps)), predicted].clamp_min(0)
        garment = (pixels[:, 0] > 0).float()
        mass = positive.flatten(1).sum(1)
        counted = mass > 0  # a map with no positive value says nothing about where
        on_object.append(((positive * garment).flatten(1).sum(1) / mass.clamp_min(1e-12))[counted])
        coverage.append(garment.flatten(1).mean(1)[counted])
    share, area = torch.cat(on_object), torch.cat(coverage)
    print(f"images counted {len(share)} of {len(test)}; accuracy of the maps' means {correct / len(test):.4f}")
    median = share.median()
    print(f"positive mass of the predicted class's map on the garment: {share.mean():.4f} (median {median:.4f})")
    print(f"share of the image the garment covers (an even map's score): {area.mean():.4f}")


if __name__ == "__main__":
    main()
