"""The pictures the recipes write are labelled (issue 32): `save_grid` puts row labels left of the rows and column
labels above the columns, and leaves the images themselves untouched."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from gentok.tokenizers.image.assets import save_grid


def _rows(n_rows=3, n=4, size=24):
    g = torch.Generator().manual_seed(0)
    return [torch.rand(n, 3, size, size, generator=g) for _ in range(n_rows)]


def test_labels_frame_the_same_grid(tmp_path):
    rows = _rows()
    bare = np.asarray(Image.open(save_grid(rows, tmp_path / "bare.png")))
    labelled = np.asarray(Image.open(save_grid(rows, tmp_path / "l.png", row_labels=["held-out", "infill", "sample"],
                                               col_labels=["a", "b", "c", "d"])))
    dy, dx = labelled.shape[0] - bare.shape[0], labelled.shape[1] - bare.shape[1]
    assert dy > 0 and dx > 0
    assert np.array_equal(labelled[dy:, dx:], bare)  # the images are exactly the bare grid, moved right and down
    assert (labelled[:, :dx] < 128).any() and (labelled[:dy, :] < 128).any()  # ink in both label bands
    rows_only = np.asarray(Image.open(save_grid(rows, tmp_path / "r.png", row_labels=["a", "b", "c"])))
    assert rows_only.shape[0] == bare.shape[0] and rows_only.shape[1] > bare.shape[1]
    # a different label is a different picture: the text is really drawn
    other = np.asarray(Image.open(save_grid(rows, tmp_path / "o.png", row_labels=["x", "b", "c"])))
    assert other.shape != rows_only.shape or not np.array_equal(other, rows_only)


def test_label_counts_must_match(tmp_path):
    with pytest.raises(ValueError, match="2 row labels for 3 rows"):
        save_grid(_rows(), tmp_path / "x.png", row_labels=["a", "b"])
    with pytest.raises(ValueError, match="3 column labels for 4 columns"):
        save_grid(_rows(), tmp_path / "x.png", col_labels=["a", "b", "c"])


def test_image_report_pictures_are_labelled(tmp_path):
    """`write_report` labels reconstructions.png rows (held-out / reconstruction / baseline)."""
    from gentok.data.images import default_image_data
    from gentok.evaluation.image import evaluate_image_tokenizer, write_report
    from gentok.quantizers import VQConfig
    from gentok.tokenizers.image.titok import TiTok, TiTokConfig

    torch.manual_seed(0)
    model = TiTok(TiTokConfig(image_size=16, patch_size=8, num_tokens=4, width=32, enc_depth=1, dec_depth=1,
                              heads=2, quantizer=VQConfig(dim=8, codebook_size=32))).eval()
    _, held = default_image_data(16, eval_length=8, train_length=8)
    report = write_report(evaluate_image_tokenizer(model, held), model, held, str(tmp_path))
    grid = np.asarray(Image.open(report["grid"]))
    n = min(8, len(held))
    bare_width = n * (16 + 2) + 2
    assert grid.shape[1] > bare_width  # a label column on the left
