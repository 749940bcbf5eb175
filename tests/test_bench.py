"""`ninlab bench` at a tiny size: it runs end to end on real data and reports every figure the issue names."""

import importlib.util
import json
from pathlib import Path

import pytest

from ninlab.benchmark.clock import window_rates
from ninlab.cli import main
from ninlab.host_allocator import runs_on_glibc

ROOT = Path(__file__).resolve().parents[1]


def test_window_rates():
    # 6 steps of 10 images: two windows of 3 steps, taking 3 s and 1.5 s.
    stamps = [0.0, 1.0, 2.0, 3.0, 3.5, 4.0, 4.5]
    assert window_rates(stamps, 10, 2) == [10.0, 20.0]
    with pytest.raises(ValueError, match="cannot fill"):
        window_rates(stamps, 10, 7)


def test_bench_reports_ratios_and_flop_fraction(real_data_dir, tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = ["bench", "--data.root", str(real_data_dir / "fashion-mnist"), "--limit", "384", "--epochs", "1",
            "--windows", "3", "--json", str(out)]  # fmt: skip
    assert main(argv) == 0
    report = json.loads(out.read_text())
    for key in ("ratio_vs_seed_style", "ratio_vs_bare_loop", "fraction_of_sgemm", "machine", "versions"):
        assert key in report
    assert set(report["images_per_s"]) == {"seed_style", "ninlab", "bare"}
    assert all(rate > 0 for rate in report["images_per_s"].values())
    assert all(len(rates) == 3 for rates in report["window_images_per_s"].values())
    assert all(mb > 0 for mb in report["peak_rss_mb"].values())
    assert 0 < report["fraction_of_sgemm"] < 2
    # B and C run with the command line's allocator setting (glibc only), A as spec 000's code would.
    glibc = runs_on_glibc()
    assert report["keeps_freed_memory"] == {"seed_style": False, "ninlab": glibc, "bare": glibc}
    assert "B/A" in capsys.readouterr().out
    assert [p.name for p in tmp_path.iterdir()] == ["bench.json"]  # no temporary or run files left behind


def test_bench_rejects_bad_sizes(capsys):
    assert main(["bench", "--limit", "0"]) == 2
    assert "must be >= 1" in capsys.readouterr().err


@pytest.mark.parametrize(("layout", "without"), [("channels_last", None), ("nchw", "batchnorm"), ("nchw", "relu")])
def test_train_step_bench_variants_run(layout, without):
    """benchmarks/train_step_bench.py: every layout and layer ablation builds a step that runs."""
    spec = importlib.util.spec_from_file_location("train_step_bench", ROOT / "benchmarks" / "train_step_bench.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    step = bench.training_step([4, 8, 8], 8, layout=layout, without=without)
    assert bench.images_per_s(step, 8, 2) > 0
