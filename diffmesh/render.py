"""The overlay renderer: a body mesh drawn over video frames, headless (moderngl + EGL; Mesa's llvmpipe on CPU).

Cameras follow the pipeline's pinhole model: camera coordinates x right, y down, z forward (metres), and a
point X projects to the pixel (f X/Z + cx, f Y/Z + cy). Pixel coordinates are continuous: pixel (column i,
row j) covers [i, i+1) x [j, j+1), so its centre is (i + 0.5, j + 0.5) and the image centre is (W/2, H/2)
(MediaPipe's normalised landmarks times the image size). The GPU projection is built from the same
numbers, so the drawn mesh lines up with `project` to within rasterisation (a pixel is covered when its
centre is inside a triangle).

How a frame is drawn (`MeshRenderer.render`): the vertex positions and per-vertex normals (area-weighted face
normals, numpy + a sparse incidence matrix) are uploaded into buffers made once; the mesh is drawn with a depth
test, shaded in a light colour by a headlight (Lambert, two sided so the faces' winding does not matter, plus
ambient and a little specular), and alpha-blended by OpenGL over the frame's pixels, which were written into
the colour buffer first. A depth-only pass comes first so that each pixel blends only its nearest surface.
Everything happens inside the box the projected vertices span (scissor), and only that box is uploaded and
read back; pixels the mesh does not cover are never touched, so they keep the frame's bytes exactly.

For rendered training data (`render_set.py`) the renderer can also draw a coloured body (`vertex_colors`: one RGB
per vertex, lit by a key light from a chosen direction plus a weak headlight and ambient light, see
`set_light`), move to another camera between frames (`set_camera`) and give the depth of the last frame's
nearest surface in metres (`last_depth`). The overlay's default path (one colour, headlight) is unchanged.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse

from .camera import project
from .errors import DiffMeshError

MESH_COLOR = (0.70, 0.78, 0.92)      # light blue-grey
SIDE_BACKGROUND = (28, 28, 32)        # dark grey, RGB bytes
GROUND_COLOR = (110, 110, 116)       # RGB bytes

INSTALL_HINT = ("install the system packages with `apt-get install -y libegl1 libgl1-mesa-dri libegl-mesa0`, "
                "or pass --no-render to skip the overlay video")


class RenderError(DiffMeshError):
    """No OpenGL context could be made (headless EGL missing), or a render call got bad input."""


def projection_matrix(width: int, height: int, focal: float, principal: tuple[float, float],
                      near: float = 0.05, far: float = 100.0) -> np.ndarray:
    """The 4x4 OpenGL projection equal to `project`: clip = P @ (X, Y, Z, 1) gives window coordinates
    (f X/Z + cx, f Y/Z + cy) with window row 0 = image row 0 (the image is read back without a flip)."""
    cx, cy = principal
    return np.array([
        [2 * focal / width, 0, 2 * cx / width - 1, 0],
        [0, 2 * focal / height, 2 * cy / height - 1, 0],
        [0, 0, (far + near) / (far - near), -2 * far * near / (far - near)],
        [0, 0, 1, 0],
    ], np.float64)


# One vertex shader for both programs; the coloured body's adds a per-vertex colour (GLSL's preprocessor).
_VS = """
#version 330
{defines}
uniform mat4 proj;
uniform mat4 model;
in vec3 in_pos;
in vec3 in_normal;
out vec3 v_pos;
out vec3 v_normal;
#ifdef VERTEX_COLOR
in vec3 in_color;
out vec3 v_color;
#endif
void main() {{
    vec4 p = model * vec4(in_pos, 1.0);
    v_pos = p.xyz;
    v_normal = mat3(model) * in_normal;
#ifdef VERTEX_COLOR
    v_color = in_color;
#endif
    gl_Position = proj * p;
}}
"""
_MESH_VS = _VS.format(defines="")
_COLOR_VS = _VS.format(defines="#define VERTEX_COLOR")

_MESH_FS = """
#version 330
uniform vec3 color;
uniform float alpha;
in vec3 v_pos;
in vec3 v_normal;
out vec4 f_color;
void main() {
    vec3 n = normalize(v_normal);
    vec3 v = normalize(-v_pos);              // towards the camera, where the headlight is
    float d = abs(dot(n, v));                // two-sided
    float spec = pow(d, 40.0);
    vec3 c = color * (0.28 + 0.72 * d) + 0.12 * spec;
    f_color = vec4(min(c, vec3(1.0)), alpha);
}
"""

_COLOR_FS = """
#version 330
uniform vec3 light_dir;                      // towards the key light, camera axes
uniform vec3 light;                          // (ambient, key, headlight) strengths
uniform float alpha;
in vec3 v_pos;
in vec3 v_normal;
in vec3 v_color;
out vec4 f_color;
void main() {
    vec3 n = normalize(v_normal);
    vec3 v = normalize(-v_pos);
    if (dot(n, v) < 0.0) n = -n;             // two-sided: the side that faces the camera
    vec3 l = normalize(light_dir);
    float key = max(dot(n, l), 0.0);
    float spec = pow(max(dot(reflect(-l, n), v), 0.0), 24.0);
    vec3 c = v_color * (light.x + light.y * key + light.z * dot(n, v)) + 0.05 * spec;
    f_color = vec4(min(c, vec3(1.0)), alpha);
}
"""

# Default lighting of the coloured body: a key light from above and slightly to the right of the camera.
DEFAULT_LIGHT_DIR = (0.3, -0.8, -0.5)
DEFAULT_LIGHT = (0.30, 0.55, 0.25)


def _create_context(backend: str):
    try:
        import moderngl
    except ImportError as e:
        raise RenderError(f"cannot render the overlay: moderngl is not installed ({e}); "
                          f"pip install moderngl, or pass --no-render") from None
    try:
        kwargs = {"backend": backend} if backend else {}
        return moderngl.create_standalone_context(require=330, **kwargs)
    except Exception as e:  # noqa: BLE001 - moderngl/glcontext raise plain Exceptions with multi-line text
        msg = " ".join(str(e).split()) or type(e).__name__
        raise RenderError(f"cannot create a headless OpenGL context ({backend or 'default'}: {msg}); "
                          f"{INSTALL_HINT}") from None


class _Target:
    """Offscreen buffers for one output size: an RGB colour texture (the frame's pixels are written into it
    and the mesh is blended on top) and a depth buffer."""

    def __init__(self, ctx, width: int, height: int):
        self.size = (width, height)
        self.color = ctx.texture((width, height), 3, alignment=1)
        self.depth = ctx.depth_renderbuffer((width, height))
        self.fbo = ctx.framebuffer([self.color], self.depth)

    def release(self) -> None:
        for obj in (self.fbo, self.color, self.depth):
            obj.release()


class MeshRenderer:
    """Draws one mesh topology over frames of one size.

        renderer = MeshRenderer(width, height, body.faces.numpy(), focal)
        out = renderer.render(vertices, frame.rgb)     # (H, W, 3) uint8; vertices (V, 3) camera metres
        side = renderer.render_side(vertices, (w, h))  # the same mesh seen from the side

    Args:
        width, height: frame size in pixels. faces: (F, 3) vertex indices. focal: focal length in pixels.
        principal: (cx, cy) in pixels; default the image centre (W/2, H/2).
        color: the mesh's RGB in [0, 1]. near, far: clipping planes in metres.
        backend: moderngl's context backend ('egl': headless; None: the platform default).
        vertex_colors: (V, 3) RGB in [0, 1], one per vertex: draw a coloured body lit by `set_light` instead of
            the one-colour headlit overlay mesh (`set_vertex_colors` changes them later).
    Raises `RenderError` (one line, what to install) when no OpenGL context can be made.
    """

    def __init__(self, width: int, height: int, faces: np.ndarray, focal: float,
                 principal: tuple[float, float] | None = None, color: tuple[float, float, float] = MESH_COLOR,
                 near: float = 0.05, far: float = 100.0, backend: str | None = "egl",
                 vertex_colors: np.ndarray | None = None):
        faces = np.asarray(faces)
        if faces.ndim != 2 or faces.shape[1] != 3 or len(faces) == 0:
            raise RenderError(f"faces must be a non-empty (F, 3) index array, got shape {faces.shape}")
        self.width, self.height = int(width), int(height)
        self.focal = float(focal)
        self.principal = (self.width / 2, self.height / 2) if principal is None else tuple(map(float, principal))
        self.near, self.far = float(near), float(far)
        self.faces = faces.astype(np.int64)
        self.num_vertices = int(self.faces.max()) + 1
        f = len(self.faces)
        # vertex normal = sum of its faces' (area-weighted) normals: one sparse product per frame
        self._incidence = sparse.csr_matrix(
            (np.ones(3 * f, np.float32), (self.faces.T.reshape(-1), np.tile(np.arange(f), 3))),
            shape=(self.num_vertices, f))

        self.ctx = _create_context(backend)
        ctx = self.ctx
        self._pos = ctx.buffer(reserve=self.num_vertices * 12)
        self._nrm = ctx.buffer(reserve=self.num_vertices * 12)
        self._ibo = ctx.buffer(self.faces.astype(np.uint32).tobytes())
        self._col = None
        if vertex_colors is None:
            self._prog = ctx.program(vertex_shader=_MESH_VS, fragment_shader=_MESH_FS)
            self._prog["color"].value = tuple(float(c) for c in color)
            attributes = [(self._pos, "3f", "in_pos"), (self._nrm, "3f", "in_normal")]
        else:
            self._prog = ctx.program(vertex_shader=_COLOR_VS, fragment_shader=_COLOR_FS)
            self._col = ctx.buffer(reserve=self.num_vertices * 12)
            self.set_vertex_colors(vertex_colors)
            self.set_light()
            attributes = [(self._pos, "3f", "in_pos"), (self._nrm, "3f", "in_normal"), (self._col, "3f", "in_color")]
        self._vao = ctx.vertex_array(self._prog, attributes, index_buffer=self._ibo, index_element_size=4)
        self._targets: dict[tuple[int, int], _Target] = {}
        self._uploaded: np.ndarray | None = None
        self._last_view = None          # (size, viewport) of the last drawn frame, for last_depth()

    # ------------------------------------------------------------------ settings of the coloured body

    def set_vertex_colors(self, colors: np.ndarray) -> None:
        """New per-vertex colours (V, 3) in [0, 1] (only for a renderer made with `vertex_colors`)."""
        if self._col is None:
            raise RenderError("this renderer draws one colour; make it with vertex_colors=... for per-vertex colours")
        colors = np.ascontiguousarray(colors, dtype=np.float32)
        if colors.shape != (self.num_vertices, 3):
            raise RenderError(f"vertex_colors must be ({self.num_vertices}, 3), got {colors.shape}")
        self._col.write(np.clip(colors, 0.0, 1.0).tobytes())

    def set_light(self, direction=DEFAULT_LIGHT_DIR, ambient: float = DEFAULT_LIGHT[0], key: float = DEFAULT_LIGHT[1],
                  headlight: float = DEFAULT_LIGHT[2]) -> None:
        """Lighting of the coloured body: `direction` (3,) towards the key light in camera axes (x right, y down,
        z forward), and the strengths of ambient, key and headlight."""
        if self._col is None:
            raise RenderError("set_light is for a renderer made with vertex_colors=...")
        d = np.asarray(direction, np.float64)
        self._prog["light_dir"].value = tuple(float(x) for x in d / max(np.linalg.norm(d), 1e-9))
        self._prog["light"].value = (float(ambient), float(key), float(headlight))

    def set_camera(self, width: int, height: int, focal: float, principal: tuple[float, float] | None = None) -> None:
        """Draw the next frames with another camera: size in pixels, focal length, principal point (default the
        image centre). Buffers of each size are made once and kept."""
        self.width, self.height, self.focal = int(width), int(height), float(focal)
        self.principal = (self.width / 2, self.height / 2) if principal is None else tuple(map(float, principal))

    def last_depth(self) -> np.ndarray:
        """(H, W) float32: the camera depth z (metres) of the nearest surface of the last frame drawn, inf where
        the mesh did not cover the pixel."""
        if self._last_view is None:
            raise RenderError("last_depth() needs a frame drawn first")
        (w, h), viewport = self._last_view
        out = np.full((h, w), np.inf, np.float32)
        if viewport is None:
            return out
        x0, y0, vw, vh = viewport
        data = self._target((w, h)).fbo.read(viewport=viewport, components=1, attachment=-1, alignment=1, dtype="f4")
        d = np.frombuffer(data, np.float32).reshape(vh, vw).astype(np.float64)
        n, f = self.near, self.far
        z = 2 * f * n / ((f + n) - (2 * d - 1) * (f - n))        # window depth [0, 1] -> eye depth (w = Z)
        out[y0:y0 + vh, x0:x0 + vw] = np.where(d < 1.0, z, np.inf)
        return out

    # ------------------------------------------------------------------ helpers

    def _target(self, size: tuple[int, int]) -> _Target:
        if size not in self._targets:
            self._targets[size] = _Target(self.ctx, size[0], size[1])
        return self._targets[size]

    def vertex_normals(self, vertices: np.ndarray) -> np.ndarray:
        """(V, 3) unit normals: the sum of the adjacent faces' cross products (area-weighted), normalised."""
        v = vertices
        fn = np.cross(v[self.faces[:, 1]] - v[self.faces[:, 0]], v[self.faces[:, 2]] - v[self.faces[:, 0]])
        n = self._incidence @ fn
        n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
        return n.astype(np.float32, copy=False)

    def _upload(self, vertices: np.ndarray) -> None:
        if self._uploaded is not None and np.array_equal(vertices, self._uploaded):
            return  # e.g. render() then render_side() of the same frame
        self._pos.write(vertices.tobytes())
        self._nrm.write(self.vertex_normals(vertices).tobytes())
        self._uploaded = vertices.copy()

    def _check_vertices(self, vertices) -> np.ndarray:
        vertices = np.ascontiguousarray(vertices, dtype=np.float32)
        if vertices.shape != (self.num_vertices, 3):
            raise RenderError(f"vertices must be ({self.num_vertices}, 3) for these faces, got {vertices.shape}")
        return vertices

    def _draw(self, vertices: np.ndarray, out: np.ndarray, focal: float, principal: tuple[float, float],
              model: np.ndarray, alpha: float) -> np.ndarray:
        """Draw the mesh (moved by `model`, 4x4) and blend it into `out` (H, W, 3) uint8, in place."""
        h, w = out.shape[:2]
        ctx = self.ctx
        self._upload(vertices)
        target = self._target((w, h))
        # Only the mesh's bounding box is read back and blended (the mesh rarely covers much of the frame).
        cam = vertices @ model[:3, :3].T.astype(np.float32) + model[:3, 3].astype(np.float32)
        if cam[:, 2].min() > self.near:
            uv = project(cam, focal, principal)
            x0, y0 = np.floor(uv.min(0)).astype(int) - 1
            x1, y1 = np.ceil(uv.max(0)).astype(int) + 1
            x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        else:  # the mesh crosses the near plane: it may cover anything
            x0, y0, x1, y1 = 0, 0, w, h
        if x1 <= x0 or y1 <= y0:
            self._last_view = ((w, h), None)
            return out  # entirely outside the picture
        viewport = (int(x0), int(y0), int(x1 - x0), int(y1 - y0))
        self._last_view = ((w, h), viewport)
        prog = self._prog
        prog["proj"].write(projection_matrix(w, h, focal, principal, self.near, self.far).T
                           .astype(np.float32).tobytes())  # GLSL matrices are column-major
        prog["model"].write(model.T.astype(np.float32).tobytes())
        prog["alpha"].value = float(alpha)
        fbo = target.fbo
        # moderngl applies a framebuffer's scissor and masks when it is `use()`d, hence the use() calls
        fbo.scissor = viewport                 # work only inside the box
        fbo.color_mask, fbo.depth_mask = (True, True, True, True), True
        fbo.use()
        fbo.clear(depth=1.0)
        # the frame's pixels become the background (window row 0 = image row 0: no flips anywhere)
        target.color.write(np.ascontiguousarray(out[y0:y1, x0:x1]), viewport=viewport)
        ctx.enable_only(ctx.DEPTH_TEST)
        # 1. depth only, so that 2. blends each pixel's nearest surface once (not every layer behind it)
        fbo.color_mask = (False, False, False, False)
        fbo.use()
        ctx.depth_func = "<"
        self._vao.render()
        fbo.color_mask, fbo.depth_mask = (True, True, True, True), False
        fbo.use()
        ctx.depth_func = "<="
        ctx.enable(ctx.BLEND)
        ctx.blend_func = ctx.SRC_ALPHA, ctx.ONE_MINUS_SRC_ALPHA
        self._vao.render()
        ctx.disable(ctx.BLEND)
        fbo.depth_mask, fbo.scissor = True, None
        fbo.use()
        data = fbo.read(viewport=viewport, components=3, alignment=1)
        out[y0:y1, x0:x1] = np.frombuffer(data, np.uint8).reshape(viewport[3], viewport[2], 3)
        return out

    # ------------------------------------------------------------------ public

    def render(self, vertices: np.ndarray | None, image: np.ndarray | None = None, alpha: float = 0.8
               ) -> np.ndarray:
        """The mesh (V, 3), camera coordinates in metres, blended over a copy of `image` (H, W, 3) uint8
        (None: black) with opacity `alpha` in [0, 1]; pixels the mesh does not cover keep the image's exact
        bytes. `vertices=None` (a frame without a body) returns `image` itself, untouched."""
        if vertices is None:
            self._last_view = ((self.width, self.height), None)       # last_depth(): nothing drawn
            return np.zeros((self.height, self.width, 3), np.uint8) if image is None else image
        if image is None:
            out = np.zeros((self.height, self.width, 3), np.uint8)
        else:
            image = np.asarray(image)
            if image.shape != (self.height, self.width, 3) or image.dtype != np.uint8:
                raise RenderError(f"image must be ({self.height}, {self.width}, 3) uint8, got "
                                  f"{image.shape} {image.dtype}")
            out = image.copy()
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        return self._draw(self._check_vertices(vertices), out, self.focal, self.principal, np.eye(4), alpha)

    def side_view_model(self, vertices: np.ndarray, size: tuple[int, int], center=None, distance=None,
                        fill: float = 0.9) -> tuple[np.ndarray, float]:
        """The side camera: (4x4 model matrix taking camera points to side-camera points, its focal length).

        The side camera is the frame's camera turned 90 degrees about the vertical (y) axis through `center`
        (default: the centre of the mesh's bounding box), looking at it from the image's right (+x) side, so
        depth in the frame becomes the side view's horizontal axis (further from the camera = further right).
        `distance` (metres from `center`) defaults to what fits the mesh, and at least a 2 m x 1.2 m box (so
        the scale changes only when the body is larger), within `fill` of the picture.
        """
        w, h = size
        v = np.asarray(vertices, np.float64)
        lo, hi = v.min(0), v.max(0)
        c = (lo + hi) / 2 if center is None else np.asarray(center, np.float64)
        # rotation about y by +90 degrees: x' = z - cz, y' = y - cy, z' = -(x - cx)
        R = np.array([[0, 0, 1], [0, 1, 0], [-1, 0, 0]], np.float64)
        focal = float(h)
        if distance is None:
            rel = (v - c) @ R.T
            half_w = max(np.abs(rel[:, 0]).max(), 0.6)
            half_h = max(np.abs(rel[:, 1]).max(), 1.0)
            front = rel[:, 2].min()                  # the point nearest the side camera
            distance = max(focal * half_w / (fill * w / 2), focal * half_h / (fill * h / 2)) - front
        model = np.eye(4)
        model[:3, :3] = R
        model[:3, 3] = -R @ c + np.array([0.0, 0.0, distance])
        return model, focal

    def render_side(self, vertices: np.ndarray, size: tuple[int, int] = (540, 720), center=None,
                    distance=None, ground: bool = True) -> np.ndarray:
        """The mesh seen from the side (see `side_view_model`), opaque on a dark background: (h, w, 3) uint8
        for `size` = (w, h), with a grey ground line through the lowest point of the drawn mesh when
        `ground`."""
        w, h = int(size[0]), int(size[1])
        vertices = self._check_vertices(vertices)
        model, focal = self.side_view_model(vertices, (w, h), center, distance)
        out = np.empty((h, w, 3), np.uint8)
        out[...] = SIDE_BACKGROUND
        if ground:
            side = vertices.astype(np.float64) @ model[:3, :3].T + model[:3, 3]
            if side[:, 2].min() > self.near:
                row = int(np.ceil(project(side, focal, (w / 2, h / 2))[:, 1].max()))
                if 0 <= row < h:
                    out[row:row + 2] = GROUND_COLOR
        return self._draw(vertices, out, focal, (w / 2, h / 2), model, 1.0)

    def release(self) -> None:
        """Free the OpenGL objects and the context."""
        if getattr(self, "ctx", None) is None:
            return
        for target in self._targets.values():
            target.release()
        self._targets.clear()
        for obj in (self._vao, self._pos, self._nrm, self._ibo, self._prog, self._col):
            if obj is not None:
                obj.release()
        self.ctx.release()
        self.ctx = None

    def __enter__(self) -> MeshRenderer:
        return self

    def __exit__(self, *exc) -> None:
        self.release()
