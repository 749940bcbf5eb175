"""Peak memory and images/s of a 1-epoch ``ninlab fit`` from shards (a quarter of a pack vs all of it) and in memory.

    python scripts/shards_memory.py PACK_DIR [--parts 16 4] [--folder IMAGE_FOLDER] [--cap-mb MB] [--out FILE]
        [--trainer.* ... passed to every fit]

Each fit runs in a subprocess (``python -m ninlab.cli fit``, default recipe, 1 epoch) while this script samples
``/proc`` every 0.2 s: peak RSS of the training process and of its whole process tree (DataLoader workers
included), and peak virtual size of the training process. ``--cap-mb`` runs the same fits again under
``RLIMIT_AS`` (per process) of that many MB, to show which path still trains; ``--cgroup-mb`` runs them in a fresh
memory cgroup of that many MB instead (the whole process tree's real memory, as a container or a Slurm job caps it;
needs a writable cgroup v1 memory controller or cgroup v2), and reports the cgroup's own peak. ``--parts 16 4``
fits on packs whose index holds the first 1/16 and 1/4 of PACK_DIR's training shards (the shard files are linked,
not copied).
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

from ninlab._runtime.memory import memory_cgroup

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


def new_memory_cgroup(name: str, mb: int) -> Path:
    """A new memory cgroup limited to ``mb`` MB, nested in this process's own (cgroup v1's memory controller, or v2)."""
    found = memory_cgroup()
    if found is None:
        raise SystemExit("--cgroup-mb: this process is in no memory cgroup to nest one in")
    parent, version = found
    cgroup = parent / name
    cgroup.mkdir()
    (cgroup / ("memory.limit_in_bytes" if version == 1 else "memory.max")).write_text(str(mb << 20))
    return cgroup


def remove_cgroup(cgroup: Path) -> None:
    """Remove ``cgroup`` once the processes of the fit have left it (a killed process leaves it a moment later)."""
    for _ in range(50):
        if not (cgroup / "cgroup.procs").read_text().split():
            with contextlib.suppress(OSError):
                cgroup.rmdir()
                return
        time.sleep(0.1)
    print(f"could not remove {cgroup}; remove it with rmdir once its processes have ended", file=sys.stderr)


def cgroup_peak_mb(cgroup: Path) -> int:
    peak = cgroup / "memory.max_usage_in_bytes"  # v1; v2 calls it memory.peak
    return int((peak if peak.exists() else cgroup / "memory.peak").read_text()) >> 20


def fit(args: list[str], runs: Path, cap_mb: int | None, cgroup: Path | None = None, epochs: int = 1) -> dict:
    """Run one fit; its exit code, last stderr line, peak RSS/VM (MB), wall seconds and images/s."""

    def limit() -> None:
        if cap_mb:
            resource.setrlimit(resource.RLIMIT_AS, (cap_mb << 20, cap_mb << 20))
        if cgroup is not None:
            (cgroup / "cgroup.procs").write_text(str(os.getpid()))

    command = [sys.executable, "-m", "ninlab.cli", "fit", *args, "--trainer.max_epochs", str(epochs),
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
    summary = json.loads(summaries[-1].read_text()) if summaries else {}
    result = {"exit": process.returncode, "last_stderr_line": lines[-1][:300] if lines else "", "peak_rss_mb": rss,
              "peak_tree_rss_mb": tree, "peak_vm_mb": vm, "wall_s": round(time.perf_counter() - start, 1),
              "images_per_s": summary.get("train_images_per_s"),
              "images_per_s_steady": summary.get("train_images_per_s_steady")}  # fmt: skip
    if cgroup is not None:
        result["cgroup_peak_mb"] = cgroup_peak_mb(cgroup)
        result["cgroup_oom_kills"] = _oom_kills(cgroup)
    return result


def _oom_kills(cgroup: Path) -> int:
    for name in ("memory.oom_control", "memory.events"):  # v1, v2
        with contextlib.suppress(OSError):
            for line in (cgroup / name).read_text().splitlines():
                if line.startswith("oom_kill "):
                    return int(line.split()[1])
    return 0


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
    parser.add_argument("--folder-image-size", type=int, help="decode the folder at this size (as the pack was made)")
    parser.add_argument("--cap-mb", type=int, default=None, help="RLIMIT_AS of every capped fit's processes")
    parser.add_argument("--cgroup-mb", type=int, default=None, help="a memory cgroup of this many MB per capped fit")
    parser.add_argument("--parts", type=int, nargs="+", default=[4, 1], help="fractions 1/P of the training shards")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of the fits from shards")
    parser.add_argument("--epochs", type=int, default=1, help="epochs of every fit (from 2: a steady-state rate)")
    parser.add_argument("--only-capped", action="store_true", help="skip the uncapped fits")
    parser.add_argument("--out", type=Path, default=Path("shards_memory.json"))
    args, extra = parser.parse_known_args()  # the rest goes to every fit (e.g. --trainer.limit_train_batches 60)
    work = Path(tempfile.mkdtemp(prefix="shards-memory-"))
    results = {"uptime": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()}
    shards = ["--data.dataset", "shards", "--data.num_workers", str(args.workers)]
    # The other options go first, so that a `-c recipe.yaml` among them does not override the dataset given here.
    cases = {f"shards_1_{p}": [*extra, *shards, "--data.root", str(part(args.pack, work / f"part{p}", p))]
             for p in args.parts}  # fmt: skip
    if args.folder:
        cases["memory_full"] = [*extra, "--data.dataset", "folder", "--data.root", str(args.folder)]
        if args.folder_image_size:
            cases["memory_full"] += ["--data.folder_image_size", str(args.folder_image_size)]
    cap = args.cap_mb or args.cgroup_mb
    caps = [cap] if args.only_capped else [None, cap] if cap else [None]
    for limit in caps:
        for name, fit_args in cases.items():
            kind = "cgroup" if args.cgroup_mb else "cap"
            key = name if limit is None else f"{name}_{kind}{limit}MB"
            use_cgroup = limit and args.cgroup_mb
            cgroup = new_memory_cgroup(f"shards-memory-{os.getpid()}-{key}", limit) if use_cgroup else None
            try:
                results[key] = fit(fit_args, work / key, args.cap_mb if limit else None, cgroup, args.epochs)
                print(key, results[key], flush=True)
            finally:
                if cgroup is not None:
                    remove_cgroup(cgroup)
    results["uptime_after"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    args.out.write_text(json.dumps(results, indent=1))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
