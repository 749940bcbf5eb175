"""Validation accuracy against wall time for ``ninlab fit`` runs: the time-to-accuracy figure of docs/benchmarks.md.

Each run directory holds ``metrics.csv`` (per epoch ``val/acc`` and ``time/elapsed_s``, seconds since fit started,
logged by ninlab's ThroughputMeter) and ``summary.json`` (``test_acc``, fit ``wall_s``). Runs given the same label
(seeds of one recipe) share a colour; each run is a line of validation accuracy per epoch ending in a star at its
test accuracy, placed at the end of fit.

    PYTHONPATH=src python scripts/plot_time_to_accuracy.py --output docs/time_to_accuracy.png \\
        fast=runs/fast_fashion_mnist/20250101-000000 long=runs/long_fashion_mnist/20250101-010000 ...
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from matplotlib.figure import Figure

from ninlab.training.plots import epoch_metrics

TITLE = "ninlab fit on a 2-core CPU: validation accuracy per epoch, test accuracy at the end (stars)"


def read_run(run_dir: Path) -> tuple[list[tuple[float, float]], float | None, float | None]:
    """``([(elapsed_s, val_acc) per epoch], test_acc, fit wall_s)`` of one run directory."""
    epochs = epoch_metrics(run_dir / "metrics.csv", keys=("val/acc", "time/elapsed_s"))
    points = [(v["time/elapsed_s"], v["val/acc"]) for _, v in sorted(epochs.items()) if len(v) == 2]
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    return points, summary.get("test_acc"), summary.get("wall_s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="LABEL=RUN_DIR; repeat a label for each seed of a recipe")
    parser.add_argument("--output", default="docs/time_to_accuracy.png")
    parser.add_argument("--targets", default="1.25:0.92,6:0.935", help='minutes:accuracy boxes ("": none)')
    parser.add_argument("--dataset", default="Fashion-MNIST", help="the dataset's name on the accuracy axis")
    parser.add_argument("--ylim", type=float, default=0.88, help="lowest accuracy shown")
    parser.add_argument("--title", default=TITLE, help="the figure's title (say the machine)")
    args = parser.parse_args()

    fig = Figure(figsize=(9, 5), layout="constrained")
    ax = fig.subplots()
    colours: dict[str, str] = {}
    for item in args.runs:
        label, _, path = item.partition("=")
        points, test_acc, wall_s = read_run(Path(path))
        first = label not in colours
        colour = colours.setdefault(label, f"C{len(colours)}")
        if points:
            minutes, accs = zip(*((t / 60, a) for t, a in points), strict=True)
            ax.plot(
                minutes, accs, "-o", color=colour, markersize=3, alpha=0.8, label=f"{label} (val)" if first else None
            )
        if test_acc is not None and wall_s is not None:
            ax.plot(wall_s / 60, test_acc, "*", color=colour, markersize=12, markeredgecolor="k",
                    label=f"{label} (test)" if first else None)  # fmt: skip
    for target in filter(None, args.targets.split(",")):  # --targets "" draws none
        minutes, acc = (float(v) for v in target.split(":"))
        ax.plot([0, minutes, minutes], [acc, acc, 1.0], ":", color="grey", linewidth=1)
        ax.annotate(f">= {acc:.1%} in {minutes:g} min", (minutes, acc), textcoords="offset points", xytext=(4, -12),
                    fontsize=8, color="grey")  # fmt: skip
    ax.set_xlabel("wall time since fit started (min)")
    ax.set_ylabel(f"accuracy ({args.dataset})")
    ax.set_ylim(args.ylim, 0.95)
    ax.set_xlim(0, None)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title(args.title)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.output, dpi=120)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
