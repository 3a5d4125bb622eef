"""The top view: a walker on a known straight line is drawn where the axes say, the panel's dot moves with them
frame by frame and the path behind them grows, and the PNG is a readable picture of the whole run."""

import cv2
import numpy as np

from diffmesh.top_view import TopView, segments, track_starts

T = 60


def _walker(y: float = 5.0, x0: float = -1.5, x1: float = 1.5) -> np.ndarray:
    joints = np.zeros((T, 17, 3))
    joints[:, :, 0] = np.linspace(x0, x1, T)[:, None]
    joints[:, :, 1] = y
    joints[:, :, 2] = 1.0
    return joints


def _camera(height: float = 2.0) -> np.ndarray:
    """World from camera for a level camera at the origin looking along world +y (camera z)."""
    m = np.eye(4)
    m[:3, :3] = np.array([[1, 0, 0], [0, 0, 1], [0, -1, 0]], float)
    m[2, 3] = height
    return m


def _dot(panel: np.ndarray, color) -> np.ndarray:
    """The centre of the drawn dot of a colour: the line is 2 px thick, the dot 12 px across, so only the dot
    survives an erosion by 7 x 7."""
    mask = (np.abs(panel.astype(int) - np.array(color)).max(-1) < 30).astype(np.uint8)
    core = cv2.erode(mask, np.ones((7, 7), np.uint8))
    ys, xs = np.nonzero(core)
    return np.array([xs.mean(), ys.mean()])


def test_the_panel_dot_walks_the_line_and_the_path_grows_behind_it():
    valid = np.ones(T, bool)
    view = TopView([(0, _walker(), valid, None, None)], _camera(), focal=1000, image_width=1280)
    panels = view.panels((400, 400))
    color = panels.colors[0]
    dots = np.array([_dot(panels(i), color) for i in (0, T // 2, T - 1)])
    # the walk is a straight line at constant speed along x: the dots are equally spaced on a horizontal line
    assert np.abs(dots[:, 1] - dots[0, 1]).max() < 1.0
    assert dots[2, 0] - dots[0, 0] > 100 and abs((dots[0, 0] + dots[2, 0]) / 2 - dots[1, 0]) < 1.5
    # half-way, the path is drawn behind the walker and not yet ahead
    half = panels(T // 2)
    row = int(round(dots[1, 1]))
    on_color = np.abs(half[row].astype(int) - np.array(color)).max(-1) < 30
    drawn = np.flatnonzero(on_color)
    assert drawn.min() < dots[0, 0] + 3 and drawn.max() < dots[1, 0] + 8
    # the camera sits below the walker in the panel (it looks along +y, drawn upwards)
    dark = np.argwhere(np.asarray(panels.background).max(-1) < 40)
    assert dark[:, 0].mean() > dots[0, 1]


def test_paths_break_where_the_tracker_jumps_and_where_nobody_is():
    points = np.arange(10, dtype=float).repeat(2).reshape(10, 2)
    points[4] = np.nan
    track = np.array([0, 0, 0, 0, -1, 0, 0, 1, 1, 1])
    runs = segments(points, track_starts(track, np.isfinite(points[:, 0])))
    assert [len(r) for r in runs] == [4, 2, 3]


def test_the_png_shows_every_person_in_their_colour(tmp_path):
    valid = np.ones(T, bool)
    people = [(0, _walker(5.0), valid, None, None), (1, _walker(8.0, 1.0, -1.0), valid, None, None),
              (2, _walker(3.0), np.zeros(T, bool), None, None)]             # person 2 was never seen: not drawn
    view = TopView(people, _camera(), focal=1000, image_width=1280)
    assert len(view.people) == 2
    view.save_png(tmp_path / "top.png")
    image = cv2.cvtColor(cv2.imread(str(tmp_path / "top.png")), cv2.COLOR_BGR2RGB)
    assert image.shape == (800, 800, 3)
    for color in view.colors:
        rgb = np.array(255 * color).astype(int)
        assert (np.abs(image.astype(int) - rgb).max(-1) < 20).sum() > 200
