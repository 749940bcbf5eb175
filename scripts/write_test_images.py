"""Write test images of a dataset as PNG files, the first ``--per-class`` of each class, to try ``predict-images``
and ``explain`` on (the README's class-map picture is made from them).

    PYTHONPATH=src python scripts/write_test_images.py --dataset fashion-mnist --data-root DIR -o images/
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from PIL import Image

from ninlab.data import load_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--per-class", type=int, default=1)
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args()
    test = load_dataset(args.dataset, "test", args.data_root)
    args.output.mkdir(parents=True, exist_ok=True)
    for label, name in enumerate(test.classes):
        for rank, index in enumerate(torch.nonzero(test.labels == label).flatten()[: args.per_class].tolist()):
            pixels = test.images[index].permute(1, 2, 0).squeeze(-1).numpy()
            Image.fromarray(pixels).save(args.output / f"{label}_{name.replace('/', '-')}_{rank}.png")
    print(f"wrote {len(test.classes) * args.per_class} images to {args.output}")


if __name__ == "__main__":
    main()
