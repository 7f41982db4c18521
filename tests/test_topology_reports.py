from __future__ import annotations

import numpy as np
import pytest

from rartsprune.app.topology.reports import alpha_history_array, draw_cell, plot_alpha_history
from rartsprune.topology import DARTS_PRIMITIVES, DARTS_V2, NATS_PRIMITIVES

ARCH = "|nor_conv_3x3~0|+|skip_connect~0|none~1|+|avg_pool_3x3~0|nor_conv_1x1~1|nor_conv_3x3~2|"


def _png_size(path):
    import matplotlib.image as mpimg

    img = mpimg.imread(path)
    return img.shape


def test_alpha_history_array_is_softmax_per_edge():
    hist = [
        {"epoch": 1, "alpha": {"cell": [[0.0, np.log(3.0)], [1.0, 1.0]]}},
        {"epoch": 2, "alpha": {"cell": [[0.0, 0.0], [0.0, np.log(4.0)]]}},
    ]
    epochs, probs = alpha_history_array(hist, "cell")
    assert epochs == [1, 2]
    np.testing.assert_allclose(probs[0], [[0.25, 0.75], [0.5, 0.5]])
    np.testing.assert_allclose(probs[1], [[0.5, 0.5], [0.2, 0.8]])
    with pytest.raises(ValueError, match="lacks"):
        alpha_history_array(hist, "normal")
    with pytest.raises(ValueError, match="empty"):
        alpha_history_array([], "cell")


def test_plot_alpha_history_nats_and_darts(tmp_path):
    rng = np.random.default_rng(0)
    nats = [{"epoch": e, "alpha": {"cell": rng.normal(size=(6, 5)).tolist()}} for e in range(4)]
    p = plot_alpha_history(nats, NATS_PRIMITIVES, tmp_path / "nats.png")
    h, w, _ = _png_size(p)
    assert h > 100 and w > 300
    darts = [
        {"epoch": e, "alpha": {n: rng.normal(size=(14, 8)).tolist() for n in ("normal", "reduce")}}
        for e in range(3)
    ]
    p2 = plot_alpha_history(darts, DARTS_PRIMITIVES, tmp_path / "sub" / "darts.png", title="t")
    assert _png_size(p2)[0] > _png_size(p)[0]  # 4 rows of panels vs 1
    with pytest.raises(ValueError, match="op names"):
        plot_alpha_history(nats, DARTS_PRIMITIVES, tmp_path / "bad.png")


def test_draw_cells(tmp_path):
    p = draw_cell(ARCH, tmp_path / "nats_cell.png")
    assert p.stat().st_size > 1000
    for cell in ("normal", "reduce"):
        q = draw_cell(DARTS_V2, tmp_path / f"{cell}.png", cell=cell)
        assert q.stat().st_size > 1000
    with pytest.raises(ValueError, match="cell must be"):
        draw_cell(DARTS_V2, tmp_path / "x.png", cell="other")
    with pytest.raises(ValueError, match="malformed"):
        draw_cell("|nope~0|", tmp_path / "x.png")
