"""Data-layer timings: decode Fashion-MNIST from .gz, load it from the cache, one augmented training epoch.

Usage: ``PYTHONPATH=src python scripts/data_bench.py --root DIR [--repeats 5] [--json out.json]``, ``DIR`` a directory
holding the official Fashion-MNIST ``.gz`` files (in ``DIR`` or ``DIR/fashion-mnist/``).
Prints the median of each timing over ``--repeats`` runs next to its target. Uses a temporary cache dir.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from types import SimpleNamespace


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="directory holding fashion-mnist/*.gz")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    args = parser.parse_args()
    os.environ["NINLAB_DATA"] = tempfile.mkdtemp(prefix="ninlab-bench-")
    import torch

    from ninlab.data import ImageDataModule, load_dataset
    from ninlab.data.cache import cache_entry
    from ninlab.data.mnist import FASHION_MNIST, _locate

    if args.threads:
        torch.set_num_threads(args.threads)
    (paths, _) = _locate(FASHION_MNIST, FASHION_MNIST.splits["train"], args.root)
    entry = cache_entry("fashion-mnist", "train", list(paths), {})

    def decode():
        entry.unlink(missing_ok=True)
        load_dataset("fashion-mnist", "train", root=args.root)

    def cached():
        load_dataset("fashion-mnist", "train", root=args.root)

    dm = ImageDataModule("fashion-mnist", root=args.root)
    dm.setup("fit")
    dm.trainer = SimpleNamespace(training=True, current_epoch=0, global_rank=0, world_size=1)

    def epoch():
        for batch in dm.train_dataloader():
            dm.on_after_batch_transfer(batch, 0)

    results = []
    for name, fn, target in (
        ("decode Fashion-MNIST train from .gz", decode, 3.0),
        ("load Fashion-MNIST train from cache", cached, 0.5),
        ("one augmented epoch, 55,000 images 28x28", epoch, 2.0),
    ):
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        results.append({"name": name, "median_s": statistics.median(times), "target_s": target, "runs_s": times})
    print(f"{'benchmark':45} {'median s':>9} {'target s':>9}")
    for row in results:
        print(f"{row['name']:45} {row['median_s']:9.3f} {row['target_s']:9.1f}")
    if args.json:
        from ninlab._runtime.atomic import atomic_open

        with atomic_open(args.json) as file:
            file.write(json.dumps(results, indent=2).encode())


if __name__ == "__main__":
    main()
