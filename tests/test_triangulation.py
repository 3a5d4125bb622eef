"""The multi-view reference's geometry on the real calibration of Pose2Sim's multi-person demo: the Qualisys file
read as Pose2Sim reads it, and DLT triangulation with outlier views dropped, against points projected through
the same cameras."""

import numpy as np
import pytest

from diffmesh.data.calibration import CalibratedCamera, demo_multiperson, fetch_wheel, read_qca
from diffmesh.errors import DataError, DiffMeshError, MissingFileError
from diffmesh.evaluation.triangulation import triangulate


@pytest.fixture(scope="module")
def cameras() -> list[CalibratedCamera]:
    try:
        folder = demo_multiperson()
    except DiffMeshError as e:                       # no package index reachable: nothing to check against
        pytest.skip(f"Pose2Sim demo unavailable: {e}")
    return read_qca(folder / "calibration" / "Calib.qca.txt")


def _visible_points(cameras, n: int = 200, seed: int = 0) -> np.ndarray:
    """Random points in the capture volume (a 3 x 3 m floor area, 0-2 m high) that every camera sees."""
    rng = np.random.default_rng(seed)
    pts = rng.uniform([-1.5, -1.5, 0], [1.5, 1.5, 2], (20 * n, 3))
    ok = np.ones(len(pts), bool)
    for c in cameras:
        depth = (pts @ c.R.T + c.t)[:, 2]
        uv = c.project(pts)
        ok &= (depth > 0.5) & (uv >= 0).all(1) & (uv[:, 0] < c.size[0]) & (uv[:, 1] < c.size[1])
    assert ok.sum() >= n, "the calibration's cameras share no view of the capture volume"
    return pts[ok][:n]


def test_calibration_reads_four_cameras_placed_where_qualisys_says(cameras):
    assert [c.name for c in cameras] == ["cam01", "cam02", "cam03", "cam04"]
    assert all(c.size == (1088, 1920) for c in cameras)                  # portrait 1088x1920, as the videos
    cam01 = cameras[0]
    assert cam01.K[0, 0] == pytest.approx(107599.671875 / 64) and cam01.K[1, 2] == pytest.approx(60680.792969 / 64)
    # The camera centre -R^T t is the position Qualisys stores (mm) for cam01.
    np.testing.assert_allclose(-cam01.R.T @ cam01.t, [1.4602323709, -1.9091590482, 1.8965058524], atol=1e-9)
    for c in cameras:
        np.testing.assert_allclose(c.R @ c.R.T, np.eye(3), atol=1e-9)
        assert np.linalg.det(c.R) == pytest.approx(1.0)


def test_triangulation_round_trips_points_projected_through_the_real_cameras(cameras):
    points = _visible_points(cameras)
    pixels = np.stack([c.project(points) for c in cameras])
    result = triangulate(cameras, pixels, np.ones(pixels.shape[:2]))
    np.testing.assert_allclose(result.points, points, atol=1e-6)
    assert result.used.all() and np.nanmax(result.error_px) < 1e-4


def test_a_wrong_view_is_dropped_and_reported(cameras):
    points = _visible_points(cameras, n=50, seed=1)
    pixels = np.stack([c.project(points) for c in cameras])
    pixels[2, :20] += 120.0                               # cam03 sees someone else for the first 20 points
    result = triangulate(cameras, pixels, np.ones(pixels.shape[:2]))
    np.testing.assert_allclose(result.points, points, atol=1e-6)
    assert not result.used[2, :20].any() and result.used[:, 20:].all()
    assert result.error_px[2, :20].min() > 100 and result.view_error_px()[2] < 1e-4
    low = np.ones(pixels.shape[:2])
    low[:3, 40:] = 0.0                                    # seen confidently by one camera only: no point
    assert np.isnan(triangulate(cameras, pixels, low).points[40:]).all()
    pixels[3, 30:] = np.nan                               # cam04 saw nothing there (MediaPipe's missing frames)
    missing = triangulate(cameras, pixels, np.ones(pixels.shape[:2]))
    np.testing.assert_allclose(missing.points, points, atol=1e-6)
    assert not missing.used[3, 30:].any() and np.isnan(missing.error_px[3, 30:]).all()


def test_bad_calibration_and_missing_wheel_are_one_line(tmp_path, cameras):
    bad = tmp_path / "Calib.qca.txt"
    bad.write_text("<calibration><cameras><camera model='none' serial='x'><fov_video left='0'/>")
    with pytest.raises(DataError, match="not a readable Qualisys calibration"):
        read_qca(bad)
    bad.write_text("<calibration><cameras><camera model='none' serial='x'><fov_video left='0' top='0' right='9'/>"
                   "<intrinsic/><transform/></camera></cameras></calibration>")
    with pytest.raises(DataError, match="'bottom' is missing") as e:
        read_qca(bad)
    assert "\n" not in str(e.value)
    with pytest.raises(MissingFileError, match="pip download --no-deps pose2sim==0.10.49"):
        fetch_wheel(tmp_path / "empty", download=False)
    corrupt = tmp_path / "c" / "pose2sim-0.10.49-py3-none-any.whl"
    corrupt.parent.mkdir()
    corrupt.write_bytes(b"PK not a wheel")
    with pytest.raises(DataError, match="corrupt"):
        fetch_wheel(corrupt.parent, download=False)


@pytest.fixture(scope="module")
def references(cameras):
    from diffmesh.evaluation.multiview_reference import demo_references

    return demo_references()


def test_demo_reference_holds_both_active_people_the_woman_upright_with_steady_legs(references):
    """MediaPipe's two models in the four views, grouped into people and triangulated: the woman beside the walkway
    (seen by most views) and the man on it; the views kept reproject within 11 px; the woman stands upright (z up,
    head over 1 m above the ankles) and her leg bones keep their length."""
    assert len(references) == 2
    woman, man = references
    complete = np.isfinite(woman.joints).all((1, 2))
    assert woman.joints.shape == (100, 17, 3) and complete.sum() >= 95
    assert np.isfinite(man.landmarks).all(-1).any(-1).sum() >= 60
    J = woman.joints[complete]
    assert (J[:, 10, 2] - J[:, [3, 6], 2].mean(1) > 1.0).all()
    for a, b in ((1, 2), (2, 3), (4, 5), (5, 6)):                    # thighs and shins
        length = np.linalg.norm(J[:, a] - J[:, b], axis=-1)
        assert 0.2 < length.mean() < 0.6 and length.std() / length.mean() < 0.12, (a, b)
    for ref in references:
        assert np.nanmax(ref.view_error_px) < 11.0 and ref.jitter_mm() > ref.jitter_mm(5) > 0
    both = np.isfinite(woman.joints[:, 0]).all(-1) & np.isfinite(man.joints[:, 0]).all(-1)
    assert (np.linalg.norm(woman.joints[both, 0] - man.joints[both, 0], axis=-1) > 0.5).all()
    assert np.ptp(man.joints[:, 0, 0][np.isfinite(man.joints[:, 0, 0])]) > 0.5     # he moves along the walkway


def test_demo_reference_is_cached_and_a_damaged_cache_is_rebuilt(references):
    from diffmesh.evaluation.multiview_reference import REFERENCE_VERSION, demo_references

    path = demo_multiperson() / f"reference_v{REFERENCE_VERSION}.npz"
    assert path.is_file()
    np.testing.assert_array_equal(demo_references()[1].joints, references[1].joints)
    path.write_bytes(path.read_bytes()[:100])                          # a half-written file from a killed run
    np.testing.assert_allclose(demo_references()[0].joints, references[0].joints, atol=1e-9)


def _person(centre, rng) -> np.ndarray:
    """33 landmark-like points of a person standing at `centre` (x, y on the floor), z up to 1.7 m."""
    pts = rng.uniform([-0.25, -0.15, 0.05], [0.25, 0.15, 1.7], (33, 3))
    return pts + [centre[0], centre[1], 0.0]


def test_people_are_grouped_across_views_and_keep_their_identity(cameras):
    from diffmesh.evaluation.association import group_frame, link_tracks
    from diffmesh.video.multi_pose import People

    rng = np.random.default_rng(0)
    a, b = _person((0.3, -0.3), rng), _person((-1.2, 0.0), rng)
    frames, truth = [], []
    for t in range(6):
        step = np.array([0.03 * t, 0.0, 0.0])                        # both walk 3 cm per frame
        pa, pb = a + step, b + step
        views = []
        for v, cam in enumerate(cameras):
            dets = [cam.project(pa), cam.project(pb)]
            if v == 2:
                dets = dets[:1]                                      # cam03 misses the second person
            order = rng.permutation(len(dets))                       # detectors list people in any order
            lm = np.stack([dets[i] + rng.normal(0, 1.0, (33, 2)) for i in order])
            views.append(People(lm.astype(np.float32), np.ones(lm.shape[:2], np.float32),
                                np.zeros((*lm.shape[:2], 3), np.float32)))
        frames.append(views)
        truth.append((pa, pb))
    groups = [group_frame(cameras, views) for views in frames]
    assert all(len(g) == 2 for g in groups)
    tracks = link_tracks(groups)
    assert len(tracks) == 2 and all(len(tr) == 6 for tr in tracks)
    for tr in tracks:
        first = tr[0].landmarks
        who = int(np.linalg.norm(first - truth[0][1], axis=-1).mean() < np.linalg.norm(first - truth[0][0], axis=-1).mean())
        for t, group in tr.items():                                  # the same person in every frame, to ~1 cm
            assert np.linalg.norm(group.landmarks - truth[t][who], axis=-1).mean() < 0.01
        assert ((tr[0].members >= 0).sum()) == (4 if who == 0 else 3)
