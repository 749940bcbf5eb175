"""Time to accuracy of ninlab's Fashion-MNIST recipes on this machine: seeds of each, against the recipes' targets.

Runs ``ninlab fit [-c RECIPE] --data.root DIR --seed_everything N --data.seed N [--trainer.precision P]`` once per
recipe, precision and seed, one at a time and with the progress bar on (what a user runs), then prints a Markdown
table of test accuracy and fit time (``wall_s`` of the run's summary.json) as mean +/- std, with the host (CPU model,
torch's cpu_capability, native bf16 or not), the load average at the start of every run and each recipe's floor on
this host (its whole fit's FLOPs at the fastest yardstick measured before the runs, :mod:`ninlab.bench.recipe_work`),
and writes it all as JSON. ``--plot`` draws the runs' validation accuracy against wall time
(scripts/plot_time_to_accuracy.py). Options after ``--`` go to every ``ninlab fit``. This is the measurement behind
docs/benchmarks.md's time-to-accuracy table; run it on an otherwise idle machine.

    python scripts/time_to_accuracy.py --root ../shared/data/fashion-mnist --out runs/time_to_accuracy \\
        --precisions 32-true bf16-mixed --plot docs/time_to_accuracy.png
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from ninlab._runtime.environment import describe_host, environment_report
from ninlab.bench.rates import conv3x3_flops_per_s, matmul_flops_per_s
from ninlab.bench.recipe_work import floor, recipe_work
from ninlab.bench.training import BenchConfig
from ninlab.training.lightning_cli import recipe_path

ROOT = Path(__file__).resolve().parents[1]
# recipe -> (mean test accuracy, lowest test accuracy of any seed, seconds of fit): the targets docs/benchmarks.md
# measures against (the recipes' own header comments state them).
TARGETS = {"fast_fashion_mnist": (0.920, 0.918, 75.0), "long_fashion_mnist": (0.935, 0.0, 360.0)}


def fit(recipe: str, seed: int, precision: str, root: str, out: Path, extra: list[str]) -> dict:
    """One ``ninlab fit`` of ``recipe`` (its output shown as it runs); its summary.json plus the load at its start
    and the whole command's wall time. A failed fit ends the script with its exit code."""
    out.mkdir(parents=True, exist_ok=False)  # a fresh directory per run, so its one run directory is this run's
    command = [sys.executable, "-m", "ninlab.cli", "fit", "-c", str(recipe_path(recipe)),
               "--data.root", root, "--seed_everything", str(seed), "--data.seed", str(seed),
               "--trainer.precision", precision, "--trainer.default_root_dir", str(out), *extra]  # fmt: skip
    load = os.getloadavg()[0]
    print(f"\n{recipe}, {precision}, seed {seed} (load {load:.2f}): {' '.join(command[2:])}", flush=True)
    start = time.perf_counter()
    done = subprocess.run(command, check=False)
    whole_s = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"time_to_accuracy: ninlab fit of {recipe} (seed {seed}) failed with exit code {done.returncode};"
                 " its output is above")  # fmt: skip
    (summary_path,) = out.glob("*/*/summary.json")
    summary = json.loads(summary_path.read_text())
    return {"recipe": recipe, "precision": precision, "seed": seed, "load_at_start": round(load, 2),
            "test_acc": summary["test_acc"], "val_acc": summary["val_acc"], "fit_s": summary["wall_s"],
            "whole_s": round(whole_s, 1), "run_dir": str(summary_path.parent)}  # fmt: skip


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def yardsticks(precisions: list[str]) -> dict[str, float]:
    """This machine's fp32 sgemm and 3x3 convolution FLOP/s (and bf16 matrix multiply where bf16-mixed is run)."""
    rates = {"sgemm": matmul_flops_per_s(torch.float32), "conv3x3": conv3x3_flops_per_s()}
    if "bf16-mixed" in precisions:
        rates["bf16_gemm"] = matmul_flops_per_s(torch.bfloat16)
    return rates


def table(runs: list[dict], machine: dict, floors: dict[tuple[str, str], float]) -> str:
    """The Markdown table: one row per recipe and precision, with the host, the recipe's floor and the verdict on the
    targets."""
    host = describe_host(machine)
    header = "| recipe | precision | seeds | test acc | fit | floor | load at starts | target | met |"
    lines = [f"Host: {host}", "", header, "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    groups: dict[tuple[str, str], list[dict]] = {}
    for run in runs:
        groups.setdefault((run["recipe"], run["precision"]), []).append(run)
    for (recipe, precision), group in groups.items():
        accs, times = [r["test_acc"] for r in group], [r["fit_s"] for r in group]
        (acc, acc_std), (fit_s, fit_std) = mean_std(accs), mean_std(times)
        loads = f"{min(r['load_at_start'] for r in group):.2f}-{max(r['load_at_start'] for r in group):.2f}"
        target, met = "", ""
        if recipe in TARGETS:
            want, lowest, seconds = TARGETS[recipe]
            each = f" (each >= {lowest:.1%})" if lowest else ""
            target = f">= {want:.1%}{each} in <= {seconds:g} s"
            met = "yes" if acc >= want and min(accs) >= lowest and fit_s <= seconds else "no"
        seeds = ", ".join(str(r["seed"]) for r in group)
        lines.append(f"| {recipe} | {precision} | {seeds} | {acc:.2%} +/- {acc_std:.2%} | "
                     f"{fit_s:.1f} +/- {fit_std:.1f} s | {floors[recipe, precision]:.1f} s | {loads} | {target} | "
                     f"{met} |")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="the folder holding fashion-mnist's four .gz files")
    parser.add_argument("--recipes", nargs="+", default=list(TARGETS), help="recipe names (configs/NAME.yaml)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--precisions", nargs="+", default=["32-true"], help="e.g. 32-true bf16-mixed")
    parser.add_argument("--out", type=Path, default=Path("runs/time_to_accuracy"), help="where the runs go")
    parser.add_argument("--json", type=Path, help="write the runs, the table and the environment here")
    parser.add_argument("--plot", type=Path, help="draw validation accuracy against wall time here (PNG)")
    parser.add_argument("fit_args", nargs="*", help="after --: options every ninlab fit gets")
    args = parser.parse_args()

    stamp = time.strftime("%Y%m%d-%H%M%S")
    environment = environment_report()
    rates = yardsticks(args.precisions)  # before the runs, on the idle machine
    # The same FLOPs in every precision: each recipe is counted once, then timed at each precision's yardsticks.
    works = {recipe: recipe_work(BenchConfig(recipe=recipe, root=args.root), fit_args=args.fit_args)
             for recipe in args.recipes}  # fmt: skip
    floors = {(recipe, precision): floor(works[recipe], rates, precision)[1]
              for recipe in args.recipes for precision in args.precisions}  # fmt: skip
    runs = [fit(recipe, seed, precision, args.root, args.out / stamp / f"{recipe}-{precision}-seed{seed}",
                args.fit_args)
            for recipe in args.recipes for precision in args.precisions for seed in args.seeds]  # fmt: skip
    report = table(runs, environment["machine"], floors)
    print(f"\n{time.strftime('%Y-%m-%d %H:%M')}\n{report}")
    if args.json:
        floors_json = [{"recipe": recipe, "precision": precision, "floor_s": round(seconds, 1)}
                       for (recipe, precision), seconds in floors.items()]  # fmt: skip
        result = {"runs": runs, "table": report, "yardsticks_flops_per_s": rates, "floors": floors_json, **environment}
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if args.plot:
        labels = [f"{run['recipe'].removesuffix('_fashion_mnist')} {run['precision']}={run['run_dir']}" for run in runs]
        subprocess.run([sys.executable, str(ROOT / "scripts" / "plot_time_to_accuracy.py"), "--output", str(args.plot),
                        *labels], check=True)  # fmt: skip


if __name__ == "__main__":
    main()
