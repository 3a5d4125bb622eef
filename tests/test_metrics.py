import numpy as np
import pytest
from scipy.spatial import procrustes
from scipy.spatial.transform import Rotation

from diffmesh import metrics


def test_mpjpe_hand_case():
    gt = np.zeros((1, 2, 3))
    pred = np.array([[[3.0, 4.0, 0.0], [0.0, 0.0, 1.0]]])
    np.testing.assert_allclose(metrics.mpjpe(pred, gt), [3.0])                 # (5 + 1) / 2


def test_pa_alignment_matches_scipy_procrustes():
    rng = np.random.default_rng(0)
    gt = rng.normal(size=(5, 14, 3))
    R = Rotation.random(5, random_state=1).as_matrix()
    pred = 1.7 * np.einsum("tij,tkj->tki", R, gt) + rng.normal(size=(5, 1, 3)) + rng.normal(0, 0.05, gt.shape)
    ours = metrics.similarity_procrustes(pred, gt)
    for t in range(5):
        std_gt, std_pred, _ = procrustes(gt[t], pred[t])                       # both standardised by scipy
        g0 = gt[t] - gt[t].mean(0)
        expected = std_pred * np.linalg.norm(g0) + gt[t].mean(0)                # back to gt's frame and scale
        np.testing.assert_allclose(ours[t], expected, atol=1e-9)
    assert metrics.pa_mpjpe(pred, gt).max() < 0.1 < metrics.mpjpe(pred, gt).min()


def test_pa_of_a_similar_copy_is_zero():
    gt = np.random.default_rng(2).normal(size=(3, 17, 3))
    R = Rotation.from_euler("xyz", [0.3, -1.0, 2.0]).as_matrix()
    pred = 0.5 * gt @ R.T + 3.0
    np.testing.assert_allclose(metrics.pa_mpjpe(pred, gt), 0, atol=1e-10)


def test_acc_err_hand_case():
    gt = np.zeros((4, 1, 3))
    pred = np.zeros((4, 1, 3))
    pred[1, 0, 0] = 1.0                           # accelerations: t=1: 0-2+0 = -2 ; t=2: 1-0+0 = 1
    np.testing.assert_allclose(metrics.acc_err(pred, gt), [2.0, 1.0])


def _seq(T=40, seed=0):
    rng = np.random.default_rng(seed)
    gt = np.cumsum(rng.normal(0, 0.01, (T, 17, 3)), 0) + rng.normal(0, 0.2, (1, 17, 3))
    pred = gt + rng.normal(0, 0.02, gt.shape) + np.array([0.5, 0, 0])          # noise and a global offset
    return pred, gt


def test_tcmr_protocol_against_direct_computation():
    pred, gt = _seq()
    m = metrics.evaluate_tcmr(pred, gt)
    p, g = pred[:, metrics.H36M_TO_J14], gt[:, metrics.H36M_TO_J14]
    p = p - (p[:, 2] + p[:, 3])[:, None] / 2                                  # hips are J14 positions 2 and 3
    g = g - (g[:, 2] + g[:, 3])[:, None] / 2
    assert set(metrics.H36M_TO_J14[[2, 3]]) == {1, 4}                         # ... which are H36M's two hips
    assert m.mpjpe == pytest.approx(np.linalg.norm(p - g, axis=-1).mean() * 1000)
    acc = np.linalg.norm((p[:-2] - 2 * p[1:-1] + p[2:]) - (g[:-2] - 2 * g[1:-1] + g[2:]), axis=-1).mean() * 1000
    assert m.acc_err == pytest.approx(acc)
    assert m.frames == 40 and m.acc_frames == 38 and m.mpve is None
    assert m.pa_mpjpe < m.mpjpe


def test_motionbert_protocol_clips_and_pelvis():
    pred, gt = _seq(T=37)
    m = metrics.evaluate_motionbert(pred, gt, clip_len=16)
    assert m.frames == 32 and m.acc_frames == 2 * 14                          # tail of 5 dropped; 14 per clip
    p = (pred - pred[:, :1])[:32, metrics.H36M_TO_J14]
    g = (gt - gt[:, :1])[:32, metrics.H36M_TO_J14]
    assert m.mpjpe == pytest.approx(np.linalg.norm(p - g, axis=-1).mean() * 1000)
    acc = np.concatenate([metrics.acc_err(p[s:s + 16], g[s:s + 16]) for s in (0, 16)]).mean() * 1000
    assert m.acc_err == pytest.approx(acc)
    # a jump between clips does not count as acceleration inside a clip
    shifted = pred.copy()
    shifted[16:, 16] += 0.3                                                   # the right wrist jumps at frame 16
    assert metrics.evaluate_motionbert(shifted, gt).acc_err == pytest.approx(m.acc_err)
    assert metrics.evaluate_tcmr(shifted, gt).acc_err > metrics.evaluate_tcmr(pred, gt).acc_err + 1


def test_mpve_and_aggregate():
    pred, gt = _seq(T=20)
    verts_gt = np.random.default_rng(5).normal(size=(20, 50, 3))
    m1 = metrics.evaluate_tcmr(pred, gt, verts_gt + 0.001, verts_gt)
    assert m1.mpve == pytest.approx(np.sqrt(3) * 0.001 * 1000)
    m2 = metrics.evaluate_tcmr(*_seq(T=60, seed=1))
    agg = metrics.aggregate([m1, m2])
    assert agg.frames == 80 and agg.mpve is None
    assert agg.mpjpe == pytest.approx((m1.mpjpe * 20 + m2.mpjpe * 60) / 80)
    assert agg.acc_err == pytest.approx((m1.acc_err * 18 + m2.acc_err * 58) / 76)


def test_bad_shapes():
    with pytest.raises(ValueError, match=r"\(T, 17, 3\)"):
        metrics.evaluate_tcmr(np.zeros((5, 14, 3)), np.zeros((5, 14, 3)))
    with pytest.raises(ValueError, match="shorter than one clip"):
        metrics.evaluate_motionbert(np.zeros((5, 17, 3)), np.zeros((5, 17, 3)))
