"""Blender-ready exports of a recovered motion: a skinned, animated glTF binary (`write_glb`) and a BVH skeleton
animation (`write_bvh`).

Both use the body's `BindPose` (one shape for the whole clip), turned upright (Y up, facing +Z) by its `upright`
rotation U. Bone rotations act in world-aligned axes at the bind pose, so every bone's rest rotation is the identity,
its rest offset is U (h_k - h_parent), and a frame's local rotation is U R_k U^T. The root's rotation and its
translation (the root bone head in camera axes: x right, y down, z forward) are taken to glTF/BVH axes (Y up,
viewer looking along -Z) by C, the 180-degree turn about x: root rotation C R_0 U^T, root position C t.

Frames with valid=False (nobody seen) hold the previous valid pose (leading ones the first valid pose), so no
motion is invented; in the GLB the root bone's scale is also keyed to 0 there (STEP interpolation) so the body
vanishes. BVH has no scale channel: its invalid frames only hold the pose.

glTF (metres): one mesh (POSITION, NORMAL, JOINTS_0, WEIGHTS_0: each vertex's four largest influences), one skin
whose joints are the K posed bones (inverse bind matrices translate(-U h_k)), and one animation "motion" with a key
per frame at t/fps: rotation channels of all bones, translation and scale channels of the root. The file reproduces
`BindPose` skinning to float32 precision; against the body models' own meshes (tests/test_export.py): SMPL matches
except for its pose blend shapes, which glTF skinning cannot express; Anny is off by ~0.1 mm on average and ~1 cm
at the worst vertex at moderate poses (the four-influence cut, and Anny skinning a slightly different rest pose,
see `AnnyBody.bind_pose`).

BVH: written with bvhio's BvhContainer/BvhJoint/writeBvh (its hierarchy route, writeHierarchy, drops the offsets
unless a rest pose is set and drops channels of bones that barely move, so the file is assembled explicitly).
Unit: centimetres (set Blender's BVH import scale to 0.01 for metres). Root channels: Xposition Yposition Zposition
Zrotation Xrotation Yrotation, other joints: Zrotation Xrotation Yrotation, degrees, intrinsic order (local
rotation Rz Rx Ry). The root OFFSET is 0, so its position channels are the root head itself.
"""

import os
import uuid
from pathlib import Path

import bvhio
import numpy as np
import pygltflib as gl
from pyglm import glm
from scipy.spatial.transform import Rotation

from .body.base import BodyModel

_CAMERA_TO_GLTF = np.diag([1.0, -1.0, -1.0])


def _numpy(x) -> np.ndarray:
    return (x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)).astype(np.float64)


def _hold_index(valid: np.ndarray) -> np.ndarray:
    """(T,) bool -> (T,) index of the frame whose pose each frame shows: itself if valid, else the last valid one
    before it, else the first valid one (all frames if none is valid: nothing better to show)."""
    if not valid.any():
        return np.arange(len(valid))
    last = np.maximum.accumulate(np.where(valid, np.arange(len(valid)), -1))
    return np.where(last >= 0, last, int(np.argmax(valid)))


def _prepare(body: BodyModel, rotmats, shape, translation, fps: float, valid) -> dict:
    """Check the inputs and bring the clip to the upright rest frame: bind pose (vertices (V, 3), heads (K, 3),
    root head at the origin), local rotations (T, K, 3, 3), root positions (T, 3) in metres, shown (T,) bool."""
    R, t, s = _numpy(rotmats), _numpy(translation), _numpy(shape)
    K = body.num_bones
    if R.ndim != 4 or R.shape[1:] != (K, 3, 3) or R.shape[0] < 1:
        raise ValueError(f"rotmats must have shape (T, {K}, 3, 3), got {R.shape}")
    if t.shape != (R.shape[0], 3):
        raise ValueError(f"translation must have shape ({R.shape[0]}, 3) to match rotmats, got {t.shape}")
    if s.shape != (body.num_shape,):
        raise ValueError(f"shape must have shape ({body.num_shape},) (one shape for the clip), got {s.shape}")
    shown = np.ones(len(R), bool) if valid is None else _numpy(valid).astype(bool)
    if shown.shape != (len(R),):
        raise ValueError(f"valid must have shape ({len(R)},) to match rotmats, got {shown.shape}")
    if not (np.isfinite(R).all() and np.isfinite(t).all() and np.isfinite(s).all()):
        raise ValueError("rotmats, translation and shape must be finite (no NaN or inf)")
    if not (np.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive number, got {fps}")
    bind = body.bind_pose(body.mean_shape.new_tensor(s))
    U, h = _numpy(bind.upright), _numpy(bind.heads)
    hold = _hold_index(shown)
    local = U @ R[hold] @ U.T
    local[:, 0] = _CAMERA_TO_GLTF @ R[hold, 0] @ U.T
    return dict(vertices=(_numpy(bind.vertices) - h[0]) @ U.T, heads=(h - h[0]) @ U.T, parents=bind.parents,
                names=bind.names, indices=bind.skin_indices.cpu().numpy(), weights=_numpy(bind.skin_weights),
                local=local, root=t[hold] @ _CAMERA_TO_GLTF.T, shown=shown, faces=body.faces.cpu().numpy())


def _quaternions(R: np.ndarray) -> np.ndarray:
    """(T, K, 3, 3) -> (T, K, 4) x, y, z, w with each bone's sign kept continuous over time, so that
    interpolating between keys never takes the long way round."""
    q = Rotation.from_matrix(R.reshape(-1, 3, 3)).as_quat().reshape(*R.shape[:2], 4)
    flips = np.where(np.sum(q[1:] * q[:-1], -1) < 0, -1.0, 1.0)
    return q * np.concatenate([np.ones((1, q.shape[1])), np.cumprod(flips, 0)])[..., None]


def _normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals (V, 3); without them Blender shades the body flat."""
    n = np.zeros_like(vertices)
    fn = np.cross(vertices[faces[:, 1]] - vertices[faces[:, 0]], vertices[faces[:, 2]] - vertices[faces[:, 0]])
    for i in range(3):
        np.add.at(n, faces[:, i], fn)
    length = np.linalg.norm(n, axis=1, keepdims=True)
    return np.where(length > 1e-12, n / np.maximum(length, 1e-12), [0.0, 1.0, 0.0])


class _Packer:
    """Appends arrays to one binary buffer, one bufferView and accessor each."""

    def __init__(self, gltf: gl.GLTF2):
        self.gltf, self.chunks, self.size = gltf, [], 0

    def add(self, data: np.ndarray, kind: str, component: int, target: int | None = None, bounds: bool = False) -> int:
        raw = np.ascontiguousarray(data).tobytes()
        self.gltf.bufferViews.append(gl.BufferView(buffer=0, byteOffset=self.size, byteLength=len(raw), target=target))
        pad = -len(raw) % 4  # every view starts 4-byte aligned, as vertex attributes require
        self.chunks.append(raw + b"\0" * pad)
        self.size += len(raw) + pad
        flat = data.reshape(len(data), -1)
        accessor = gl.Accessor(bufferView=len(self.gltf.bufferViews) - 1, componentType=component, count=len(data),
                               type=kind, min=flat.min(0).tolist() if bounds else None,
                               max=flat.max(0).tolist() if bounds else None)
        self.gltf.accessors.append(accessor)
        return len(self.gltf.accessors) - 1

    def blob(self) -> bytes:
        return b"".join(self.chunks)


def _atomic_write(path, write) -> None:
    """Call write(tmp) on a temporary file next to `path`, then move it over `path`: readers never see half a file."""
    path = Path(path)
    # Not mkstemp: its 0600 mode would stick to the result; a plain open gets the user's usual permissions.
    tmp = str(path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp"))
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_glb(path, body: BodyModel, rotmats, shape, translation, fps: float, valid=None) -> None:
    """Write a skinned, animated glTF binary of a clip (see the module docstring for the conventions).

    Args:
        path: the .glb to write (replaced atomically); body: the body model the motion was recovered with;
        rotmats: (T, K, 3, 3) bone rotations, the root's in camera axes; shape: (S,) one shape for the clip;
        translation: (T, 3) root bone head in camera axes, metres; fps: frames per second;
        valid: (T,) bool, False where nobody was seen (None: all valid). Torch tensors or numpy arrays.
    Raises:
        ValueError: inconsistent shapes or non-finite values.
    """
    write_glb_people(path, body, [(rotmats, shape, translation, valid)], fps, names=[""])


def write_glb_people(path, body: BodyModel, people: list[tuple], fps: float, names: list[str] | None = None) -> None:
    """One glTF binary with every person of a video: per person a mesh, a skin and an armature (its bones named
    "<name>/<bone>", its root node "<name>"), all keyed in one animation "motion", so they play together in one
    scene. `people`: (rotmats, shape, translation, valid) per person, as `write_glb` takes them, all T frames long;
    `names`: one per person (default person0, person1, ...; "" leaves the names unprefixed, as `write_glb` does)."""
    clips = [_prepare(body, r, s, t, fps, v) for r, s, t, v in people]
    if not clips or len({len(c["local"]) for c in clips}) != 1:
        raise ValueError("people must be a non-empty list of motions with the same number of frames")
    names = names or [f"person{p}" for p in range(len(clips))]
    gltf = gl.GLTF2(asset=gl.Asset(generator="diffmesh"), scene=0)
    pack = _Packer(gltf)
    times = pack.add((np.arange(len(clips[0]["local"])) / fps).astype(np.float32), gl.SCALAR, gl.FLOAT, bounds=True)
    anim = gl.Animation(name="motion")
    roots = [_add_person(gltf, pack, anim, times, c, name) for c, name in zip(clips, names)]
    gltf.scenes.append(gl.Scene(name="diffmesh", nodes=[n for pair in roots for n in pair]))
    gltf.animations.append(anim)
    blob = pack.blob()
    gltf.buffers.append(gl.Buffer(byteLength=len(blob)))
    gltf.set_binary_blob(blob)
    _atomic_write(path, gltf.save_binary)


def _add_person(gltf: gl.GLTF2, pack: "_Packer", anim: gl.Animation, times: int, c: dict, name: str
                ) -> tuple[int, int]:
    """One person's mesh, skin, bone nodes and animation channels (`_prepare`'s dict `c`), their names prefixed
    with "<name>/" (none for ""); returns the scene's two nodes for it: the root bone and the skinned mesh."""
    K, f32 = c["local"].shape[1], np.float32
    first, mesh = len(gltf.nodes), len(gltf.meshes)
    prefix = f"{name}/" if name else ""
    attributes = gl.Attributes(
        POSITION=pack.add(c["vertices"].astype(f32), gl.VEC3, gl.FLOAT, gl.ARRAY_BUFFER, bounds=True),
        NORMAL=pack.add(_normals(c["vertices"], c["faces"]).astype(f32), gl.VEC3, gl.FLOAT, gl.ARRAY_BUFFER),
        # glTF wants joint 0 in the slots of zero weight (vertices with fewer than four influences).
        JOINTS_0=pack.add(np.where(c["weights"] > 0, c["indices"], 0).astype(np.uint16), gl.VEC4, gl.UNSIGNED_SHORT,
                          gl.ARRAY_BUFFER),
        WEIGHTS_0=pack.add(c["weights"].astype(f32), gl.VEC4, gl.FLOAT, gl.ARRAY_BUFFER))
    faces = pack.add(c["faces"].reshape(-1).astype(np.uint32), gl.SCALAR, gl.UNSIGNED_INT, gl.ELEMENT_ARRAY_BUFFER)
    gltf.meshes.append(gl.Mesh(name=f"{prefix}body",
                               primitives=[gl.Primitive(attributes=attributes, indices=faces)]))
    ibm = np.tile(np.eye(4), (K, 1, 1))
    ibm[:, :3, 3] = -c["heads"]
    # glTF matrices are column-major.
    gltf.skins.append(gl.Skin(name=f"{prefix}skeleton", joints=list(range(first, first + K)),
                              skeleton=first, inverseBindMatrices=pack.add(
                                  ibm.transpose(0, 2, 1).reshape(K, 16).astype(f32), gl.MAT4, gl.FLOAT)))
    for k, (bone, parent) in enumerate(zip(c["names"], c["parents"])):
        offset = c["heads"][k] - (c["heads"][parent] if parent >= 0 else 0.0)
        gltf.nodes.append(gl.Node(name=f"{prefix}{bone}", translation=offset.tolist(),
                                  children=[first + j for j, q in enumerate(c["parents"]) if q == k]))
    gltf.nodes.append(gl.Node(name=f"{prefix}body", mesh=mesh, skin=len(gltf.skins) - 1))

    def channel(node: int, target: str, values: np.ndarray, kind: str, interpolation: str = gl.ANIM_LINEAR) -> None:
        anim.samplers.append(gl.AnimationSampler(input=times, output=pack.add(values.astype(f32), kind, gl.FLOAT),
                                                 interpolation=interpolation))
        anim.channels.append(gl.AnimationChannel(sampler=len(anim.samplers) - 1,
                                                 target=gl.AnimationChannelTarget(node=node, path=target)))

    quats = _quaternions(c["local"])
    for k in range(K):
        channel(first + k, "rotation", quats[:, k], gl.VEC4)
    channel(first, "translation", c["root"], gl.VEC3)
    channel(first, "scale", np.repeat(c["shown"].astype(float)[:, None], 3, 1), gl.VEC3, gl.ANIM_STEP)
    return first, first + K


def write_bvh(path, body: BodyModel, rotmats, shape, translation, fps: float, valid=None) -> None:
    """Write the clip's skeleton animation as BVH, centimetres, Y up (arguments as `write_glb`; see the module
    docstring for the channels). Raises ValueError on inconsistent shapes or non-finite values."""
    c = _prepare(body, rotmats, shape, translation, fps, valid)
    T, K = c["local"].shape[:2]
    heads, parents = c["heads"] * 100.0, c["parents"]
    quats = _quaternions(c["local"])
    # A leaf's End Site points at the centroid of the vertices it moves most, so feet, hands and head get bones
    # of a sensible length and direction in Blender.
    main = c["indices"][np.arange(len(c["indices"])), c["weights"].argmax(1)]
    joints = []
    for k in range(K):
        joint = bvhio.BvhJoint(c["names"][k], glm.vec3(*(heads[k] - (heads[parents[k]] if parents[k] >= 0 else 0))))
        joint.Channels = (["Xposition", "Yposition", "Zposition"] if k == 0 else []) + \
            ["Zrotation", "Xrotation", "Yrotation"]
        if k not in parents and (main == k).any():
            joint.EndSite = glm.vec3(*(100.0 * c["vertices"][main == k].mean(0) - heads[k]))
        position = c["root"] * 100.0 if k == 0 else np.zeros((T, 3))
        joint.Keyframes = [bvhio.Pose(glm.vec3(*position[i]), glm.quat(q[3], q[0], q[1], q[2]))
                           for i, q in enumerate(quats[:, k])]
        joints.append(joint)
        if parents[k] >= 0:
            joints[parents[k]].Children.append(joint)
    container = bvhio.BvhContainer(joints[0], T, 1.0 / fps)
    _atomic_write(path, lambda tmp: bvhio.writeBvh(tmp, container, percision=6))
