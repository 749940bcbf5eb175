"""Image-folder decode time: every image of a folder dataset decoded in this process vs by one worker per core.

Usage: ``PYTHONPATH=src python scripts/folder_decode_bench.py DIR [--repeats 3] [--json out.json]`` where DIR holds
``train/`` and/or ``test/`` class folders (e.g. a JPEG copy of CIFAR-10 in class folders unpacked to
``/tmp/cifar10``). Times the listing, the
header pass that picks the size, and the decode of all splits, serial (``workers=1``) and parallel (one worker per
usable core), and checks that both decodes are identical byte for byte. Prints the machine's load average with the
figures: on a shared machine they move with it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", help="dataset folder (train/, test/ of class folders, or class folders)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    load_before = os.getloadavg()
    import torch

    from ninlab._runtime.atomic import atomic_open
    from ninlab._runtime.environment import environment_report
    from ninlab.data.decode import decode_images, usable_cores
    from ninlab.data.folder import find_splits, list_images, most_common_shape

    start = time.perf_counter()
    files = [f for folder in find_splits(args.root).values() for f in list_images(folder)[0]]
    listing = time.perf_counter() - start
    start = time.perf_counter()
    size, channels = most_common_shape(files)
    probe = time.perf_counter() - start
    results: dict[str, list[float]] = {"serial": [], "parallel": []}
    decoded = {}
    for _ in range(args.repeats):
        for name, workers in (("serial", 1), ("parallel", None)):
            start = time.perf_counter()
            decoded[name] = decode_images(files, channels, size, workers=workers)
            results[name].append(time.perf_counter() - start)
    identical = torch.equal(decoded["serial"], decoded["parallel"])
    report = {
        "images": len(files),
        "size": list(size),
        "channels": channels,
        "listing_s": round(listing, 3),
        "size_probe_s": round(probe, 3),
        **{f"{name}_median_s": round(statistics.median(times), 3) for name, times in results.items()},
        **{f"{name}_s": [round(t, 3) for t in times] for name, times in results.items()},
        "speedup": round(statistics.median(results["serial"]) / statistics.median(results["parallel"]), 2),
        "workers": usable_cores(),
        "identical": identical,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        **environment_report(),  # machine: cpu, cpu_capability, cpu_native_bf16...
        "root": str(Path(args.root).resolve()),
    }
    print(json.dumps(report, indent=2))
    if args.json:
        with atomic_open(args.json) as file:
            file.write((json.dumps(report, indent=2) + "\n").encode())


if __name__ == "__main__":
    main()
