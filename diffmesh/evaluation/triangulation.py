"""Points seen by several calibrated cameras, back to 3D: weighted DLT on undistorted coordinates, with the views
that disagree dropped one at a time (as Pose2Sim's triangulation does), and the reprojection error of each view.

While a point's worst kept view reprojects more than `max_error_px` away, the view whose removal leaves the
smallest worst error is dropped and the point triangulated again, as long as more than `min_views` remain.
Points seen confidently in fewer than `min_views` views are NaN.
"""

from dataclasses import dataclass

import numpy as np

from ..data.calibration import CalibratedCamera


def dlt(projections: np.ndarray, normalized: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted DLT for P points: projections (C, 3, 4) [R | t], normalized image coordinates (C, P, 2),
    weights (C, P) (0 drops a view) -> world points (P, 3); the smallest singular vector of the stacked
    equations w (x P_3 - P_1), w (y P_3 - P_2)."""
    x, y = normalized[..., 0, None], normalized[..., 1, None]                       # (C, P, 1)
    P1, P2, P3 = (projections[:, None, i] for i in range(3))                         # (C, 1, 4)
    rows = np.concatenate([x * P3 - P1, y * P3 - P2], 0) * np.concatenate([weights, weights], 0)[..., None]
    _, _, vt = np.linalg.svd(rows.transpose(1, 0, 2))                                 # (P, 2C, 4)
    X = vt[:, -1]
    with np.errstate(divide="ignore", invalid="ignore"):
        return X[:, :3] / X[:, 3:]


@dataclass
class Triangulated:
    """points (P, 3) metres (NaN where too few views agree); used (C, P) bool, the views kept for each point;
    error_px (C, P) each view's reprojection error of the final point (NaN where the view saw nothing)."""

    points: np.ndarray
    used: np.ndarray
    error_px: np.ndarray

    def view_error_px(self) -> np.ndarray:
        """(C,) mean reprojection error of each view over the points it was kept for."""
        err = np.where(self.used, self.error_px, np.nan)
        return np.array([np.nanmean(e) if np.isfinite(e).any() else np.nan for e in err])


def _solve(cameras, projections, normalized, pixels, weights, used, min_views):
    """Points from the views in `used` and each view's reprojection error (NaN for points with too few views)."""
    enough = used.sum(0) >= min_views
    points = np.full((pixels.shape[1], 3), np.nan)
    if enough.any():
        points[enough] = dlt(projections, normalized[:, enough], np.where(used, weights, 0.0)[:, enough])
    error = np.stack([np.linalg.norm(c.project(np.nan_to_num(points)) - p, axis=-1) for c, p in zip(cameras, pixels)])
    error[:, ~enough] = np.nan
    return points, error


def _worst_kept(error: np.ndarray, used: np.ndarray) -> np.ndarray:
    """(P,) the largest reprojection error among each point's kept views."""
    return np.where(used, np.nan_to_num(error, nan=np.inf), -1.0).max(0)


def triangulate(cameras: list[CalibratedCamera], pixels: np.ndarray, confidence: np.ndarray,
                min_confidence: float = 0.3, max_error_px: float = 15.0, min_views: int = 2) -> Triangulated:
    """pixels (C, P, 2) distorted, confidence (C, P) -> `Triangulated`. While a point's worst kept view is off by
    more than `max_error_px`, the view whose removal leaves the smallest worst error is dropped (every view is
    tried: the wrong view need not be the one with the largest error, since it pulls the point towards itself)."""
    projections = np.stack([c.projection for c in cameras])
    seen = np.isfinite(pixels).all(-1)                                             # NaN: the view saw nothing
    normalized = np.stack([c.normalized(np.where(s[:, None], p, 0.0)) for c, p, s in zip(cameras, pixels, seen)])
    used = (confidence >= min_confidence) & seen
    weights = np.where(used, confidence, 0.0)
    points, error = _solve(cameras, projections, normalized, pixels, weights, used, min_views)
    while True:
        bad = (used.sum(0) > min_views) & (_worst_kept(error, used) > max_error_px)
        if not bad.any():
            break
        trials = []
        for view in range(len(cameras)):
            kept = used.copy()
            kept[view] = False
            trial = _solve(cameras, projections, normalized, pixels, weights, kept, min_views)
            worst = np.where(used[view], _worst_kept(trial[1], kept), np.inf)
            trials.append((worst, trial))
        best = np.argmin(np.stack([t[0] for t in trials]), 0)
        for view, (_, (trial_points, trial_error)) in enumerate(trials):
            pick = bad & (best == view)
            used[view, pick] = False
            points[pick], error[:, pick] = trial_points[pick], trial_error[:, pick]
    enough = used.sum(0) >= min_views
    return Triangulated(points, used & enough, np.where(seen, error, np.nan))
