"""``ninlab bench``: training throughput of three pipelines on the same model and real data, side by side.

Reports, in one run: images/s of the seed-style pipeline (A), ninlab's fit path (B) and a bare PyTorch loop (C),
each the median of ``--windows`` timed windows after a warm-up epoch, the three taking turns window by window; the
ratios B/A and B/C, medians of the ratios of same-numbered windows; peak RSS per pipeline;
B's training FLOP rate over its whole timed epoch as a fraction of this machine's fp32 sgemm rate, measured in the
same run (with ``--precision bf16-mixed``, also as a fraction of its bf16 matrix-multiply rate); the FLOPs of the
recipe's whole fit and the least time they take at the fastest of those rates (:mod:`ninlab.bench.recipe_work`);
and optionally (``--inference``) PyTorch and onnxruntime inference speed.
"""

from __future__ import annotations

import dataclasses
import itertools
import statistics
import sys
import time

import torch

from ninlab._runtime.environment import describe_host, environment_report
from ninlab.bench.rates import conv3x3_flops_per_s, matmul_flops_per_s
from ninlab.bench.recipe_work import floor, recipe_work
from ninlab.bench.rounds import recipe_model, run_round
from ninlab.bench.training import PIPELINES, BenchConfig, PipelineResult
from ninlab.training.lightning_cli import recipe_path

__all__ = ["TIME_TO_ACCURACY", "bench", "format_report"]


_LETTERS = {"seed_style": "A", "ninlab": "B", "bare": "C"}
"""The pipelines' letters in the printed report: A seed-style, B ninlab fit, C bare loop."""

_YARDSTICKS = {"sgemm": "fp32 sgemm", "conv3x3": "fp32 3x3 convolution", "bf16_gemm": "bf16 matrix multiply"}
"""The yardsticks' names in the printed report."""

TIME_TO_ACCURACY = {
    "fast_fashion_mnist": "docs/benchmarks.md#time-to-accuracy-on-fashion-mnist",
    "long_fashion_mnist": "docs/benchmarks.md#time-to-accuracy-on-fashion-mnist",
    "fast_cifar10": "docs/benchmarks.md#a-cifar-10-recipe-for-the-cpu-configsfast_cifar10yaml",
    "lightning_cifar10": "docs/benchmarks.md#the-lightning-nin-documents-recipe-and-the-documents-own-pipeline",
}
"""Where each recipe's time to accuracy (3 seeds of the whole ``ninlab fit``, per host) is recorded: a benchmark of
throughput cannot measure it, since it needs whole runs."""


def _median_result(runs: list[PipelineResult]) -> PipelineResult:
    return sorted(runs, key=lambda r: r.images_per_s)[len(runs) // 2]


def bench(config: BenchConfig, rounds: int = 1, inference: bool = False, quiet: bool = True) -> dict:
    """Run every pipeline (each in its own process) and the yardsticks; return the report as a JSON-ready dict.

    In each round the three pipelines take turns window by window (:func:`run_round`), in an order that changes from
    round to round through all six (A B C, A C B, B A C, ...). B/A and B/C are medians over every window of every
    round of the ratio of the pipelines' same-numbered windows, which ran seconds apart, so a shared machine's
    changing speed cancels out of them. Each pipeline's images/s is its median window in its median round; the sgemm
    rate is measured every round, and the sgemm fraction is the median of the rounds' values; so is a fast fp32 3x3
    convolution's rate (:func:`conv3x3_flops_per_s`), and B's fraction of it beside. Under ``bf16-mixed``
    the bf16 matrix-multiply rate is measured every round too, and B's fraction of it reported beside. The recipe's
    whole fit is counted (:func:`recipe_work`) and its FLOPs divided by the fastest yardstick (``floor_s``) and its
    training FLOPs by B's rate (``training_s_at_b_rate``), under ``time_to_accuracy``.

    A line per round on stderr tells how far it got; ``quiet=False`` also shows the pipelines' own output.
    """
    # A misspelt recipe is refused here, at once, rather than inside the first pipeline that reads it, after the
    # pipelines before it in the round have trained (35 s for `--recipe nosuch` on a 2-core Zen 3).
    recipe_path(config.recipe)
    names = list(PIPELINES)
    # Every order in turn, so that each pipeline follows each other one equally often (a pipeline's window can feel
    # the one before it: the threads of a process that just stopped spin on for a moment).
    orders = list(itertools.permutations(names))
    runs: dict[str, list[PipelineResult]] = {name: [] for name in names}
    paired: dict[str, list[float]] = {"ratio_vs_seed_style": [], "ratio_vs_bare_loop": []}
    # Per round: B's achieved FLOP/s and each yardstick's rate (the bf16 matrix multiply only under bf16-mixed).
    achieved: list[float] = []
    yardsticks: dict[str, list[float]] = {"sgemm": [], "conv3x3": [], "bf16_gemm": []}
    for index in range(rounds):
        order = list(orders[index % len(orders)])
        started = time.perf_counter()
        results = run_round(order, config, quiet=quiet)
        achieved.append(results["ninlab"].achieved_flops_per_s)
        yardsticks["sgemm"].append(matmul_flops_per_s(torch.float32))
        yardsticks["conv3x3"].append(conv3x3_flops_per_s())
        if results["ninlab"].precision == "bf16-mixed":
            yardsticks["bf16_gemm"].append(matmul_flops_per_s(torch.bfloat16))
        for name in names:
            runs[name].append(results[name])
        a, b, c = (results[name].window_images_per_s for name in ("seed_style", "ninlab", "bare"))
        paired["ratio_vs_seed_style"] += [rate_b / rate_a for rate_b, rate_a in zip(b, a, strict=True)]
        paired["ratio_vs_bare_loop"] += [rate_b / rate_c for rate_b, rate_c in zip(b, c, strict=True)]
        rates = ", ".join(f"{_LETTERS[name]} {results[name].images_per_s:,.0f}" for name in names)
        this_round = {key: statistics.median(values[-len(b) :]) for key, values in paired.items()}
        print(f"round {index + 1}/{rounds} ({' '.join(_LETTERS[name] for name in order)}, "
              f"{time.perf_counter() - started:.0f} s): images/s {rates}; B/A {this_round['ratio_vs_seed_style']:.2f}, "
              f"B/C {this_round['ratio_vs_bare_loop']:.3f}", file=sys.stderr, flush=True)  # fmt: skip
    results = {name: _median_result(r) for name, r in runs.items()}
    ninlab = results["ninlab"]
    report = {
        "rounds": rounds,
        "date": time.strftime("%Y-%m-%d"),
        "config": dataclasses.asdict(config),
        "precision": {name: r.precision for name, r in results.items()},
        "images_per_s": {name: round(r.images_per_s, 1) for name, r in results.items()},
        "window_images_per_s": {name: r.window_images_per_s for name, r in results.items()},
        "epoch_images_per_s": {name: round(r.epoch_images_per_s, 1) for name, r in results.items()},
        "round_images_per_s": {name: [round(r.images_per_s, 1) for r in rs] for name, rs in runs.items()},
        "peak_rss_mb": {name: round(r.peak_rss_mb, 1) for name, r in results.items()},
        "keeps_freed_memory": {name: r.keeps_freed_memory for name, r in results.items()},
        **{key: statistics.median(values) for key, values in paired.items()},
        "window_ratios": {key: [round(v, 4) for v in values] for key, values in paired.items()},
        "train_flops_per_image": ninlab.train_flops_per_image,
        "achieved_flops_per_s": ninlab.achieved_flops_per_s,
        "time_to_accuracy": {
            "recorded_in": TIME_TO_ACCURACY.get(config.recipe, "docs/benchmarks.md"),
            "measured_by": f"python scripts/time_to_accuracy.py --root DIR --recipes {config.recipe}: ninlab fit -c "
            f"configs/{config.recipe}.yaml --seed_everything N --data.seed N for N = 0, 1, 2, test_acc and wall_s of "
            "each run's summary.json, with the host and the load",
        },
        **environment_report(),
    }
    for name, rates in yardsticks.items():
        if rates:  # fraction_of_sgemm, fraction_of_sgemm_per_round, sgemm_flops_per_s, and so on
            fractions = [flops / rate for flops, rate in zip(achieved, rates, strict=True)]
            report[f"fraction_of_{name}"] = statistics.median(fractions)
            report[f"fraction_of_{name}_per_round"] = [round(v, 4) for v in fractions]
            report[f"{name}_flops_per_s"] = statistics.median(rates)
    # After the rounds, so that bad data is reported from the pipeline that reads it first, as before.
    work = recipe_work(config, quiet=quiet)
    rates = {name: report[f"{name}_flops_per_s"] for name, measured in yardsticks.items() if measured}
    fastest, seconds = floor(work, rates, ninlab.precision)
    report["time_to_accuracy"].update(
        recipe_work=work.as_dict(),
        floor_yardstick=fastest,
        floor_s=round(seconds, 1),
        training_s_at_b_rate=round(work.train_flops / report["achieved_flops_per_s"], 1),
    )
    if inference:
        from ninlab.bench.inference import inference_speed  # onnx export is slow to import; only when asked

        report["inference"] = inference_speed(recipe_model(config, quiet=quiet))
    return report


def format_report(report: dict) -> str:
    """The report as a short plain-text table."""
    names = {"seed_style": "seed-style (per-sample Dataset, NCHW)", "ninlab": "ninlab fit", "bare": "bare PyTorch loop"}
    host = f"host: {describe_host(report['machine'])}; torch {report['versions']['torch']}"
    header = f"{'pipeline':<42}{'img/s (median)':>15}{'epoch img/s':>13}{'peak RSS MB':>13}  precision  allocator"
    lines = [host, header]
    for key, description in names.items():
        label = f"{_LETTERS[key]} {description}"
        allocator = "keeps freed memory" if report["keeps_freed_memory"][key] else "default"
        lines.append(f"{label:<42}{report['images_per_s'][key]:>15,.1f}{report['epoch_images_per_s'][key]:>13,.1f}"
                     f"{report['peak_rss_mb'][key]:>13,.0f}  {report['precision'][key]:<9}  {allocator}")  # fmt: skip
    lines.append(f"B/A = {report['ratio_vs_seed_style']:.2f}   B/C = {report['ratio_vs_bare_loop']:.3f}")
    ratios = report["window_ratios"]
    spread = {key: f"{min(values):.2f}-{max(values):.2f}" for key, values in ratios.items()}
    lines.append(f"  (medians of {len(ratios['ratio_vs_seed_style'])} paired windows' ratios over {report['rounds']} "
                 f"round(s), the pipelines taking turns window by window; ranges B/A {spread['ratio_vs_seed_style']}, "
                 f"B/C {spread['ratio_vs_bare_loop']})")  # fmt: skip
    lines += [
        f"B trains at {report['achieved_flops_per_s'] / 1e9:.1f} GFLOP/s over its timed epoch "
        f"({report['train_flops_per_image'] / 1e6:.1f} MFLOP per image); {report['fraction_of_sgemm']:.2f} of this "
        f"machine's fp32 sgemm ({report['sgemm_flops_per_s'] / 1e9:.1f} GFLOP/s)",
        f"  and {report['fraction_of_conv3x3']:.2f} of its fp32 3x3 convolution at a fast size "
        f"({report['conv3x3_flops_per_s'] / 1e9:.1f} GFLOP/s)",
    ]
    if "fraction_of_bf16_gemm" in report:
        native = "native" if report["machine"].get("cpu_native_bf16") else "emulated: no bf16 instructions"
        lines.append(f"  and {report['fraction_of_bf16_gemm']:.2f} of its bf16 matrix multiply "
                     f"({report['bf16_gemm_flops_per_s'] / 1e9:.1f} GFLOP/s, {native})")  # fmt: skip
    tta = report["time_to_accuracy"]
    work = tta["recipe_work"]
    lines += [
        f"time to accuracy (whole fits, per host): {tta['recorded_in']}",
        f"  the recipe's whole fit ({work['epochs']} epochs of {work['train_images']:,} images, evaluation included) "
        f"computes {work['total_flops'] / 1e12:.2f} TFLOP: at least {tta['floor_s']:.0f} s at this machine's "
        f"{_YARDSTICKS[tta['floor_yardstick']]} rate, and its training {tta['training_s_at_b_rate']:.0f} s at B's",
    ]
    if "inference" in report:
        inf = report["inference"]
        lines.append(f"inference: PyTorch {inf['torch_images_per_s']:,.0f} img/s (batch 256), "
                     f"{inf['torch_latency_ms']:.2f} ms (batch 1); onnxruntime {inf['onnx_images_per_s']:,.0f} img/s, "
                     f"{inf['onnx_latency_ms']:.2f} ms")  # fmt: skip
    return "\n".join(lines)
