"""`ninlab summary`: the d2l NiN document's dimension verification as a table, and its Python API."""

import pytest

from ninlab.cli import main
from ninlab.models.summary import format_summary, summarize

D2L_DOCUMENT_SHAPES = [(96, 54, 54), (96, 26, 26), (256, 26, 26), (256, 12, 12), (384, 12, 12), (384, 5, 5),
                   (384, 5, 5), (10, 5, 5), (10, 1, 1), (10,)]  # fmt: skip


def test_d2l_shapes_match_the_d2l_nin_document():
    summary = summarize("nin_d2l", (1, 224, 224))
    assert [row.output_shape for row in summary.rows] == D2L_DOCUMENT_SHAPES
    assert summary.params == 1_992_166 == sum(row.params for row in summary.rows)
    # 0.762 G multiply-adds (1.52 GFLOPs) per 1x224x224 image: the figure docs/sources.md records for d2l's NiN.
    assert round(summary.macs / 1e9, 3) == 0.762
    assert summary.flops == 2 * summary.macs


def test_cifar_macs_match_caffe_network():
    summary = summarize("nin_cifar")
    assert summary.input_shape == (3, 32, 32)
    assert round(summary.macs / 1e6, 1) == 222.5  # per 32x32 image: docs/sources.md, Lin et al.'s Caffe model


def test_dense_head_comparison():
    summary = summarize("nin_d2l")
    assert summary.trunk_shape == (384, 5, 5)
    assert summary.nin_head_params == 34_790
    assert summary.dense_head_params == (9600 * 4096 + 4096) + (4096 * 4096 + 4096) + (4096 * 10 + 10)
    assert "1,614x" in format_summary(summary)


def test_num_classes_and_channels_options():
    summary = summarize("nin_cifar", (1, 40, 40), num_classes=42)
    assert summary.rows[-1].output_shape == (42,)
    assert summary.input_shape == (1, 40, 40)


def test_cli_prints_the_table(capsys):
    assert main(["summary", "nin_d2l"]) == 0
    out = capsys.readouterr().out
    for shape in ("96x54x54", "256x12x12", "384x5x5", "10x5x5", "10x1x1"):
        assert shape in out
    assert "1,992,166" in out and "762,297,352" in out and "MACs" in out


def test_cli_too_small_input_is_one_line(capsys):
    assert main(["summary", "nin_d2l", "--input-size", "1", "64", "64"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "ninlab: error: input 1x64x64 is too small for nin_d2l: the smallest is 1x67x67; "
        "resize the images (e.g. --data.image_size 67)"
    )


def test_cli_unknown_model_lists_known(capsys):
    assert main(["summary", "nin_nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'nin_nope'" in err and "nin_d2l" in err and len(err.strip().splitlines()) == 1


def test_cli_verbose_shows_the_traceback():
    from ninlab.errors import InputSizeError

    with pytest.raises(InputSizeError):
        main(["--verbose", "summary", "nin_d2l", "--input-size", "1", "64", "64"])
