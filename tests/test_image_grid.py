"""`labelled_grid`: panels land where they should, every caption is drawn, bad shapes are refused."""

import numpy as np
import pytest

from sd_sparse.evaluation.image_grid import labelled_grid


def _panel(value, size=32):
    """A uniform panel of a colour that anti-aliased black-on-white text never produces."""
    panel = np.zeros((size, size, 3), dtype=np.uint8)
    panel[..., 0] = value
    panel[..., 1] = 255 - value
    return panel


def _where(grid, value):
    return (grid == [value, 255 - value, 0]).all(axis=2)


def test_panels_are_pasted_under_their_captions_and_captions_are_drawn():
    panels = [[_panel(10), _panel(200)], [None, _panel(90, size=16)]]
    captions = [["first", "second"], ["empty cell", "small, scaled up"]]
    grid = np.asarray(labelled_grid(panels, captions, panel_size=32, gap=4))
    # locate the panels: the uniform blocks of the values we pasted
    for value, count in [(10, 32 * 32), (200, 32 * 32), (90, 32 * 32)]:
        assert _where(grid, value).sum() == count
    # each panel sits under its caption strip; the strip holds dark text pixels
    rows, cols = np.nonzero(_where(grid, 10))
    top, left = rows.min(), cols.min()
    strip = grid[:top, left : left + 32]
    assert (strip < 128).any()
    # the empty cell stays white below its caption
    rows90, cols90 = np.nonzero(_where(grid, 90))
    empty = grid[rows90.min() : rows90.min() + 32, left : left + 32]
    assert (empty == 255).all()


def test_captions_must_match_the_panels():
    with pytest.raises(ValueError, match="one caption per panel"):
        labelled_grid([[_panel(0), _panel(1)]], [["only one"]])
    with pytest.raises(ValueError, match="`row_titles` must have one title per row"):
        labelled_grid([[_panel(0)]], [["a"]], row_titles=["x", "y"])
    with pytest.raises(ValueError, match="uint8"):
        labelled_grid([[np.zeros((8, 8, 3), dtype=np.float32)]], [["a"]])
