"""GLB and BVH exports, read back with independent readers (pygltflib's loader, trimesh, the `bvh` package) and
re-skinned from the files' own data in numpy, then compared with the body models' own meshes and joints."""

import pickle

import numpy as np
import pygltflib
import pytest
import scipy.sparse
import torch
from bvh import Bvh
from scipy.spatial.transform import Rotation

from diffmesh.body import load_body
from diffmesh.body.base import chain_kinematics
from diffmesh.export import write_bvh, write_glb
from diffmesh.rotations import rotvec_to_rotmat

C = np.diag([1.0, -1.0, -1.0])  # camera axes <-> glTF/BVH axes (its own inverse)
FPS, T, INVALID = 25.0, 10, 6


def _clip(body, seed=0):
    """T frames of small random bone rotations around the upright pose, a root moving across the view, one shape,
    frame INVALID marked as nobody seen."""
    g = torch.Generator().manual_seed(seed)
    rot = rotvec_to_rotmat(torch.randn(T, body.num_bones, 3, generator=g) * 0.2)
    rot[:, 0] = body.mean_pose[0] @ rot[:, 0]
    s = torch.arange(T, dtype=torch.float32)
    translation = torch.stack([0.05 * s - 0.2, 0.1 + 0.01 * s, 3.0 + 0.03 * s], 1)
    valid = torch.ones(T, dtype=torch.bool)
    valid[INVALID] = False
    return rot, torch.randn(body.num_shape, generator=g) * 0.5, translation, valid


def _accessor(gltf, index):
    acc = gltf.accessors[index]
    view = gltf.bufferViews[acc.bufferView]
    dtype = {5126: np.float32, 5125: np.uint32, 5123: np.uint16, 5121: np.uint8}[acc.componentType]
    width = {"SCALAR": 1, "VEC3": 3, "VEC4": 4, "MAT4": 16}[acc.type]
    data = np.frombuffer(gltf.binary_blob(), dtype, acc.count * width, view.byteOffset + (acc.byteOffset or 0))
    return data.reshape(acc.count, width).astype(np.float64 if dtype == np.float32 else np.int64)


def _parents(gltf):
    parents = [-1] * len(gltf.nodes)
    for i, node in enumerate(gltf.nodes):
        for child in node.children:
            parents[child] = i
    return parents


def _skin_from_glb(gltf, key):
    """Skinned vertices (V, 3) at animation key `key`, glTF axes, from the file's data alone."""
    local = []
    for node in gltf.nodes:
        local.append({"translation": np.array(node.translation or [0.0] * 3),
                      "rotation": np.array(node.rotation or [0.0, 0.0, 0.0, 1.0]),
                      "scale": np.array(node.scale or [1.0] * 3)})
    anim = gltf.animations[0]
    for ch in anim.channels:
        local[ch.target.node][ch.target.path] = _accessor(gltf, anim.samplers[ch.sampler].output)[key]
    parents = _parents(gltf)
    world = [None] * len(gltf.nodes)

    def world_of(i):
        if world[i] is None:
            m = np.eye(4)
            m[:3, :3] = Rotation.from_quat(local[i]["rotation"]).as_matrix() * local[i]["scale"]
            m[:3, 3] = local[i]["translation"]
            world[i] = m if parents[i] < 0 else world_of(parents[i]) @ m
        return world[i]

    skin = gltf.skins[0]
    ibm = _accessor(gltf, skin.inverseBindMatrices).reshape(-1, 4, 4).transpose(0, 2, 1)
    joint_mats = np.stack([world_of(j) for j in skin.joints]) @ ibm
    attr = gltf.meshes[0].primitives[0].attributes
    pos, joints, weights = (_accessor(gltf, a) for a in (attr.POSITION, attr.JOINTS_0, attr.WEIGHTS_0))
    blended = np.einsum("vi,viab->vab", weights, joint_mats[joints])
    return np.einsum("vab,vb->va", blended[:, :3, :3], pos) + blended[:, :3, 3]


def _bind_lbs(bind, rot, translation):
    """Skinning of the bind pose the way the export means it, in the body's frame placed at the translation."""
    G, heads = chain_kinematics(rot[None], bind.heads[None], bind.parents)
    moved = torch.einsum("kab,vb->vka", G[0], bind.vertices) + (heads[0] - torch.einsum("kab,kb->ka", G[0], bind.heads))
    picked = moved[torch.arange(len(moved))[:, None], bind.skin_indices]           # (V, 4, 3)
    return (bind.skin_weights[..., None] * picked).sum(1) + translation


# ------------------------------------------------------------------ GLB, Anny

def test_glb_anny_structure_and_skinning(anny_body, tmp_path):
    body = anny_body
    rot, shape, translation, valid = _clip(body)
    path = tmp_path / "mesh.glb"
    write_glb(path, body, rot, shape, translation, FPS, valid)
    assert [p.name for p in tmp_path.iterdir()] == ["mesh.glb"]                   # no temporary file left
    gltf = pygltflib.GLTF2().load(str(path))
    bind = body.bind_pose(shape)
    K, V = body.num_bones, body.num_vertices

    skin = gltf.skins[0]
    assert len(gltf.skins) == 1 and len(skin.joints) == K
    parents = _parents(gltf)
    assert tuple(parents[j] for j in skin.joints) == body.posed_parents
    assert tuple(gltf.nodes[j].name for j in skin.joints) == bind.names
    # Each inverse bind matrix undoes its joint's rest transform (rest rotations are all the identity).
    rest_world = np.zeros((K, 3))
    for j in skin.joints:
        rest_world[j] = np.array(gltf.nodes[j].translation) + (rest_world[parents[j]] if parents[j] >= 0 else 0)
    ibm = _accessor(gltf, skin.inverseBindMatrices).reshape(-1, 4, 4).transpose(0, 2, 1)
    np.testing.assert_allclose(ibm[:, :3, 3], -rest_world, atol=1e-6)
    np.testing.assert_allclose(ibm[:, :3, :3], np.broadcast_to(np.eye(3), (K, 3, 3)), atol=1e-7)

    anim = gltf.animations[0]
    assert len(gltf.animations) == 1 and len(anim.channels) == K + 2
    assert sorted(ch.target.path for ch in anim.channels if ch.target.node == 0) == ["rotation", "scale", "translation"]
    times_acc = gltf.accessors[anim.samplers[0].input]
    times = _accessor(gltf, anim.samplers[0].input)[:, 0]
    assert len(times) == T and times_acc.min == [0.0] and times_acc.max == pytest.approx([(T - 1) / FPS])
    np.testing.assert_allclose(np.diff(times), 1 / FPS, atol=1e-6)
    assert {s.input for s in anim.samplers} == {anim.samplers[0].input}
    scale = next(anim.samplers[ch.sampler] for ch in anim.channels if ch.target.path == "scale")
    assert scale.interpolation == "STEP"
    np.testing.assert_array_equal(_accessor(gltf, scale.output)[:, 0], valid.numpy().astype(float))

    prim = gltf.meshes[0].primitives[0]
    assert gltf.accessors[prim.attributes.POSITION].count == V
    assert gltf.accessors[prim.indices].count == 3 * len(body.faces)
    assert gltf.accessors[prim.attributes.JOINTS_0].count == gltf.accessors[prim.attributes.WEIGHTS_0].count == V
    np.testing.assert_allclose(_accessor(gltf, prim.attributes.WEIGHTS_0).sum(1), 1.0, atol=1e-6)

    # The strong check: the file re-skinned in numpy against the body model's own mesh at the translation.
    with torch.no_grad():
        model = body(rot, shape.expand(T, -1)).vertices + translation[:, None]
    for t in range(T):
        if not valid[t]:
            continue
        glb = _skin_from_glb(gltf, t) @ C.T                                          # back to camera axes
        ours = _bind_lbs(bind, rot[t], translation[t]).numpy()
        # The file encodes the intended skinning to float32 precision...
        np.testing.assert_allclose(glb, ours, atol=1e-4)
        # ... which approximates Anny's mesh (see test_anny_weight_collapse_error: about 1 cm at the worst vertex,
        # 0.1-0.3 mm on average, at these 0.2 rad poses).
        err = np.linalg.norm(glb - model[t].numpy(), axis=1)
        assert err.max() < 0.03 and err.mean() < 1e-3, (t, err.max(), err.mean())

    # The unseen frame holds the previous pose and collapses the body to its root.
    quats = {ch.target.node: _accessor(gltf, anim.samplers[ch.sampler].output)
             for ch in anim.channels if ch.target.path == "rotation"}
    for q in quats.values():
        np.testing.assert_array_equal(q[INVALID], q[INVALID - 1])
    hidden = _skin_from_glb(gltf, INVALID) @ C.T
    np.testing.assert_allclose(hidden, np.broadcast_to(translation[INVALID - 1].numpy(), hidden.shape), atol=1e-6)

    trimesh = pytest.importorskip("trimesh")
    scene = trimesh.load(str(path))
    assert sum(len(g.vertices) for g in scene.geometry.values()) == V


def test_anny_weight_collapse_error(anny_body):
    """How far Anny's mesh is from skinning its reference pose with the 24 posed bones, before and after keeping
    four influences. Anny skins its blendshape rest pose, whose bone frames differ from the reference ones by up
    to ~7 degrees, so even all influences leave errors where posed and unposed bones blend (hips, spine,
    shoulders). Measured over 4 seeds at 0.2 / 0.4 rad random poses: all influences 2-4 / 4-8 mm at the worst
    vertex, 0.06-0.2 mm mean; four influences 6-10 / 11-17 mm worst, 0.1-0.27 mm mean."""
    body = anny_body
    rot, shape, translation, _ = _clip(body, seed=1)
    bind = body.bind_pose(shape)
    model = body._anny
    anchors = torch.tensor([body.anchor(label) for label in body.bone_labels])
    full = torch.zeros(body.num_vertices, body.num_bones).scatter_add_(
        1, anchors[model.vertex_bone_indices], model.vertex_bone_weights)
    top = torch.zeros_like(full).scatter_(1, bind.skin_indices, bind.skin_weights)
    with torch.no_grad():
        mesh = body(rot, shape.expand(T, -1)).vertices
    worst = {}
    for name, weights in (("all", full), ("top4", top)):
        G, heads = chain_kinematics(rot, bind.heads[None], bind.parents)
        offsets = heads - torch.einsum("tkab,kb->tka", G, bind.heads)
        moved = torch.einsum("tkab,vb->tvka", G, bind.vertices) + offsets[:, None]
        err = ((weights[None, ..., None] * moved).sum(2) - mesh).norm(dim=-1)
        worst[name] = (float(err.max()), float(err.mean()))
    assert worst["all"][0] < 1e-2 and worst["all"][1] < 5e-4, worst
    assert worst["top4"][0] < 3e-2 and worst["top4"][1] < 1e-3, worst
    np.testing.assert_allclose(body.rest_model(shape[None])["vertices"][0], bind.vertices)


# ------------------------------------------------------------------ BVH, Anny

def _bvh_fk(mocap, frame):
    """Joint positions (cm) of one BVH frame: local = translate(offset [+ root position]) Rz Rx Ry."""
    names = mocap.get_joints_names()
    world = {}
    for name in names:
        chans = mocap.joint_channels(name)
        values = dict(zip(chans, mocap.frame_joint_channels(frame, name, chans)))
        m = np.eye(4)
        m[:3, :3] = Rotation.from_euler("ZXY", [values["Zrotation"], values["Xrotation"], values["Yrotation"]],
                                        degrees=True).as_matrix()
        m[:3, 3] = mocap.joint_offset(name)
        if "Xposition" in values:
            m[:3, 3] += [values["Xposition"], values["Yposition"], values["Zposition"]]
        parent = mocap.joint_parent(name)
        world[name] = m if parent is None else world[parent.name] @ m
    return np.stack([world[n][:3, 3] for n in names])


def test_bvh_anny(anny_body, tmp_path):
    body = anny_body
    rot, shape, translation, valid = _clip(body)
    path = tmp_path / "motion.bvh"
    write_bvh(path, body, rot, shape, translation, FPS, valid)
    mocap = Bvh(path.read_text())
    names = body.bind_pose(shape).names
    assert tuple(mocap.get_joints_names()) == names
    for name, parent in zip(names, body.posed_parents):
        assert (mocap.joint_parent(name).name if parent >= 0 else None) == (names[parent] if parent >= 0 else None)
    assert mocap.nframes == T and mocap.frame_time == pytest.approx(1 / FPS)
    rotations = ["Zrotation", "Xrotation", "Yrotation"]
    assert mocap.joint_channels(names[0]) == ["Xposition", "Yposition", "Zposition"] + rotations
    assert all(mocap.joint_channels(n) == rotations for n in names[1:])
    with torch.no_grad():
        heads = body(rot, shape.expand(T, -1), with_vertices=False).bone_heads + translation[:, None]
    for t in range(T):
        expected = heads[t if valid[t] else t - 1].numpy() @ C.T * 100.0            # glTF/BVH axes, cm
        np.testing.assert_allclose(_bvh_fk(mocap, t), expected, atol=0.1)           # 1 mm


# ------------------------------------------------------------------ SMPL on a synthetic file of the real format

def _synthetic_smpl(folder):
    """An SMPL file of the real layout with at most four weights per vertex and no pose blend shapes, so that its
    LBS is exactly what glTF skinning can express."""
    rng = np.random.default_rng(0)
    V = 6890
    weights = rng.random((V, 24)) * (rng.random((V, 24)).argsort(1) < 4)
    weights /= weights.sum(1, keepdims=True)
    J_reg = scipy.sparse.random(24, V, density=0.002, random_state=1, format="csc")
    J_reg = scipy.sparse.csc_matrix(J_reg.multiply(1.0 / np.maximum(J_reg.sum(1), 1e-9)))
    parents = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21]
    data = {"v_template": rng.normal(0, 0.3, (V, 3)), "shapedirs": rng.normal(0, 0.01, (V, 3, 10)),
            "posedirs": np.zeros((V, 3, 207)), "J_regressor": J_reg, "weights": weights,
            "kintree_table": np.array([[4294967295] + parents[1:], list(range(24))]),
            "f": rng.integers(0, V, (13776, 3)).astype(np.uint32)}
    (folder / "SMPL_NEUTRAL.pkl").write_bytes(pickle.dumps(data, protocol=2))
    h36m = rng.random((17, V)) * (rng.random((17, V)) < 0.01)
    np.save(folder / "J_regressor_h36m.npy", h36m / h36m.sum(1, keepdims=True))
    return data


def test_glb_smpl_matches_lbs(tmp_path):
    data = _synthetic_smpl(tmp_path)
    body = load_body("smpl", str(tmp_path))
    rot, shape, translation, valid = _clip(body, seed=2)
    bind = body.bind_pose(shape)
    v_shaped = data["v_template"] + data["shapedirs"] @ shape.numpy()
    J = data["J_regressor"] @ v_shaped
    np.testing.assert_allclose(bind.heads.numpy(), J - J[0], atol=1e-5)
    np.testing.assert_allclose(bind.skin_weights.sum(1).numpy(), 1.0, atol=1e-6)
    path = tmp_path / "mesh.glb"
    write_glb(path, body, rot, shape, translation, FPS, valid)
    gltf = pygltflib.GLTF2().load(str(path))
    with torch.no_grad():
        model = body(rot, shape.expand(T, -1)).vertices + translation[:, None]
    for t in (0, T - 1):
        np.testing.assert_allclose(_skin_from_glb(gltf, t) @ C.T, model[t].numpy(), atol=1e-4)


# ------------------------------------------------------------------ errors and Blender

def test_mismatched_frames_is_a_value_error(anny_body, tmp_path):
    rot, shape, translation, _ = _clip(anny_body)
    with pytest.raises(ValueError, match=r"translation must have shape \(10, 3\)"):
        write_glb(tmp_path / "x.glb", anny_body, rot, shape, translation[:-1], FPS)
    with pytest.raises(ValueError, match="valid must have shape"):
        write_bvh(tmp_path / "x.bvh", anny_body, rot, shape, translation, FPS, valid=np.ones(3, bool))
    assert not list(tmp_path.iterdir())


def test_blender_imports_glb(anny_body, tmp_path):
    bpy = pytest.importorskip("bpy")
    rot, shape, translation, valid = _clip(anny_body)
    path = tmp_path / "mesh.glb"
    write_glb(path, anny_body, rot, shape, translation, FPS, valid)
    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.context.scene.render.fps = int(FPS)
    bpy.ops.import_scene.gltf(filepath=str(path))
    armatures = [o for o in bpy.data.objects if o.type == "ARMATURE"]
    meshes = [o for o in bpy.data.objects if o.type == "MESH"]
    assert len(armatures) == 1 and len(armatures[0].data.bones) == anny_body.num_bones
    assert len(meshes) == 1 and any(m.type == "ARMATURE" for m in meshes[0].modifiers)
    action = armatures[0].animation_data.action
    start, end = action.frame_range
    assert round(end - start) + 1 == T
