"""The world seen from above: every person's path on the ground of a static camera's world (`world.py`), the camera
and its field of view. `topview.png` is the whole run at once; `--top-view` adds a panel to overlay.mp4 in which
each person's path grows frame by frame.

One matplotlib figure draws both: the PNG is the figure with the full paths; the panel's background is the same
axes with the paths faint, rendered once, and each frame draws the path so far and a dot where the person is, at
pixels from the axes' own data transform (so the panel and the PNG never disagree on where a point is)."""

import cv2
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .overlay import PERSON_COLORS

PELVIS, RIGHT_ANKLE, LEFT_ANKLE = 0, 3, 6          # Human3.6M joint indices (keypoints.H36M layout)
MARGIN_M = 0.5                                     # ground shown around the paths and the camera


def segments(points: np.ndarray, starts: np.ndarray) -> list[np.ndarray]:
    """The runs of finite rows of `points` (T, 2), also cut where `starts` (T,) is True (another presence track
    begins there: the single-person tracker jumped to someone else, and no line should join the two)."""
    ok = np.isfinite(points[:, 0])
    cut = np.flatnonzero(starts | ~ok)
    return [run[np.isfinite(run[:, 0])] for run in np.split(points, cut) if np.isfinite(run[:, 0]).sum() > 1]


def track_starts(track_id: np.ndarray | None, valid: np.ndarray) -> np.ndarray:
    """(T,) True where a person's presence track differs from the one before it."""
    if track_id is None:
        return np.zeros(len(valid), bool)
    return np.r_[False, track_id[1:] != track_id[:-1]] & valid


class TopView:
    """The ground plane from above for people given as (id, joints3d_world (T, 17, 3), valid (T,), contacts (T, 2)
    or None, track_id (T,) or None); the camera at `world_from_camera`'s origin, looking along its optical axis
    with horizontal half-angle atan(width / 2 / focal)."""

    def __init__(self, people: list[tuple], world_from_camera: np.ndarray, focal: float, image_width: int):
        shown = [k for k, p in enumerate(people) if p[2].any()]
        self.people = [people[k] for k in shown]
        self.starts = [track_starts(p[4], p[2]) for p in self.people]
        # darker than the overlay's colours, for a white page; the k-th person keeps the overlay's k-th colour
        self.colors = PERSON_COLORS[np.array(shown, int) % len(PERSON_COLORS)] * 0.8
        self.camera = world_from_camera[:2, 3]
        forward = world_from_camera[:2, 2]
        self.forward = forward / max(np.linalg.norm(forward), 1e-9)
        self.half_angle = float(np.arctan2(image_width / 2, focal))

    def paths(self) -> list[np.ndarray]:
        """Each person's pelvis on the ground (T, 2), NaN where not valid."""
        return [np.where(valid[:, None], joints[:, PELVIS, :2], np.nan) for _, joints, valid, _, _ in self.people]

    def _limits(self) -> tuple[np.ndarray, np.ndarray]:
        points = np.concatenate([p[np.isfinite(p[:, 0])] for p in self.paths()] + [self.camera[None]])
        low, high = points.min(0) - MARGIN_M, points.max(0) + MARGIN_M
        centre, half = (low + high) / 2, (high - low).max() / 2       # square, so metres are equal both ways
        return centre - half, centre + half

    def figure(self, size_px: tuple[int, int], faint: bool = False, dpi: int = 100) -> Figure:
        """The axes with the camera, its field of view and the paths (faint for a panel's background)."""
        fig = Figure(figsize=(size_px[0] / dpi, size_px[1] / dpi), dpi=dpi)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        low, high = self._limits()
        reach = float(np.linalg.norm(high - low))
        for sign in (-1, 1):                       # the field of view's edges
            c, s = np.cos(sign * self.half_angle), np.sin(sign * self.half_angle)
            edge = np.array([[c, -s], [s, c]]) @ self.forward
            ax.plot(*np.stack([self.camera, self.camera + reach * edge]).T, color="0.6", lw=1, ls="--")
        ax.plot(*self.camera, marker="s", color="black", ms=7, label="camera")
        for (pid, joints, valid, contacts, _), path, starts, color in zip(self.people, self.paths(), self.starts,
                                                                          self.colors):
            alpha = 0.25 if faint else 1.0
            for k, run in enumerate(segments(path, starts)):
                ax.plot(run[:, 0], run[:, 1], color=color, lw=1.5, alpha=alpha,
                        label=None if k else f"person {pid}")
            if not faint and valid.any():
                first, last = np.flatnonzero(valid)[[0, -1]]
                ax.plot(*path[first], marker="o", color=color, ms=6)
                ax.plot(*path[last], marker=">", color=color, ms=7)
                if contacts is not None:           # where the feet were planted
                    feet = np.concatenate([joints[contacts[:, 0] & valid, RIGHT_ANKLE, :2],
                                           joints[contacts[:, 1] & valid, LEFT_ANKLE, :2]])
                    ax.scatter(feet[:, 0], feet[:, 1], s=2, color=color, alpha=0.5)
        ax.set_xlim(low[0], high[0])
        ax.set_ylim(low[1], high[1])
        ax.set_aspect("equal")
        ax.grid(True, lw=0.5, alpha=0.5)
        ax.set_xlabel("x (m)")
        ax.set_ylabel("y (m)")
        ax.legend(loc="upper right", fontsize=7)
        if not faint:
            ax.set_title("top view: paths (o start, > end), planted feet", fontsize=9)
        fig.tight_layout()
        return fig

    def save_png(self, path, size_px: tuple[int, int] = (800, 800)) -> None:
        self.figure(size_px).savefig(path)

    def panels(self, size_px: tuple[int, int]) -> "TopViewPanels":
        return TopViewPanels(self, size_px)


class TopViewPanels:
    """Frame i's panel (H, W, 3) uint8 RGB: the faint background with each person's path up to frame i drawn over
    it and a dot where they are in frame i."""

    def __init__(self, view: TopView, size_px: tuple[int, int]):
        fig = view.figure(size_px, faint=True)
        fig.canvas.draw()
        self.background = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
        height = self.background.shape[0]
        to_display = fig.axes[0].transData.transform
        self.pixels = []                            # each person's path (T, 2) in panel pixels, NaN where absent
        for path in view.paths():
            xy = np.full_like(path, np.nan)
            ok = np.isfinite(path[:, 0])
            if ok.any():
                xy[ok] = to_display(path[ok])
                xy[ok, 1] = height - xy[ok, 1]      # display y grows upwards, image rows downwards
            self.pixels.append(xy)
        self.colors = [tuple(int(255 * c) for c in color) for color in view.colors]
        self.starts = view.starts

    def __call__(self, i: int) -> np.ndarray:
        image = self.background.copy()
        for xy, starts, color in zip(self.pixels, self.starts, self.colors):
            runs = segments(xy[:i + 1], starts[:i + 1])
            cv2.polylines(image, [np.round(run).astype(np.int32) for run in runs], False, color, 2, cv2.LINE_AA)
            if i < len(xy) and np.isfinite(xy[i, 0]):
                cv2.circle(image, tuple(int(v) for v in np.round(xy[i])), 6, color, -1, cv2.LINE_AA)
        return image
