"""Peak memory and images/s of a 1-epoch ``ninlab fit`` from shards (a quarter of a pack vs all of it) and in memory.

    python scripts/shards_memory.py PACK_DIR [--parts 16 4] [--folder IMAGE_FOLDER] [--cap-mb MB] [--out FILE]
        [--trainer.* ... passed to every fit]

Each fit runs in a subprocess (``python -m ninlab.cli fit``, default recipe, 1 epoch) while this script samples
``/proc`` every 0.2 s: peak RSS of the training process and of its whole process tree (DataLoader workers
included), and peak virtual size of the training process. ``--cap-mb`` runs the same fits again under
``RLIMIT_AS`` (per process) of that many MB, to show which path still trains. ``--parts 16 4`` fits on packs
whose index holds the first 1/16 and 1/4 of PACK_DIR's training shards (the shard files are linked, not copied).
Any other option is passed to every fit.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _tree(pid: int) -> list[int]:
    children, pending = [], [pid]
    while pending:
        current = pending.pop()
        children.append(current)
        with contextlib.suppress(OSError):
            pending += [int(c) for c in Path(f"/proc/{current}/task/{current}/children").read_text().split()]
    return children


def _status(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    return 0


def fit(args: list[str], runs: Path, cap_mb: int | None) -> dict:
    """Run one fit; its exit code, last stderr line, peak RSS/VM (MB), wall seconds and images/s."""

    def limit() -> None:
        if cap_mb:
            resource.setrlimit(resource.RLIMIT_AS, (cap_mb << 20, cap_mb << 20))

    command = [sys.executable, "-m", "ninlab.cli", "fit", *args, "--trainer.max_epochs", "1",
               "--trainer.default_root_dir", str(runs), "--trainer.enable_progress_bar", "false"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "NINLAB_DATA": str(runs / "cache")}  # no user cache
    start = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=err, preexec_fn=limit)
        rss = tree = vm = 0
        while process.poll() is None:
            rss, vm = max(rss, _status(process.pid, "VmRSS")), max(vm, _status(process.pid, "VmSize"))
            tree = max(tree, sum(_status(p, "VmRSS") for p in _tree(process.pid)))
            time.sleep(0.2)
        err.seek(0)
        lines = err.read().decode(errors="replace").strip().splitlines()
    summaries = sorted(runs.rglob("summary.json"))
    rate = json.loads(summaries[-1].read_text()).get("train_images_per_s") if summaries else None
    return {"exit": process.returncode, "last_stderr_line": lines[-1][:300] if lines else "", "peak_rss_mb": rss,
            "peak_tree_rss_mb": tree, "peak_vm_mb": vm, "wall_s": round(time.perf_counter() - start, 1),
            "images_per_s": rate}  # fmt: skip


def part(pack: Path, where: Path, divisor: int) -> Path:
    """A pack at ``where`` whose index holds the first 1/``divisor`` of ``pack``'s training shards."""
    index = json.loads((pack / "index.json").read_text())
    shards = index["splits"]["train"]["shards"]
    index["splits"]["train"] = {"shards": shards[: max(1, len(shards) // divisor)]}
    index["splits"]["train"]["count"] = sum(s["count"] for s in index["splits"]["train"]["shards"])
    where.mkdir(parents=True)
    for split in index["splits"]:
        (where / split).symlink_to((pack / split).resolve())
    (where / "index.json").write_text(json.dumps(index))
    return where


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pack", type=Path)
    parser.add_argument("--folder", type=Path, help="the same images as an image folder, for the in-memory fit")
    parser.add_argument("--cap-mb", type=int, default=None)
    parser.add_argument("--parts", type=int, nargs="+", default=[4, 1], help="fractions 1/P of the training shards")
    parser.add_argument("--only-capped", action="store_true", help="skip the uncapped fits")
    parser.add_argument("--out", type=Path, default=Path("shards_memory.json"))
    args, extra = parser.parse_known_args()  # the rest goes to every fit (e.g. --trainer.limit_train_batches 60)
    work = Path(tempfile.mkdtemp(prefix="shards-memory-"))
    results = {"uptime": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()}
    shards = ["--data.dataset", "shards", "--data.num_workers", "2"]
    cases = {f"shards_1_{p}": [*shards, "--data.root", str(part(args.pack, work / f"part{p}", p)), *extra]
             for p in args.parts}  # fmt: skip
    if args.folder:
        cases["memory_full"] = ["--data.dataset", "folder", "--data.root", str(args.folder), *extra]
    caps = [args.cap_mb] if args.only_capped else [None, args.cap_mb] if args.cap_mb else [None]
    for cap in caps:
        for name, fit_args in cases.items():
            key = name if cap is None else f"{name}_cap{cap}MB"
            results[key] = fit(fit_args, work / key, cap)
            print(key, results[key], flush=True)
    results["uptime_after"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    args.out.write_text(json.dumps(results, indent=1))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
