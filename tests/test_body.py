import pickle
import sys
import types

import numpy as np
import pytest
import scipy.sparse
import torch

from diffmesh.body import H36M_JOINT_NAMES, load_body
from diffmesh.body.smpl import SMPLBody
from diffmesh.errors import DataError, MissingFileError, UnsafePickleError
from diffmesh.rotations import rotvec_to_rotmat
from diffmesh.safe_pickle import safe_load_pickle

SMPL_PARENTS = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21]


# ------------------------------------------------------------------ Anny

def test_anny_interface(anny_body):
    body = anny_body
    B = 3
    rot = rotvec_to_rotmat(torch.randn(B, body.num_bones, 3) * 0.2)
    shape = torch.randn(B, body.num_shape, requires_grad=True)
    rot.requires_grad_(True)
    out = body(rot, shape)
    assert out.joints.shape == (B, 17, 3) and out.vertices.shape == (B, body.num_vertices, 3)
    assert body.faces.shape[1] == 3 and body.faces.max() < body.num_vertices
    torch.testing.assert_close(out.joints[:, 0], torch.zeros(B, 3), atol=1e-5, rtol=0)   # root at the origin
    (out.vertices.sum() + out.joints.sum()).backward()
    assert shape.grad.abs().sum() > 0 and rot.grad.abs().sum() > 0
    fast = body(rot.detach(), shape.detach(), with_vertices=False)
    assert fast.vertices is None
    torch.testing.assert_close(fast.joints, out.joints.detach())


def test_anny_h36m_joints_are_anatomical(anny_body):
    """At rest (identity rotations, z up, facing -y) the H36M joints sit where their names say."""
    out = anny_body(torch.eye(3).expand(1, anny_body.num_bones, 3, 3), torch.zeros(1, anny_body.num_shape))
    j = dict(zip(H36M_JOINT_NAMES, out.joints[0]))
    for side, sign in (("left", 1), ("right", -1)):
        assert sign * j[f"{side}_hip"][0] > 0.05 and sign * j[f"{side}_wrist"][0] > 0.2   # body's left is +x
        assert j[f"{side}_ankle"][2] < j[f"{side}_knee"][2] < j[f"{side}_hip"][2]
        assert j[f"{side}_wrist"][2] < j[f"{side}_shoulder"][2]
    assert j["pelvis"][2] < j["spine"][2] < j["thorax"][2] < j["neck_nose"][2] <= j["head"][2]
    height = out.vertices[0, :, 2].max() - out.vertices[0, :, 2].min()
    assert 1.4 < float(height) < 2.0


def test_anny_skeleton(anny_body):
    sk = anny_body.skeleton()
    assert len(sk.names) == len(sk.parents) == anny_body.num_bones and sk.rest_heads.shape == (anny_body.num_bones, 3)
    assert sk.parents[0] == -1 and all(0 <= p < i for i, p in enumerate(sk.parents) if i > 0)


def test_wrong_pose_shape_is_a_clear_error(anny_body):
    with pytest.raises(ValueError, match=r"rotations must have shape \(B, 24, 3, 3\)"):
        anny_body(torch.eye(3).expand(1, 23, 3, 3), torch.zeros(1, 6))


# ------------------------------------------------------------------ SMPL on a synthetic file of the real format

class _FakeCh:
    """Pickles like chumpy.ch.Ch (module 'chumpy.ch', state dict with the array in 'x')."""

    def __init__(self, x):
        self.x = x
        self._dirty_vars = set()


def _synthetic_smpl(tmp_path, chumpy: bool):
    rng = np.random.default_rng(0)
    V = 6890
    weights = rng.random((V, 24))
    weights /= weights.sum(1, keepdims=True)
    J_reg = scipy.sparse.random(24, V, density=0.002, random_state=1, format="csc")
    J_reg = scipy.sparse.csc_matrix(J_reg.multiply(1.0 / np.maximum(J_reg.sum(1), 1e-9)))
    shapedirs = rng.normal(0, 0.01, (V, 3, 10))
    data = {
        "v_template": rng.normal(0, 0.3, (V, 3)), "shapedirs": shapedirs, "posedirs": rng.normal(0, 0.001, (V, 3, 207)),
        "J_regressor": J_reg, "weights": weights, "kintree_table": np.array([[4294967295] + SMPL_PARENTS[1:], list(range(24))]),
        "f": rng.integers(0, V, (13776, 3)).astype(np.uint32), "vert_sym_idxs": np.arange(V), "bs_type": "lrotmin",
        "bs_style": "lbs", "weights_prior": weights, "J": rng.normal(size=(24, 3)),
    }
    if chumpy:
        mod, sub = types.ModuleType("chumpy"), types.ModuleType("chumpy.ch")
        _FakeCh.__module__, _FakeCh.__qualname__, _FakeCh.__name__ = "chumpy.ch", "Ch", "Ch"
        sub.Ch = _FakeCh
        sys.modules["chumpy"], sys.modules["chumpy.ch"] = mod, sub
        try:
            data["shapedirs"] = _FakeCh(shapedirs)
            blob = pickle.dumps(data, protocol=2)
        finally:
            del sys.modules["chumpy"], sys.modules["chumpy.ch"]
    else:
        blob = pickle.dumps(data, protocol=2)
    (tmp_path / "SMPL_NEUTRAL.pkl").write_bytes(blob)
    h36m = rng.random((17, V)) * (rng.random((17, V)) < 0.01)
    np.save(tmp_path / "J_regressor_h36m.npy", h36m / h36m.sum(1, keepdims=True))
    return data, shapedirs, J_reg.toarray(), h36m / h36m.sum(1, keepdims=True)


def _reference_lbs(data, shapedirs, J_reg, betas, R):
    """Independent SMPL: loops over joints, numpy float64, homogeneous matrices."""
    v = data["v_template"] + shapedirs @ betas
    J = J_reg @ v
    pose_feat = np.concatenate([(R[i] - np.eye(3)).ravel() for i in range(1, 24)])
    v = v + data["posedirs"] @ pose_feat
    world = []
    for i in range(24):
        M = np.eye(4)
        M[:3, :3] = R[i]
        M[:3, 3] = J[i] - (J[SMPL_PARENTS[i]] if i else 0)
        world.append(world[SMPL_PARENTS[i]] @ M if i else M)
    skin = []
    for i in range(24):
        A = world[i].copy()
        A[:3, 3] -= world[i][:3, :3] @ J[i]
        skin.append(A)
    T = np.einsum("vj,jab->vab", data["weights"], np.stack(skin))
    verts = np.einsum("vab,vb->va", T[:, :3, :3], v) + T[:, :3, 3]
    return verts - world[0][:3, 3]


@pytest.mark.parametrize("chumpy", [False, True])
def test_smpl_matches_independent_lbs(tmp_path, chumpy):
    data, shapedirs, J_reg, h36m = _synthetic_smpl(tmp_path, chumpy)
    body = load_body("smpl", str(tmp_path))
    assert "chumpy" not in sys.modules
    assert (body.num_bones, body.num_shape, body.num_vertices) == (24, 10, 6890)
    rng = np.random.default_rng(3)
    betas = rng.normal(size=(2, 10))
    R = rotvec_to_rotmat(torch.tensor(rng.normal(0, 0.4, (2, 24, 3)))).numpy()
    out = body(torch.tensor(R, dtype=torch.float32), torch.tensor(betas, dtype=torch.float32))
    for b in range(2):
        ref = _reference_lbs(data, shapedirs, J_reg, betas[b], R[b])
        np.testing.assert_allclose(out.vertices[b].numpy(), ref, atol=2e-4)
        np.testing.assert_allclose(out.joints[b].numpy(), h36m @ ref, atol=2e-4)
    assert body.skeleton().parents == tuple(SMPL_PARENTS)


def test_smpl_missing_files_name_the_file(tmp_path):
    with pytest.raises(MissingFileError, match=r"SMPL model not found at .*SMPL_NEUTRAL.pkl: register at https://smpl"):
        SMPLBody(tmp_path)
    _synthetic_smpl(tmp_path, chumpy=False)
    (tmp_path / "J_regressor_h36m.npy").unlink()
    with pytest.raises(MissingFileError, match="J_regressor_h36m.npy"):
        SMPLBody(tmp_path)
    with pytest.raises(MissingFileError, match="--smpl-path"):
        load_body("smpl")


def test_smpl_wrong_shape_is_reported(tmp_path):
    _synthetic_smpl(tmp_path, chumpy=False)
    d = safe_load_pickle(tmp_path / "SMPL_NEUTRAL.pkl")
    d["weights"] = d["weights"][:, :10]
    (tmp_path / "SMPL_NEUTRAL.pkl").write_bytes(pickle.dumps(d))
    with pytest.raises(DataError, match="'weights' has shape"):
        SMPLBody(tmp_path)


# ------------------------------------------------------------------ restricted unpickler

class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned > /dev/null",))


def test_restricted_unpickler_refuses_code(tmp_path):
    p = tmp_path / "evil.pkl"
    p.write_bytes(pickle.dumps({"a": _Evil()}))
    with pytest.raises(UnsafePickleError, match=r"refusing to load '(posix|os)\.system'"):
        safe_load_pickle(p)


def test_restricted_unpickler_truncated(tmp_path):
    p = tmp_path / "t.pkl"
    p.write_bytes(pickle.dumps({"x": np.arange(1000)})[:200])
    with pytest.raises(DataError, match="truncated or not a valid pickle"):
        safe_load_pickle(p)


def test_restricted_unpickler_loads_arrays_and_sparse(tmp_path):
    obj = {"a": np.arange(6.0).reshape(2, 3), "s": scipy.sparse.csr_matrix(np.eye(3)), "l": [1, (2, "x")]}
    p = tmp_path / "ok.pkl"
    p.write_bytes(pickle.dumps(obj))
    back = safe_load_pickle(p)
    np.testing.assert_array_equal(back["a"], obj["a"])
    np.testing.assert_array_equal(back["s"].toarray(), np.eye(3))
    assert back["l"] == [1, (2, "x")]


def test_a_body_first_used_under_inference_mode_still_trains():
    """In a fresh process: the first AnnyBody made and run inside `torch.inference_mode` (as `diffmesh run`'s model
    stages do) must not leave inference tensors in the shared Anny model or roma's cache, or a later fit or
    training step in the same process fails."""
    import subprocess
    import sys

    code = ("import torch\n"
            "from diffmesh.body.anny_body import AnnyBody\n"
            "eye = lambda b: torch.eye(3).expand(2, b.num_bones, 3, 3).clone()\n"
            "with torch.inference_mode():\n"
            "    b = AnnyBody()\n"
            "    b(eye(b), torch.zeros(2, b.num_shape), with_vertices=True)\n"
            "b = AnnyBody()\n"
            "shape = torch.zeros(2, b.num_shape, requires_grad=True)\n"
            "b(eye(b), shape, with_vertices=True).joints.sum().backward()\n"
            "assert shape.grad.abs().sum() > 0\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
