"""The rendered MediaPipe set (`diffmesh prepare --render`): a tiny real render with MediaPipe, its stored truth
against an independent projection, resuming after an interruption, refusing stale files, and the depth-test
visibility on an obvious case."""

import numpy as np
import pytest
import torch

from diffmesh.camera import project
from diffmesh.data.renders import (RENDER_FORMAT, check_render_file, load_render_set, noise_model_samples,
                                   render_file, render_statistics, truth_keypoints)
from diffmesh.data.synthetic import NoiseModel
from diffmesh.errors import DataError, DiffMeshError
from diffmesh.render import RenderError

SEQ, FRAMES = "13_11", 16


def _settings(**kw):
    from diffmesh.render_set import RenderSettings

    return RenderSettings(**{"cameras": 1, "max_frames": FRAMES, **kw})


def _render(cache, **kw):
    from diffmesh.render_set import run_render_set

    settings = kw.pop("settings", None) or _settings()
    return run_render_set(["13"], cache, settings=settings, workers=1, quiet=True, sequences=[SEQ], **kw)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, test_split_fits):
    cache = tmp_path_factory.mktemp("renders")
    try:
        report = _render(cache)
    except RenderError as e:
        pytest.skip(str(e))
    return cache, report


def test_tiny_render_mediapipe_finds_the_body(tiny):
    cache, report = tiny
    data = check_render_file(render_file(cache, SEQ, 0))
    assert int(data["format"]) == RENDER_FORMAT and len(data["mp_returned"]) == FRAMES
    assert data["mp_returned"].mean() >= 0.9, data["mp_returned"]
    # MediaPipe's keypoints lie on the rendered body where the truth says it is: the image and the stored truth agree
    stats = report["statistics"]
    assert stats["detection"]["rate"] >= 0.9
    assert stats["mediapipe_2d"]["all"]["pct_median"] < 6.0
    assert 0 < stats["mediapipe_world"]["pa_mpjpe_landmarks_mm"] < 150
    assert (cache / "report.json").exists() and (cache / "progress.json").exists()


def test_stored_truth_matches_an_independent_projection(tiny):
    cache, _ = tiny
    d = check_render_file(render_file(cache, SEQ, 0))
    R, pos, focal, principal = d["camera_R"], d["camera_position"], float(d["focal"]), d["principal"]
    np.testing.assert_allclose(principal, [d["width"] / 2, d["height"] / 2])
    cam = (d["joints_world"].astype(np.float64) - pos) @ R.T.astype(np.float64)
    np.testing.assert_allclose(cam, d["joints_cam"], atol=1e-4)
    np.testing.assert_allclose(project(cam, focal, principal), d["joints_px"], atol=1e-2)
    used = d["landmark_used"]
    lm = project((d["landmarks_world"][:, used] - pos) @ R.T, focal, principal)
    np.testing.assert_allclose(lm, d["landmarks_px"][:, used], atol=1e-2)
    # the stored bone rotations and shape pose the body onto the stored joints (Anny axes, translation = root head)
    from diffmesh.body import load_body

    body = load_body("anny")
    out = body(torch.as_tensor(d["rotmats"]), torch.as_tensor(d["shape"])[None].expand(FRAMES, -1),
               with_vertices=False)
    np.testing.assert_allclose(out.joints.numpy() + d["translation"][:, None], d["joints_world"], atol=1e-4)
    assert d["joints_inside"].all() and d["joints_unoccluded"].mean() > 0.5


def test_resumes_after_an_interruption(tiny, tmp_path):
    import shutil

    cache, _ = tiny
    work = tmp_path / "renders"
    shutil.copytree(cache, work)
    done = render_file(work, SEQ, 0)
    before = done.stat().st_mtime_ns
    # what a killed job leaves: a hidden temporary file, and (from a copy gone wrong) a truncated file
    (work / f".{SEQ}_cam1.npz.x1y2.tmp.npz").write_bytes(b"partial")
    render_file(work, SEQ, 1).write_bytes(done.read_bytes()[:1000])
    with pytest.raises(DataError) as e:
        load_render_set(work)                      # a reader never trusts a broken file
    assert "unreadable" in str(e.value) and "\n" not in str(e.value)
    report = _render(work, settings=_settings(cameras=2), stats=False)
    assert report["files_done_before"] == 1 and report["files_rendered"] == 1
    assert done.stat().st_mtime_ns == before                  # the finished file was kept as it was
    assert not list(work.glob(".*.tmp.npz"))
    assert check_render_file(render_file(work, SEQ, 1))["mp_returned"].any()
    assert len(load_render_set(work)) == 2


def test_old_render_format_and_other_settings_are_refused_in_one_line(tiny, tmp_path):
    import shutil

    cache, _ = tiny
    work = tmp_path / "renders"
    shutil.copytree(cache, work)
    path = render_file(work, SEQ, 0)
    data = dict(np.load(path))
    data["format"] = np.int64(RENDER_FORMAT - 1)
    np.savez(path, **data)
    for call in (lambda: load_render_set(work), lambda: _render(work)):
        with pytest.raises(DiffMeshError) as e:
            call()
        msg = str(e.value)
        assert "format" in msg and "--force" in msg and "\n" not in msg
    with pytest.raises(DataError, match="other settings"):
        _render(work, settings=_settings(seed=5))
    from diffmesh.render_set import _lock

    lock = _lock(work)
    try:
        with pytest.raises(DataError, match="another"):
            _render(work)
    finally:
        lock.close()


def test_noise_model_statistics_use_the_same_truth(tiny):
    cache, _ = tiny
    files = load_render_set(cache)
    exact = noise_model_samples(files, NoiseModel(enabled=False))
    assert np.abs(exact.err).max() < 1e-3                     # no noise: the truth itself
    stats = render_statistics(files)
    assert set(stats["mediapipe_2d"]["joints"]) == set(stats["noise_model_2d"]["joints"])
    assert truth_keypoints(files[0]).shape == (FRAMES, 17, 2)


def test_depth_visibility_of_an_obvious_case(anny_body):
    """The reference pose (A-pose, facing -y, left = +x) seen from the front: every joint visible; from its left
    side at hip height: the left hip, knee, shoulder and elbow visible, the right ones hidden behind the body."""
    from diffmesh.body.anny_body import ANNY_H36M_BONES
    from diffmesh.render import MeshRenderer
    from diffmesh.render_scene import point_tolerances, point_visibility

    rest = anny_body.rest_model(torch.zeros(1, anny_body.num_shape))
    v, heads = rest["vertices"][0].numpy(), rest["heads"][0].numpy()
    labels = list(anny_body.bone_labels)
    joints = np.array([heads[labels.index(b)] for b in ANNY_H36M_BONES])
    faces = anny_body.faces.numpy()
    tol = point_tolerances(joints, v, faces, np.zeros(17, bool), joints[:, 2] > heads[labels.index("neck01")][2] + 0.02)
    try:
        mesh = MeshRenderer(640, 640, faces, 700.0, vertex_colors=np.full((len(v), 3), 0.6))
    except RenderError as e:
        pytest.skip(str(e))
    # world -> camera rotations (rows: camera x right, y down, z forward), camera 4 m away at hip height
    front = np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]], np.float64)     # looks along +y at the body's front
    left = np.array([[0, 1, 0], [0, 0, -1], [-1, 0, 0]], np.float64)     # stands at +x, looks along -x
    seen = {}
    for name, R, position in (("front", front, [0, -4.0, 0]), ("left", left, [4.0, 0, 0])):
        cam_v = ((v - position) @ R.T).astype(np.float32)
        mesh.render(cam_v)
        depth = mesh.last_depth()
        assert np.isfinite(depth).sum() > 1000
        inside, seen[name] = point_visibility((joints - position) @ R.T, depth, 700.0, tol)
        assert inside.all()
    mesh.release()
    assert seen["front"].all(), [b for b, s in zip(ANNY_H36M_BONES, seen["front"]) if not s]
    idx = {b: i for i, b in enumerate(ANNY_H36M_BONES)}
    for side, visible in ((".L", True), (".R", False)):
        for bone in ("upperleg01", "lowerleg01", "upperarm01", "lowerarm01"):
            assert seen["left"][idx[bone + side]] == visible, bone + side


def test_last_depth_is_the_nearest_surface_in_metres():
    from diffmesh.render import MeshRenderer

    quad = np.array([[-1, -1, 2.0], [1, -1, 2.0], [1, 1, 2.0], [-1, 1, 2.0]], np.float32)
    near = quad * [0.2, 0.2, 1.0] + [0, 0, -0.5]          # a smaller quad in front, at 1.5 m
    faces = np.array([[0, 1, 2], [0, 2, 3], [4, 5, 6], [4, 6, 7]])
    try:
        mesh = MeshRenderer(200, 100, faces, 100.0, vertex_colors=np.full((8, 3), 0.5))
    except RenderError as e:
        pytest.skip(str(e))
    img = mesh.render(np.concatenate([quad, near]))
    depth = mesh.last_depth()
    mesh.release()
    assert abs(depth[50, 100] - 1.5) < 1e-3 and abs(depth[50, 60] - 2.0) < 1e-3
    assert np.isinf(depth[2, 2]) and img[2, 2].sum() == 0 and img[50, 100].sum() > 0


def test_eval_scores_the_rendered_test_split(tiny, tmp_path, capsys):
    """`diffmesh eval`'s default data: the shipped model and MediaPipe on a rendered test sequence; MediaPipe's
    PA-MPJPE is the direct per-frame Procrustes error on the frames scored."""
    from diffmesh.cli import main
    from diffmesh.data.renders import load_render_set
    from diffmesh.evaluation.real_video import MEDIAPIPE_RAW, mediapipe_world_h36m
    from diffmesh.evaluation.renders import run_render_eval
    from diffmesh.metrics import pa_mpjpe
    from diffmesh.paths import DEFAULT_CHECKPOINT

    cache, _ = tiny
    report = run_render_eval([str(DEFAULT_CHECKPOINT)], cache_dir=cache)
    assert report["files"] == 1 and 10 <= report["frames_scored"] <= FRAMES
    ours, mp = report["methods"][DEFAULT_CHECKPOINT.stem]["all17"], report["methods"][MEDIAPIPE_RAW]["all17"]
    assert 20 < ours["pa_mpjpe"] <= ours["mpjpe"] < 200
    data = load_render_set(cache)[0]
    world = mediapipe_world_h36m(data["mp_world"], data["mp_visibility"])
    truth = data["joints_cam"] - data["joints_cam"][:, :1]
    ok = np.isfinite(world).all((1, 2)) & ~data["glitch"].astype(bool)
    assert ok.sum() == report["frames_scored"]              # the run kept every frame MediaPipe returned
    assert mp["pa_mpjpe"] == pytest.approx(pa_mpjpe(world[ok], truth[ok]).mean() * 1000, rel=1e-6)
    empty = tmp_path / "no_renders"
    empty.mkdir()
    assert main(["eval", str(DEFAULT_CHECKPOINT), "--render-cache", str(empty)]) == 2
    assert "diffmesh prepare --render" in capsys.readouterr().err


def test_feet_eval_takes_one_checkpoint_and_says_how_many_files_had_a_world(tiny, tmp_path, capsys):
    """`diffmesh eval --feet`: the report, printed and as JSON, scores the test file before and after the contact
    handling; after it no sole is below the run's own floor; two checkpoints are refused in one line."""
    import json

    from diffmesh.cli import main
    from diffmesh.paths import DEFAULT_CHECKPOINT

    cache, _ = tiny
    out = tmp_path / "feet.json"
    assert main(["eval", "--feet", "--render-cache", str(cache), "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["files"] == 1 and report["files_with_world"] == 1 and 0 < report["frames"] <= FRAMES
    assert report["after"]["own_penetration_p95_cm"] == 0.0
    assert all(np.isfinite(report[stage]["penetration_cm"]) for stage in ("before", "after"))
    printed = capsys.readouterr().out
    assert "1 of 1 files with a world" in printed and "| after contact handling |" in printed
    assert main(["eval", "--feet", str(DEFAULT_CHECKPOINT), str(DEFAULT_CHECKPOINT), "--render-cache", str(cache)]) == 2
    assert "--feet scores one checkpoint" in capsys.readouterr().err
    # the validation subjects (where the contact handling is tuned) are asked for by name; this cache has none
    assert main(["eval", "--feet", "--split", "val", "--render-cache", str(cache)]) == 2
    assert "--subjects 08,09,10,39,93" in capsys.readouterr().err
    assert main(["eval", "--feet", "--split", "train", "--render-cache", str(cache)]) == 2
    assert "--split val" in capsys.readouterr().err


def test_true_contacts_are_slow_ankles_near_their_standing_height():
    from diffmesh.evaluation.feet import true_contacts

    T, fps = 30, 30.0
    ankles = np.zeros((T, 2, 3))
    ankles[..., 2] = 0.07
    ankles[10:20, 0, 0] = np.arange(10) * 0.02                  # right foot: 0.6 m/s along the floor
    ankles[20:, 0, 0] = 0.18
    ankles[:, 1, 2] = 0.07 + np.where(np.arange(T) >= 15, 0.2, 0.0)   # left foot lifted 20 cm at frame 15
    contact = true_contacts(ankles, 0.07, fps)
    assert not contact[0].any() and not contact[-1].any()                # no central difference at the ends
    assert contact[1:10, 0].all() and not contact[11:19, 0].any() and contact[21:-1, 0].all()
    assert contact[1:14, 1].all() and not contact[15:, 1].any()
