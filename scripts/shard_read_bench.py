"""Per-sample cost of reading a pack's shards in one process: ``read_shard`` over the first training shards.

    python scripts/shard_read_bench.py PACK_DIR [--shards 8] [--repeats 5] [--profile] [--json FILE]

Prints the median over ``--repeats`` passes of the microseconds per sample (every byte hashed and checked as in
training, no model), and with ``--profile`` the functions taking the most time (``cProfile``, one more pass).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import statistics
import time
from pathlib import Path

from ninlab.data.shards import read_index
from ninlab.data.shards.reader import read_shard


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pack", type=Path)
    parser.add_argument("--shards", type=int, default=8, help="training shards read per pass")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    index = read_index(str(args.pack))
    shards = index.splits["train"][: args.shards]
    samples = sum(shard.count for shard in shards)

    def one_pass() -> None:
        for shard in shards:
            for _ in read_shard(index, shard):
                pass

    per_sample = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        one_pass()
        per_sample.append((time.perf_counter() - start) / samples * 1e6)
    median = statistics.median(per_sample)
    print(f"{args.pack} ({index.encoding}): {samples} samples per pass, median {median:.1f} us per sample "
          f"(passes: {', '.join(f'{t:.1f}' for t in per_sample)})")  # fmt: skip
    if args.profile:
        profile = cProfile.Profile()
        profile.runcall(one_pass)
        pstats.Stats(profile).sort_stats("tottime").print_stats(12)
    if args.json:
        args.json.write_text(json.dumps({"encoding": index.encoding, "samples": samples, "us_per_sample": per_sample,
                                         "median_us_per_sample": median}, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
