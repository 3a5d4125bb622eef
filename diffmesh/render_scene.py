"""What a rendered training frame is made of, besides the body's pose: clothing colours on the Anny mesh, an empty
room drawn from the frame's camera, the light, and which body points the camera can see.

- **Clothing** (`clothing_colors`): every vertex gets the colour of the garment of the body part its bone weights
  put it in (skin for face, neck and hands; a shirt with short or long sleeves; trousers or shorts; shoes; hair on
  the top and back of the head; eyes, brows and lips, since MediaPipe's person detector keys on the face), each
  colour drawn per camera, with a little per-vertex variation.
- **Room** (`room_background`): the camera stands in a box-shaped room (rotated at random about the vertical) that
  holds the camera and the person's whole path with a margin. Every pixel's ray is intersected with the floor,
  the walls and the ceiling in numpy, once per camera (the camera does not move): tiles, planks or plain floors,
  painted walls with a skirting board, windows, doors and pictures, a ceiling, lit by one ceiling light with
  distance falloff, then vignetting, a colour cast, sensor grain and a slight blur. Nobody is in it.
- **Visibility** (`point_visibility`): a point is inside when it projects into the image in front of the camera,
  and unoccluded when the rendered depth at its pixel is not nearer than its own depth minus the body's thickness
  there (`point_tolerances`: the distance from the point to the body surface around it in the reference pose,
  from most directions around it).
"""

import numpy as np

from .camera import project

SKIN = ((0.96, 0.80, 0.69), (0.91, 0.72, 0.58), (0.80, 0.60, 0.45), (0.65, 0.45, 0.32), (0.47, 0.32, 0.22),
        (0.34, 0.23, 0.16))
HAIR = ((0.08, 0.06, 0.05), (0.22, 0.14, 0.08), (0.42, 0.28, 0.15), (0.72, 0.58, 0.36), (0.55, 0.55, 0.55))
TROUSERS = ((0.16, 0.22, 0.38), (0.08, 0.08, 0.09), (0.35, 0.35, 0.37), (0.62, 0.55, 0.40), (0.25, 0.30, 0.20))
SHOES = ((0.06, 0.06, 0.06), (0.90, 0.90, 0.88), (0.35, 0.22, 0.12), (0.20, 0.25, 0.45))

# Body parts by bone (prefixes of Anny's bone labels).
PARTS = {
    "head": ("neck02", "neck03", "head"), "eye": ("eye.",), "neck": ("neck01",),
    "torso": ("spine01", "spine02", "spine03", "spine04", "clavicle", "shoulder01"),
    "hips": ("root", "pelvis", "spine05"), "upperarm": ("upperarm",), "forearm": ("lowerarm",),
    "hand": ("wrist", "finger", "metacarpal"), "thigh": ("upperleg",), "shin": ("lowerleg",), "foot": ("foot", "toe"),
}


def body_parts(bone_labels, vertex_bone_indices: np.ndarray, vertex_bone_weights: np.ndarray) -> np.ndarray:
    """(V,) index into PARTS of the part that carries most of each vertex's skinning weight."""
    names = list(PARTS)
    bone_part = np.array([next(i for i, n in enumerate(names) if any(label.startswith(p) for p in PARTS[n]))
                          for label in bone_labels])
    weight = np.zeros((len(vertex_bone_indices), len(names)))
    np.add.at(weight, (np.arange(len(weight))[:, None].repeat(vertex_bone_indices.shape[1], 1),
                       bone_part[vertex_bone_indices]), vertex_bone_weights)
    return weight.argmax(1)


def _jitter(rng, color, amount=0.12) -> np.ndarray:
    return np.clip(np.asarray(color) * rng.uniform(1 - amount, 1 + amount, 3), 0, 1)


def _random_shirt(rng) -> np.ndarray:
    import colorsys

    return np.array(colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(0.05, 0.9), rng.uniform(0.15, 0.95)))


def clothing_colors(rng: np.random.Generator, parts: np.ndarray, rest_vertices: np.ndarray, waist_z: float,
                    face: dict) -> tuple[np.ndarray, dict]:
    """Per-vertex RGB (V, 3) in [0, 1] of a clothed person, and what was drawn. parts: `body_parts`;
    rest_vertices (V, 3) the reference pose (z up, facing -y); waist_z: where shirt meets trousers; face: the
    reference-pose points the face is laid out from, "eye" (3,) the left eye bone head and "nose" (3,) the nose
    tip (`_face`)."""
    names = list(PARTS)
    skin, shirt = _jitter(rng, SKIN[rng.integers(len(SKIN))], 0.06), _random_shirt(rng)
    trousers = _jitter(rng, TROUSERS[rng.integers(len(TROUSERS))]) if rng.random() < 0.7 else _random_shirt(rng)
    outfit = {"long_sleeves": bool(rng.random() < 0.5), "shorts": bool(rng.random() < 0.25),
              "hair": bool(rng.random() < 0.9)}
    hair = _jitter(rng, HAIR[rng.integers(len(HAIR))])
    color = np.zeros((len(parts), 3))
    by_part = {"head": skin, "eye": skin, "neck": skin, "hand": skin, "torso": shirt, "upperarm": shirt,
               "forearm": shirt if outfit["long_sleeves"] else skin, "hips": trousers, "thigh": trousers,
               "shin": skin if outfit["shorts"] else trousers, "foot": _jitter(rng, SHOES[rng.integers(len(SHOES))])}
    for i, n in enumerate(names):
        color[parts == i] = by_part[n]
    trunk = np.isin(parts, [names.index("torso"), names.index("hips")])
    color[trunk & (rest_vertices[:, 2] < waist_z)] = trousers
    color[trunk & (rest_vertices[:, 2] >= waist_z)] = shirt
    _face(rng, color, parts, rest_vertices, face, skin, hair if outfit["hair"] else None)
    color *= rng.normal(1.0, 0.025, (len(color), 1))
    drawn = dict(outfit, skin=skin.tolist(), shirt=shirt.tolist(), trousers=trousers.tolist(), hair_color=hair.tolist())
    return np.clip(color, 0, 1).astype(np.float32), drawn


def _face(rng, color: np.ndarray, parts: np.ndarray, v: np.ndarray, face: dict, skin: np.ndarray, hair) -> None:
    """Eyes (white with a dark iris), eyebrows, lips and hair, in place. Offsets in metres from the left eye bone
    head (the eyeball's centre) and the nose tip, measured on Anny's reference mesh (eyes 4 cm above the nose tip,
    lips 2-4 cm below it, brows 1.3-2.1 cm above the eyes)."""
    names = list(PARTS)
    head, eyes = parts == names.index("head"), parts == names.index("eye")
    eye, nose = face["eye"], face["nose"]
    centre = np.where(v[:, :1] > 0, eye, eye * [-1, 1, 1])                          # each eyeball's centre
    rel = v - centre
    iris = eyes & (-rel[:, 1] > 0.94 * np.linalg.norm(rel, axis=1))
    color[eyes] = _jitter(rng, (0.86, 0.84, 0.80), 0.05)
    color[iris] = _jitter(rng, [(0.25, 0.15, 0.08), (0.2, 0.3, 0.45), (0.25, 0.3, 0.2)][rng.integers(3)], 0.2)
    x, y, z = np.abs(v[:, 0]), v[:, 1], v[:, 2]
    brow_color = hair if hair is not None else skin * 0.45
    brows = head & (z > eye[2] + 0.013) & (z < eye[2] + 0.021) & (x > 0.01) & (x < 0.05) & (y < eye[1] - 0.005)
    color[brows] = brow_color * 0.8
    lips = head & (z > nose[2] - 0.040) & (z < nose[2] - 0.021) & (x < 0.021) & (y < eye[1] - 0.02)
    color[lips] = skin * np.array([0.9, 0.62, 0.62])
    if hair is not None:
        front = y < eye[1] + 0.04
        hairline = np.where(front, eye[2] + rng.uniform(0.045, 0.07), eye[2] + rng.uniform(0.0, 0.03))
        nape = (y > eye[1] + 0.09) & (z > eye[2] - rng.uniform(0.02, 0.09))
        color[head & ((z > hairline) | nape) & ((x < 0.066) | (z > eye[2] + 0.035))] = hair


# ---------------------------------------------------------------------------------------------------- the room

def _grid_noise(rng, a: np.ndarray, b: np.ndarray, cell: float) -> np.ndarray:
    """Smooth value noise in [-1, 1] over surface coordinates (a, b) metres, features of `cell` metres."""
    ia, ib = np.floor(a / cell), np.floor(b / cell)
    fa, fb = a / cell - ia, b / cell - ib
    n = 64
    grid = rng.uniform(-1, 1, (n, n))
    ia, ib = ia.astype(np.int64) % n, ib.astype(np.int64) % n
    fa, fb = fa * fa * (3 - 2 * fa), fb * fb * (3 - 2 * fb)
    top = grid[ia, ib] * (1 - fb) + grid[ia, (ib + 1) % n] * fb
    bottom = grid[(ia + 1) % n, ib] * (1 - fb) + grid[(ia + 1) % n, (ib + 1) % n] * fb
    return top * (1 - fa) + bottom * fa


def _cell_random(rng, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """A fixed random value in [0, 1) per integer cell (i, j)."""
    table = rng.random((97, 89))
    return table[i.astype(np.int64) % 97, j.astype(np.int64) % 89]


def _floor_texture(rng, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(N, 3) floor colours at room coordinates (x, y)."""
    kind = rng.choice(["tiles", "planks", "plain"], p=[0.35, 0.4, 0.25])
    base = _jitter(rng, [(0.75, 0.72, 0.66), (0.55, 0.38, 0.22), (0.45, 0.45, 0.47)][rng.integers(3)], 0.25)
    shade = 1 + 0.08 * _grid_noise(rng, x, y, rng.uniform(0.4, 2.0))
    if kind == "tiles":
        s = rng.uniform(0.3, 0.8)
        shade = shade * (1 + 0.08 * (_cell_random(rng, np.floor(x / s), np.floor(y / s)) - 0.5))
        grout = (np.minimum((x / s) % 1, (y / s) % 1) < 0.03)
        shade = np.where(grout, shade * rng.uniform(0.5, 0.8), shade)
    elif kind == "planks":
        w, length = rng.uniform(0.1, 0.25), rng.uniform(0.8, 2.0)
        row = np.floor(y / w)
        along = x + _cell_random(rng, row, row) * length
        plank = _cell_random(rng, np.floor(along / length), row)
        shade = shade * (1 + 0.22 * (plank - 0.5)) * (1 + 0.05 * np.sin(along * rng.uniform(15, 40) + 3 * plank))
        seam = ((y / w) % 1 < 0.04) | ((along / length) % 1 < 0.01)
        shade = np.where(seam, shade * 0.7, shade)
    return base[None] * shade[:, None]


def _wall_texture(rng, s: np.ndarray, h: np.ndarray, wall: np.ndarray, spans: list) -> np.ndarray:
    """(N, 3) wall colours at (s along the wall, h above the floor) on walls 0..3, whose ends are `spans`."""
    paint = _jitter(rng, rng.choice([(0.85, 0.84, 0.80), (0.80, 0.75, 0.65), (0.65, 0.72, 0.78), (0.7, 0.78, 0.68),
                                     (0.5, 0.5, 0.52)]), 0.12)
    accent = _random_shirt(rng) * 0.6 + 0.35
    col = np.where((wall == rng.integers(4))[:, None] & (rng.random() < 0.4), accent[None], paint[None])
    col = col * (1 + 0.05 * _grid_noise(rng, s, h, rng.uniform(0.5, 2.0)))[:, None]
    skirting = h < rng.uniform(0.06, 0.14)
    col[skirting] = _jitter(rng, (0.9, 0.9, 0.88) if rng.random() < 0.5 else (0.35, 0.25, 0.18), 0.1)
    for w in range(4):
        for _ in range(rng.integers(0, 4)):
            kind = rng.choice(["window", "door", "picture"])
            width = {"window": rng.uniform(0.8, 2.0), "door": rng.uniform(0.8, 1.0),
                     "picture": rng.uniform(0.3, 1.2)}[kind]
            bottom, top = {"window": (0.8, 2.2), "door": (0.0, 2.05),
                           "picture": (1.2, 1.2 + width * rng.uniform(0.5, 1.2))}[kind]
            s0 = rng.uniform(*spans[w])
            inside = (wall == w) & (np.abs(s - s0) < width / 2) & (h > bottom) & (h < top)
            frame = inside & ((np.abs(s - s0) > width / 2 - 0.05) | (h < bottom + 0.05) | (h > top - 0.05))
            fill = {"window": _jitter(rng, (0.85, 0.92, 1.0), 0.05) * 1.2, "door": _jitter(rng, (0.45, 0.3, 0.18), 0.3),
                    "picture": _random_shirt(rng)}[kind]
            col[inside] = fill
            col[frame] = _jitter(rng, (0.95, 0.95, 0.95) if kind == "window" else (0.2, 0.15, 0.1), 0.1)
    return col


def _room(rng, camera_xy: np.ndarray, path_xy: np.ndarray, floor_z: float) -> dict:
    """A room (rotation about z, box in room axes) holding the camera and the path with random margins."""
    theta = rng.uniform(0, 2 * np.pi)
    rot = np.array([[np.cos(theta), np.sin(theta)], [-np.sin(theta), np.cos(theta)]])     # world xy -> room xy
    pts = np.concatenate([camera_xy[None], path_xy]) @ rot.T
    lo = pts.min(0) - rng.uniform(0.6, 3.5, 2)
    hi = pts.max(0) + rng.uniform(0.6, 3.5, 2)
    return {"rot": rot, "lo": lo, "hi": hi, "floor": floor_z, "ceiling": floor_z + rng.uniform(2.7, 4.5)}


def room_background(rng: np.random.Generator, R: np.ndarray, position: np.ndarray, focal: float, width: int,
                    height: int, path_xy: np.ndarray, floor_z: float) -> tuple[np.ndarray, dict]:
    """The empty room seen by the camera (x_cam = R (x_world - position), pinhole `focal`, principal point at the
    image centre): (height, width, 3) uint8, and the room and its light (world axes) as a dict."""
    import cv2

    room = _room(rng, position[:2], path_xy, floor_z)
    u, v = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    d_cam = np.stack([(u - width / 2) / focal, (v - height / 2) / focal, np.ones_like(u)], -1).reshape(-1, 3)
    d = d_cam @ R.astype(np.float64)                                                # world directions (rows)
    rot = room["rot"]
    o2, d2 = rot @ position[:2], d[:, :2] @ rot.T                                    # room axes
    planes = [(0, room["lo"][0]), (0, room["hi"][0]), (1, room["lo"][1]), (1, room["hi"][1])]
    with np.errstate(divide="ignore", invalid="ignore"):
        ts = [(p - o2[a]) / d2[:, a] for a, p in planes]
        ts += [(room["floor"] - position[2]) / d[:, 2], (room["ceiling"] - position[2]) / d[:, 2]]
    t = np.stack(ts, 1)
    t[~(t > 1e-6)] = np.inf
    surface, dist = t.argmin(1), t.min(1)
    hit2 = o2 + dist[:, None] * d2
    z = position[2] + dist * d[:, 2]
    color = np.zeros((len(d), 3))
    floor = surface == 4
    color[floor] = _floor_texture(rng, hit2[floor, 0], hit2[floor, 1])
    wall = surface < 4
    along = np.where(surface < 2, hit2[:, 1], hit2[:, 0])
    spans = [(room["lo"][1], room["hi"][1])] * 2 + [(room["lo"][0], room["hi"][0])] * 2
    color[wall] = _wall_texture(rng, along[wall], z[wall] - room["floor"], surface[wall], spans)
    color[surface == 5] = _jitter(rng, (0.92, 0.92, 0.9), 0.05)
    # one ceiling light: Lambert with distance falloff, plus ambient
    light_room = np.array([rng.uniform(room["lo"][0], room["hi"][0]), rng.uniform(room["lo"][1], room["hi"][1])])
    light = np.array([*(rot.T @ light_room), room["ceiling"] - 0.05])
    normals = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], np.float64)
    normals[:4, :2] = normals[:4, :2] @ rot                                          # room -> world
    hit = position + dist[:, None] * d
    to_light = light - hit
    r = np.linalg.norm(to_light, axis=1)
    lambert = np.clip((normals[surface] * to_light).sum(1) / np.maximum(r, 1e-6), 0, 1)
    falloff = 1 / (1 + (r / rng.uniform(2.5, 5.0)) ** 2)
    ambient = rng.uniform(0.35, 0.6)
    img = color * (ambient + (1.3 - ambient) * lambert * falloff)[:, None] * _jitter(rng, (1, 1, 1), 0.08)[None]
    img = img.reshape(height, width, 3)
    rr = ((u - width / 2) ** 2 + (v - height / 2) ** 2) / ((width / 2) ** 2 + (height / 2) ** 2)
    img *= (1 - rng.uniform(0.1, 0.35) * rr)[..., None]
    img = img * 255 + rng.normal(0, rng.uniform(1.0, 5.0), img.shape)
    img = cv2.GaussianBlur(np.clip(img, 0, 255).astype(np.float32), (0, 0), rng.uniform(0.4, 0.9))
    room.update(light=light, ambient=ambient)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), room


# ---------------------------------------------------------------------------------------------------- visibility

def _ray_hits(origins: np.ndarray, dirs: np.ndarray, tri: np.ndarray) -> np.ndarray:
    """Distance along each ray (R,) to the first triangle it meets (Moller-Trumbore; inf when none)."""
    e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    out = np.full(len(origins), np.inf)
    for r in range(len(origins)):
        p = np.cross(dirs[r], e2)
        det = (e1 * p).sum(1)
        ok = np.abs(det) > 1e-12
        inv = np.where(ok, 1 / np.where(ok, det, 1), 0)
        s = origins[r] - tri[:, 0]
        a = (s * p).sum(1) * inv
        q = np.cross(s, e1)
        b = (dirs[r] * q).sum(1) * inv
        t = (e2 * q).sum(1) * inv
        hit = ok & (a >= 0) & (b >= 0) & (a + b <= 1) & (t > 0)
        if hit.any():
            out[r] = t[hit].min()
    return out


def point_tolerances(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray, surface: np.ndarray,
                     widest: np.ndarray | None = None, directions: int = 16, elevations=(-25.0, 0.0, 25.0),
                     percentile: float = 75.0, margin: float = 0.04, surface_tolerance: float = 0.04
                     ) -> np.ndarray:
    """How far in front of each point (P, 3) the body's own surface may be and the point still count as seen.

    For a point inside the body: the `percentile` of its distances to the surface along rays in `directions`
    azimuths at `elevations` degrees (as cameras above and below see it) in the reference pose (`vertices`, z up),
    plus `margin`: the body's thickness in front of the point from most directions. A percentile, not the largest:
    at the hips and shoulders the rays toward the midline cross the whole trunk, and a far hip seen from the side
    must count as hidden. Points marked `widest` (P,) bool (upper neck and head, where the chin and jaw overhang
    the joints) take the largest distance. Points on the surface (`surface` (P,) bool: nose, ears) get
    `surface_tolerance`."""
    ang = np.arange(directions) * 2 * np.pi / directions
    dirs = np.concatenate([np.stack([np.cos(ang) * np.cos(e), np.sin(ang) * np.cos(e), np.full_like(ang, np.sin(e))],
                                    1) for e in np.deg2rad(elevations)])
    tri = vertices[faces].astype(np.float64)
    centre = tri.mean(1)
    widest = np.zeros(len(points), bool) if widest is None else widest
    tol = np.full(len(points), surface_tolerance)
    for i in np.where(~surface)[0]:
        near = np.linalg.norm(centre - points[i], axis=1) < 0.5          # only triangles a ray can meet first
        hits = np.minimum(_ray_hits(np.repeat(points[i][None], len(dirs), 0).astype(np.float64), dirs, tri[near]),
                          0.5)
        tol[i] = float(hits.max() if widest[i] else np.percentile(hits, percentile)) + margin
    return tol.astype(np.float32)


def point_visibility(points_cam: np.ndarray, depth: np.ndarray, focal: float, tolerance: np.ndarray,
                     near: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Points (P, 3) in camera axes against the rendered depth (H, W) (metres, inf where no body): (inside (P,):
    projects into the image in front of the camera; unoccluded (P,): inside and no surface nearer than its depth
    minus `tolerance` (P,) at its pixel)."""
    h, w = depth.shape
    z = points_cam[:, 2]
    front = z > near
    uv = project(np.where(front[:, None], points_cam, [0.0, 0.0, 1.0]), focal, (w / 2, h / 2))
    inside = front & (uv[:, 0] >= 0) & (uv[:, 0] < w) & (uv[:, 1] >= 0) & (uv[:, 1] < h)
    col = np.clip(np.floor(uv[:, 0]).astype(int), 0, w - 1)
    row = np.clip(np.floor(uv[:, 1]).astype(int), 0, h - 1)
    surface = depth[row, col]
    return inside, inside & ~(surface < z - tolerance)
