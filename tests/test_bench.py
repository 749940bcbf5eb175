"""`ninlab bench` at a tiny size: it runs end to end on real data and reports every figure the issue names."""

import copy
import gzip
import importlib.util
import itertools
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ninlab import create_model
from ninlab._runtime.host_allocator import runs_on_glibc
from ninlab.bench.clock import window_rates
from ninlab.bench.rates import forward_flops_per_image, training_flops_per_image
from ninlab.bench.training import PerSampleDataset
from ninlab.cli import main
from ninlab.models.init import first_conv

ROOT = Path(__file__).resolve().parents[1]


def test_window_rates():
    # 6 steps of 10 images: two windows of 3 steps, taking 3 s and 1.5 s.
    stamps = [0.0, 1.0, 2.0, 3.0, 3.5, 4.0, 4.5]
    assert window_rates(stamps, 10, 2) == [10.0, 20.0]
    with pytest.raises(ValueError, match="cannot fill"):
        window_rates(stamps, 10, 7)


def test_bench_reports_ratios_and_flop_fraction(real_data_dir, tmp_path, capfd):
    out = tmp_path / "bench.json"
    argv = ["bench", "--data.root", str(real_data_dir / "fashion-mnist"), "--limit", "1280", "--epochs", "1",
            "--windows", "3", "--json", str(out)]  # fmt: skip
    assert main(argv) == 0
    report = json.loads(out.read_text())
    for key in ("ratio_vs_seed_style", "ratio_vs_bare_loop", "fraction_of_sgemm", "machine", "versions"):
        assert key in report
    assert set(report["images_per_s"]) == {"seed_style", "ninlab", "bare"}
    assert all(rate > 0 for rate in report["images_per_s"].values())
    assert all(len(rates) == 3 for rates in report["window_images_per_s"].values())
    assert all(mb > 0 for mb in report["peak_rss_mb"].values())
    assert 0 < report["fraction_of_sgemm"] < 2 and 0 < report["fraction_of_conv3x3"] < 2
    # B and C run with the command line's allocator setting (glibc only), A as the Lightning NiN document's code would.
    glibc = runs_on_glibc()
    assert report["keeps_freed_memory"] == {"seed_style": False, "ninlab": glibc, "bare": glibc}
    out, err = capfd.readouterr()  # file descriptors: the pipelines' processes write there too
    assert "B/A" in out
    # Time to accuracy needs whole fits, not a throughput benchmark: the report says where they are recorded.
    assert report["time_to_accuracy"]["recorded_in"] == "docs/benchmarks.md#time-to-accuracy-on-fashion-mnist"
    assert "time to accuracy (whole fits, per host): docs/benchmarks.md#" in out
    # The floor counts the recipe's whole fit as a user runs it, not the bench's 1,280 images at 28x28.
    tta = report["time_to_accuracy"]
    work = tta["recipe_work"]
    assert (work["epochs"], work["train_images"], work["val_images"], work["test_images"]) == (6, 55_000, 5_000, 10_000)
    assert work["train_sizes"] == [[20, 20]] * 2 + [[28, 28]] * 4  # the recipe's [0.72, 0.72, 1.0]
    assert work["views"] == 2 and work["val_passes"] == 6 and work["sanity_val_images"] == 512
    net = create_model("nin_fast", widths=[16, 64, 128], pad_last_block=False)
    first_conv(net).weight.requires_grad_(False)  # whitened and fixed: no backward pass, so fewer FLOPs
    train = 55_000 * (2 * training_flops_per_image(net, (1, 20, 20)) + 4 * training_flops_per_image(net, (1, 28, 28)))
    evaluation = (6 * 5_000 + 512 + 10_000) * 2 * forward_flops_per_image(net, (1, 28, 28))
    assert work["train_flops"] == pytest.approx(train) and work["evaluation_flops"] == pytest.approx(evaluation)
    rate = max(report[f"{name}_flops_per_s"] for name in ("sgemm", "conv3x3"))
    assert tta["floor_s"] == pytest.approx((train + evaluation) / rate, abs=0.05)
    assert tta["training_s_at_b_rate"] == pytest.approx(train / report["achieved_flops_per_s"], abs=0.05)
    assert f"computes {(train + evaluation) / 1e12:.2f} TFLOP: at least {tta['floor_s']:.0f} s at this machine's" in out
    assert err.startswith("round 1/1 (A B C, ") and err.count("\n") == 1, err  # one line per round, nothing else
    assert [p.name for p in tmp_path.iterdir()] == ["bench.json"]  # no temporary or run files left behind


@pytest.mark.parametrize("channels", [1, 3])
def test_seed_style_dataset_normalises_through_pil(channels):
    """Pipeline A's per-sample path (PIL image, ToTensor, Normalize) gives each image's normalised CHW float tensor."""
    images = torch.randint(0, 256, (4, channels, 9, 7), dtype=torch.uint8)
    mean, std = torch.linspace(0.2, 0.5, channels), torch.linspace(0.3, 0.2, channels)
    dataset = PerSampleDataset(images, torch.tensor([3, 1, 4, 1]), mean, std)
    image, label = dataset[2]
    expected = (images[2].float() / 255 - mean.view(-1, 1, 1)) / std.view(-1, 1, 1)
    assert image.dtype == torch.float32 and image.shape == (channels, 9, 7) and label == 4
    torch.testing.assert_close(image, expected)
    assert len(dataset) == 4


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_bench_rounds_vary_order_and_pair_windows(monkeypatch, capsys, precision):
    """Rounds go through the pipelines' orders; B/A and B/C are medians of same-numbered windows' ratios."""
    from ninlab.bench import suite
    from ninlab.bench.recipe_work import RecipeWork
    from ninlab.bench.training import BenchConfig, PipelineResult

    # A machine whose speed changes from window to window and round to round: paired ratios stay exact.
    speed = {"seed_style": 100.0, "ninlab": 200.0, "bare": 210.0}
    orders = []

    def fake_round(names, config, quiet):
        orders.append(list(names))
        slow = len(orders)
        results = {}
        for name in names:
            rates = [speed[name] / (slow * (1 + w)) for w in range(config.windows)]
            used = "32-true" if name == "seed_style" else config.precision
            results[name] = PipelineResult(name, used, rates[1], rates[1], rates, train_flops_per_image=1e6)
        return results

    monkeypatch.setattr(suite, "run_round", fake_round)
    monkeypatch.setattr(suite, "matmul_flops_per_s", lambda dtype: 1e9 if dtype == torch.float32 else 4e9)
    monkeypatch.setattr(suite, "conv3x3_flops_per_s", lambda: 2e9)
    work = RecipeWork("fast_fashion_mnist", 1, 100, 0, 0, 0, 10, 1, [[28, 28]], train_flops=6e9, evaluation_flops=2e9)
    monkeypatch.setattr(suite, "recipe_work", lambda config, quiet: work)
    report = suite.bench(BenchConfig(windows=3, precision=precision), rounds=3)
    a, b, c = "seed_style", "ninlab", "bare"
    assert orders == [[a, b, c], [a, c, b], [b, a, c]]
    assert report["window_ratios"]["ratio_vs_seed_style"] == pytest.approx([2.0] * 9)
    assert report["ratio_vs_seed_style"] == pytest.approx(2.0)
    assert report["ratio_vs_bare_loop"] == pytest.approx(200 / 210)
    assert report["round_images_per_s"]["ninlab"] == pytest.approx([100.0, 50.0, 33.3], abs=0.1)
    assert report["images_per_s"]["ninlab"] == 50.0  # the median round
    assert report["fraction_of_sgemm_per_round"] == pytest.approx([0.1, 0.05, 0.0333], abs=1e-4)
    assert report["fraction_of_conv3x3_per_round"] == pytest.approx([0.05, 0.025, 0.0167], abs=1e-4)
    assert "and 0.03 of its fp32 3x3 convolution at a fast size (2.0 GFLOP/s)" in suite.format_report(report)
    assert "medians of 9 paired windows' ratios over 3 round(s)" in suite.format_report(report)
    machine = report["machine"]  # the first line names the host the figures belong to
    assert suite.format_report(report).startswith(f"host: {machine['cpu']} ({machine['cpu_id']}), ")
    progress = capsys.readouterr().err.splitlines()  # a line per round, with that round's paired ratios
    assert progress[0].startswith("round 1/3 (A B C, ") and progress[0].endswith("B/A 2.00, B/C 0.952")
    assert [line.split(" (")[0] for line in progress] == ["round 1/3", "round 2/3", "round 3/3"]
    assert report["precision"] == {a: "32-true", b: precision, c: precision}
    # The floor: the recipe's 8 GFLOP at the fastest yardstick measured (bf16 only where B trains in bf16).
    fastest, rate = ("bf16_gemm", 4e9) if precision == "bf16-mixed" else ("conv3x3", 2e9)
    assert report["time_to_accuracy"]["floor_yardstick"] == fastest
    assert report["time_to_accuracy"]["floor_s"] == 8e9 / rate
    assert report["time_to_accuracy"]["training_s_at_b_rate"] == pytest.approx(
        6e9 / report["achieved_flops_per_s"], abs=0.05
    )
    if precision == "bf16-mixed":  # B's FLOP rate against the bf16 matrix multiply too
        assert report["fraction_of_bf16_gemm_per_round"] == pytest.approx([0.025, 0.0125, 0.0083], abs=1e-4)
        assert "of its bf16 matrix multiply (4.0 GFLOP/s" in suite.format_report(report)
    else:
        assert "fraction_of_bf16_gemm" not in report


def test_run_round_takes_turns_window_by_window(real_data_dir):
    """The pipelines of a round never compute at the same time: their timed windows alternate A, B, C, A, B, C.

    Run in bf16-mixed, which B (Lightning's precision plugin) and C (autocast) then train in, and A (the Lightning
    NiN document's way) does not.
    """
    from ninlab.bench.rounds import run_round
    from ninlab.bench.training import BenchConfig

    config = BenchConfig(root=str(real_data_dir / "fashion-mnist"), limit=768, epochs=2, windows=2, val_size=64,
                         precision="bf16-mixed")  # fmt: skip
    names = ["bare", "seed_style", "ninlab"]
    results = run_round(names, config)
    assert set(results) == set(names)
    windows = sorted((start, end, name) for name, r in results.items() for start, end in r.window_times)
    assert [name for _, _, name in windows] == names * 2
    assert all(end <= next_start for (_, end, _), (next_start, _, _) in itertools.pairwise(windows))
    assert all(len(r.window_images_per_s) == 2 and r.images_per_s > 0 for r in results.values())
    assert {name: r.precision for name, r in results.items()} == {
        "bare": "bf16-mixed", "seed_style": "32-true", "ninlab": "bf16-mixed"}  # fmt: skip


def test_bench_rejects_bad_sizes(capsys):
    assert main(["bench", "--limit", "0"]) == 2
    assert "must be >= 1" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:  # argparse's usage error
        main(["bench", "--precision", "16-mixed"])
    assert exit_.value.code == 2 and "invalid choice: '16-mixed'" in capsys.readouterr().err


def test_bench_refuses_an_unknown_recipe_before_any_pipeline_starts(monkeypatch, capsys):
    """A misspelt recipe is one line at once, not after the pipelines before the one that reads it have trained."""

    def no_round(*args, **kwargs):
        raise AssertionError("a pipeline was started")

    monkeypatch.setattr("ninlab.bench.suite.run_round", no_round)
    assert main(["bench", "--recipe", "nosuch"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no recipe 'nosuch'; ninlab ships: " in err[0], err


def test_bench_reports_a_pipeline_error_in_one_line(tmp_path, capsys):
    """An error inside a pipeline's process (here: a damaged dataset file, found when the first pipeline loads it)
    reaches the command line as the same ninlab error, not a traceback."""
    for name in (
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ):
        (tmp_path / f"{name}.gz").write_bytes(b"not a gzip file")
    assert main(["bench", "--data.root", str(tmp_path), "--limit", "256", "--epochs", "1", "--windows", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "train-images-idx3-ubyte.gz: expected a readable gzip IDX file" in err[0], err


@pytest.mark.parametrize(("layout", "without"), [("channels_last", None), ("nchw", "batchnorm"), ("nchw", "relu")])
def test_train_step_bench_variants_run(layout, without):
    """scripts/train_step_bench.py: every layout and layer ablation builds a step that runs."""
    bench = _load_script("train_step_bench")
    step = bench.training_step([4, 8, 8], 8, layout=layout, without=without)
    assert bench.images_per_s(step, 8, 2) > 0
    bf16 = bench.training_step([4, 8, 8], 8, layout=layout, without=without, precision="bf16-mixed")
    assert bench.images_per_s(bf16, 8, 2) > 0
    rows = bench.layer_times([4, 8, 8], 8, layout=layout, without=without, repeats=2)
    convs = [row for row in rows if "(Conv2d)" in row["layer"]]
    assert len(convs) == 7 and all(row["flops"] > 0 for row in convs)  # 3 blocks of two, then the class maps
    assert rows[0]["input"] == (8, 1, 28, 28) and all(row["forward_ms"] >= 0 <= row["backward_ms"] for row in rows)
    # The images need no gradient: the first convolution's backward counts its weights' gradient only.
    assert convs[0]["flops"] == 2 * 2 * 8 * 28 * 28 * 4 * 9


def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_time_to_accuracy_plot_draws_each_run_with_its_title(tmp_path, monkeypatch):
    """scripts/plot_time_to_accuracy.py reads each run's metrics.csv and summary.json and writes the figure."""
    plot = _load_script("plot_time_to_accuracy")
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.csv").write_text("epoch,step,val/acc,time/elapsed_s\n0,10,0.85,6.0\n1,20,0.90,12.0\n")
    (run / "summary.json").write_text(json.dumps({"test_acc": 0.91, "wall_s": 13.0}))
    assert plot.read_run(run) == ([(6.0, 0.85), (12.0, 0.90)], 0.91, 13.0)
    output = tmp_path / "figure.png"
    monkeypatch.setattr("sys.argv", ["plot_time_to_accuracy.py", "--output", str(output), "--title", "one GPU",
                                     "--targets", "0.5:0.874", "--ylim", "0.5", f"default={run}"])  # fmt: skip
    plot.main()
    assert output.read_bytes().startswith(b"\x89PNG")


def test_gpu_step_bench_runs_on_the_cpu(real_data_dir, monkeypatch, capsys):
    """scripts/gpu_step_bench.py (the GPU recipe's step without Lightning) runs end to end on real data."""
    bench = _load_script("gpu_step_bench")
    argv = ["gpu_step_bench.py", "--root", str(real_data_dir / "fashion-mnist"), "--device", "cpu", "--steps", "1",
            "--windows", "2", "--warmup", "1", "--profile", "eager:bf16:2",
            "eager:fp32:2:contiguous:patches"]  # fmt: skip
    monkeypatch.setattr("sys.argv", argv)
    bench.main()
    out = capsys.readouterr().out
    first, second = out.strip().splitlines()[-2:]
    assert first.startswith("| eager:bf16:2:channels_last:conv |"), first
    assert second.startswith("| eager:fp32:2:contiguous:patches |"), second
    assert out.count("Self CPU time total") == 2  # one kernel table per variant
    with pytest.raises(Exception, match="expected MODE:PRECISION:BATCH"):
        bench.parse_variant("compile:fp16:128")
    with pytest.raises(Exception, match="LAYOUT in"):
        bench.parse_variant("compile:bf16:128:nhwc")
    with pytest.raises(Exception, match="FIRST in"):
        bench.parse_variant("compile:bf16:128:contiguous:im2col")


def test_gpu_step_bench_patch_product_is_the_same_convolution():
    """The first convolution as a matrix product over patches gives cuDNN's/oneDNN's outputs and weight gradients."""
    bench = _load_script("gpu_step_bench")
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(1, 96, 11, stride=4)  # nin_d2l's first convolution
    twin = copy.deepcopy(conv)
    bench.as_patch_product(twin)
    x = torch.rand(2, 1, 67, 67)
    expected, got = conv(x), twin(x)
    assert got.shape == expected.shape == (2, 96, 15, 15)
    assert got.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    expected.square().sum().backward()
    got.square().sum().backward()
    torch.testing.assert_close(twin.weight.grad, conv.weight.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(twin.bias.grad, conv.bias.grad, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="groups 1"):
        bench.as_patch_product(torch.nn.Conv2d(4, 4, 3, groups=2))


def test_bare_loop_refuses_a_precision_it_cannot_mirror(real_data_dir):
    """C mirrors B's precision; one it has no loop for is a one-line error, not a silently different comparison."""
    from ninlab.bench.training import BenchConfig, run_pipeline
    from ninlab.errors import ConfigError

    config = BenchConfig(root=str(real_data_dir / "fashion-mnist"), limit=256, precision="bf16-true")
    with pytest.raises(ConfigError, match=r"times 32-true or bf16-mixed training, .* trains in bf16-true; pass --prec"):
        run_pipeline("bare", config)


def test_bare_loop_steps_the_recipes_lr_schedule(real_data_dir, monkeypatch):
    """C trains as B does: the recipe's one-cycle schedule, stepped after every optimiser step, ending near lr 0."""
    from ninlab.bench.training import BenchConfig, run_pipeline

    lrs = []
    real_step = torch.optim.lr_scheduler.LambdaLR.step

    def step(self, *args, **kwargs):
        real_step(self, *args, **kwargs)
        lrs.append(self.get_last_lr()[0])

    monkeypatch.setattr(torch.optim.lr_scheduler.LambdaLR, "step", step)
    config = BenchConfig(root=str(real_data_dir / "fashion-mnist"), limit=1280, epochs=2, windows=2, val_size=128)
    run_pipeline("bare", config)
    steps = 2 * 1280 // 256  # the default recipe's batch
    assert len(lrs) == steps + 1  # LambdaLR steps once when it is built, then once per optimiser step
    peak = max(lrs)
    assert peak == pytest.approx(0.4, rel=0.05) and lrs[0] < peak / 10 and lrs[-1] < peak / 100


def test_bench_times_every_pipeline_at_the_recipes_full_image_size(real_data_dir):
    """The default recipe trains its first epochs at 20x20; the benchmark's B (and C, A) train every epoch at 28x28."""
    import yaml

    from ninlab.bench.training import BenchConfig, recipe_cli, scratch_dir

    recipe = yaml.safe_load((ROOT / "configs" / "fast_fashion_mnist.yaml").read_text())
    assert recipe["data"]["train_scales"][0] < 1
    config = BenchConfig(root=str(real_data_dir / "fashion-mnist"), limit=256)
    with scratch_dir() as workdir:  # as the bench builds it: the run directory the CLI names is forgotten after
        datamodule = recipe_cli(config, workdir, []).datamodule
    assert datamodule.train_scales is None and datamodule.input_size == (1, 28, 28)


def test_recipe_model_discards_what_lightning_prints(real_data_dir):
    """`--inference` builds the recipe's model in the parent: its seed, device and CLI messages stay off the report."""
    code = (
        "import sys\n"
        "from ninlab.bench.rounds import recipe_model\nfrom ninlab.bench.training import BenchConfig\n"
        f"config = BenchConfig(root={str(real_data_dir / 'fashion-mnist')!r}, limit=256)\n"
        "assert recipe_model(config).net.num_classes == 10\n"
        "print('MARK', flush=True)\n"
        "print('MARK', file=sys.stderr, flush=True)\n"
        "recipe_model(config, quiet=False)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    quiet_out, loud_out = done.stdout.split("MARK\n")
    quiet_err, loud_err = done.stderr.split("MARK\n")
    assert (quiet_out, quiet_err) == ("", "")
    assert "Seed set to 0" in loud_out + loud_err


def test_int8_onnx_script_measures_both_models_on_the_whole_test_split(real_data_dir, tmp_path, monkeypatch):
    """scripts/int8_onnx.py quantises the shipped model and scores fp32 and int8 on all 10,000 test images."""
    script = _load_script("int8_onnx")
    out = tmp_path / "int8.json"
    argv = ["int8_onnx.py", "--data-root", str(real_data_dir / "fashion-mnist"), "--calibration", "64", "--repeats",
            "1", "--json", str(out), "--output", str(tmp_path / "model.int8.onnx")]  # fmt: skip
    monkeypatch.setattr("sys.argv", argv)
    script.main()
    result = json.loads(out.read_text())
    assert result["test_images"] == 10_000
    # The shipped model (92.39% with test-time flips) scores about that as exported; int8 stays a working classifier.
    assert result["accuracy"]["fp32"] > 0.91 and result["accuracy"]["int8"] > 0.85
    assert result["file_bytes"]["int8"] < result["file_bytes"]["fp32"]
    assert (tmp_path / "model.int8.onnx").stat().st_size == result["file_bytes"]["int8"]


@pytest.mark.parametrize("encoding", ["npy", "png"])
def test_shard_read_bench_reads_every_sample_of_the_shards(tmp_path, monkeypatch, capsys, encoding):
    """scripts/shard_read_bench.py times read_shard over a real pack (raw pixels or PNG) and profiles it."""
    from conftest import write_id_images
    from ninlab.data.shards import pack

    write_id_images(tmp_path / "source" / "train", 60)
    pack(str(tmp_path / "source"), tmp_path / "packed", shard_size=64 << 10, workers=1, encoding=encoding,
         val_size=0)  # fmt: skip
    out = tmp_path / "read.json"
    argv = ["shard_read_bench.py", str(tmp_path / "packed"), "--repeats", "2", "--profile", "--json", str(out)]
    monkeypatch.setattr("sys.argv", argv)
    _load_script("shard_read_bench").main()
    result = json.loads(out.read_text())
    assert result["encoding"] == encoding and result["samples"] == 60 and len(result["us_per_sample"]) == 2
    assert "function calls" in capsys.readouterr().out  # the profile


def test_document_cifar10_script_trains_the_documents_pipeline(tmp_path, monkeypatch):
    """scripts/document_cifar10.py runs the Lightning NiN document's pipeline end to end on an image folder."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in (("train", 40), ("test", 8)):
        for label in ("cat", "dog"):
            (tmp_path / "data" / split / label).mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(tmp_path / "data" / split / label / f"{i}.png")
    script = _load_script("document_cifar10")
    out = tmp_path / "doc.json"
    argv = ["document_cifar10.py", "--root", str(tmp_path / "data"), "--epochs", "2", "--val-size", "16", "--json",
            str(out)]  # fmt: skip
    monkeypatch.setattr("sys.argv", argv)
    monkeypatch.setenv("NINLAB_DATA", str(tmp_path / "cache"))
    script.main()
    result = json.loads(out.read_text())
    assert result["train_images"] == 64 and len(result["epoch_s"]) == 2  # 80 train images less the 16 held out
    assert 0 <= result["test_acc"] <= 1 and result["train_images_per_s_steady"] > 0


def test_time_to_accuracy_script_runs_each_seed_and_judges_the_target(real_data_dir, tmp_path, monkeypatch, capsys):
    """scripts/time_to_accuracy.py: one real fit per seed (a few batches), the table, the JSON and the plot."""
    script = _load_script("time_to_accuracy")
    report, plot = tmp_path / "report.json", tmp_path / "plot.png"
    # A few batches of one epoch: what is tested is the harness, not the recipe's accuracy.
    short = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "3", "--trainer.limit_val_batches", "2",
             "--trainer.limit_test_batches", "2"]  # fmt: skip
    argv = ["time_to_accuracy.py", "--root", str(real_data_dir / "fashion-mnist"), "--recipes", "fast_fashion_mnist",
            "--seeds", "0", "1", "--out", str(tmp_path / "runs"), "--json", str(report), "--plot", str(plot), "--",
            *short]  # fmt: skip
    monkeypatch.setattr("sys.argv", argv)
    script.main()
    result = json.loads(report.read_text())
    assert [run["seed"] for run in result["runs"]] == [0, 1]
    assert all(0 < run["fit_s"] <= run["whole_s"] and 0 <= run["test_acc"] <= 1 for run in result["runs"])
    assert result["machine"]["cpu_capability"] and "cpu_native_bf16" in result["machine"]
    assert f"({result['machine']['cpu_id']})" in result["table"]  # the host line names the CPU's generation
    (row,) = [line for line in result["table"].splitlines() if line.startswith("| fast_fashion_mnist |")]
    assert row.startswith("| fast_fashion_mnist | 32-true | 0, 1 |") and row.endswith("| no |")  # 3 batches: far off
    # The floor counts the fits as run: 3 training batches of 256 at 20x20, and 2 validation batches per pass and in
    # the sanity check, and 2 test batches, each evaluated twice (flip averaging).
    net = create_model("nin_fast", widths=[16, 64, 128], pad_last_block=False)
    flops = 3 * 256 * training_flops_per_image(net, (1, 20, 20))
    flops += (2 + 2 + 2) * 256 * 2 * forward_flops_per_image(net, (1, 28, 28))
    (floor,) = result["floors"]
    assert floor["floor_s"] == pytest.approx(flops / max(result["yardsticks_flops_per_s"].values()), abs=0.05)
    assert f" s | {floor['floor_s']:.1f} s | " in row
    assert row in capsys.readouterr().out and plot.stat().st_size > 10_000


def test_gpu_d2l_seeds_times_the_first_epoch_at_the_documents_accuracy(tmp_path):
    """The time to 87.4% is the first epoch that reached it on validation, read from the run's metrics.csv."""
    script = _load_script("gpu_d2l_seeds")
    (tmp_path / "version_0").mkdir()
    rows = ["epoch,step,train/loss,val/acc,time/elapsed_s", "0,10,,0.80,11.5", "0,10,0.9,,", "1,20,,0.8741,20.25",
            "2,30,,0.88,29.0"]  # fmt: skip
    (tmp_path / "version_0" / "metrics.csv").write_text("\n".join(rows) + "\n")
    assert script.seconds_to_val_target(tmp_path) == 20.2  # rounded to 0.1 s
    (tmp_path / "version_0" / "metrics.csv").write_text("\n".join(rows[:2]) + "\n")
    assert script.seconds_to_val_target(tmp_path) is None


def test_gpu_d2l_seeds_script_records_each_run_on_the_cpu(real_data_dir, tmp_path, monkeypatch, capsys):
    """scripts/gpu_d2l_seeds.py (the GPU seeds of the d2l recipes, fixed and as written) runs end to end on the CPU.

    The CPU recipes stand in for the GPU ones (same network, optimiser and weights; no compile, no bf16), at 67x67 and
    a few batches: what is tested is the script's plumbing (summary, metrics, class maps, tables), not the recipe.
    The test split is the official one's first 512 images, so that the script's pass over every test image for the
    class maps takes seconds, not most of a minute, at 67x67 on a 2-core CPU.
    """
    from conftest import idx_bytes
    from ninlab.data.idx import decode_idx, read_idx_bytes

    root = tmp_path / "fashion-mnist"
    root.mkdir()
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
        shutil.copy(real_data_dir / "fashion-mnist" / f"{name}.gz", root)
    for name, ndim in (("t10k-images-idx3-ubyte", 3), ("t10k-labels-idx1-ubyte", 1)):
        official = real_data_dir / "fashion-mnist" / f"{name}.gz"
        array = decode_idx(read_idx_bytes(official), official, ndim)
        (root / f"{name}.gz").write_bytes(gzip.compress(idx_bytes(array[:512])))
    script = _load_script("gpu_d2l_seeds")
    argv = ["gpu_d2l_seeds.py", "--recipes", "d2l_fashion_mnist_fixed", "d2l_fashion_mnist", "--seeds", "0", "--root",
            str(root), "--out", str(tmp_path / "runs"), "--extra", "--data.image_size", "67",
            "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "3", "--trainer.limit_val_batches", "2",
            "--trainer.limit_test_batches", "2"]  # fmt: skip
    monkeypatch.setattr("sys.argv", argv)
    script.main()
    fixed, written = json.loads((tmp_path / "runs" / "results.json").read_text())
    assert fixed["status"] == written["status"] == "ok" and fixed["steps"] == written["steps"] == 3
    assert 0 <= fixed["test_acc"] <= 1 and fixed["final_train_loss"] > 0
    assert fixed["s_to_val_target"] is None  # 3 steps reach nowhere near 87.4%
    assert fixed["dead_maps_on_test"] == "none (no ReLU)"  # the fix drops the class maps' ReLU
    assert isinstance(written["dead_maps_on_test"], list) and isinstance(written["classes_never_predicted"], list)
    table = (tmp_path / "runs" / "results.md").read_text()
    assert "| d2l_fashion_mnist_fixed | 0 | ok |" in table and "- d2l_fashion_mnist: test acc" in table
    assert table in capsys.readouterr().out
