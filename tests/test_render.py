"""The overlay renderer (diffmesh.render): real Anny meshes and small known scenes, drawn with EGL/llvmpipe."""

import os
import subprocess
import sys

import numpy as np
import pytest

from diffmesh.render import SIDE_BACKGROUND, MeshRenderer, RenderError, project

W, H = 640, 480


def make_renderer(*args, **kwargs) -> MeshRenderer:
    try:
        return MeshRenderer(*args, **kwargs)
    except RenderError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def anny_mesh(anny_body):
    """The mean Anny body (13,718 vertices) in camera axes, root at the origin (conftest's `anny_body`)."""
    import torch

    body = anny_body
    with torch.no_grad():
        out = body(body.mean_pose[None], body.mean_shape[None])
    vertices = out.vertices[0].numpy().astype(np.float32)
    return vertices, body.faces.numpy()


def bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of a boolean mask, x1/y1 exclusive (pixel edges, as continuous coordinates)."""
    rows, cols = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
    return cols[0], rows[0], cols[-1] + 1, rows[-1] + 1


def noise(h=H, w=W, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def quad(x0, y0, x1, y1, z) -> np.ndarray:
    """Camera-space corners of a quad at depth z (metres) covering [x0, x1] x [y0, y1] metres."""
    return np.array([[x0, y0, z], [x1, y0, z], [x1, y1, z], [x0, y1, z]], np.float32)


QUAD_FACES = np.array([[0, 1, 2], [0, 2, 3]])


def test_anny_silhouette_matches_projection(anny_mesh):
    vertices, faces = anny_mesh
    assert vertices.shape == (13718, 3)
    focal, principal = 500.0, (300.0, 250.0)  # off-centre principal point: the intrinsics must be exact
    v = vertices + np.array([0.1, 0.0, 3.0], np.float32)
    r = make_renderer(W, H, faces, focal, principal)
    black = np.zeros((H, W, 3), np.uint8)
    out = r.render(v, black)
    assert out.shape == (H, W, 3) and out.dtype == np.uint8
    mask = out.any(-1)
    uv = project(v, focal, principal)
    assert 0 < uv[:, 0].min() and uv[:, 0].max() < W and 0 < uv[:, 1].min() and uv[:, 1].max() < H
    x0, y0, x1, y1 = bbox(mask)
    np.testing.assert_allclose([x0, y0, x1, y1], [*uv.min(0), *uv.max(0)], atol=2.0)
    assert 0.02 < mask.mean() < 0.5

    # shading: a lit, varied surface, not one flat colour
    lum = out[mask].astype(float).mean(-1)
    assert lum.std() > 8 and len(np.unique(out[mask], axis=0)) > 50
    assert lum.max() > 150  # a light colour (alpha 0.8 over black)

    # over a real background: untouched pixels keep their exact bytes, covered ones are 0.8 mesh + 0.2 image
    image = noise()
    over = r.render(v, image)
    np.testing.assert_array_equal(over[~mask], image[~mask])
    expected = out[mask].astype(int) + 0.2 * image[mask]
    assert np.abs(over[mask] - expected).max() <= 2
    # the caller's image is not modified
    assert np.array_equal(image, noise())


def test_projection_is_exact_to_the_pixel():
    """A quad whose corners project to (100.3, 50.3) and (200.7, 120.7): exactly the pixels whose centres
    (i + 0.5, j + 0.5) lie inside are covered, i.e. columns 100..200 and rows 50..120 (a half-pixel error in
    the projection would move an edge by one)."""
    focal, principal, z = 400.0, (330.0, 230.0), 2.0
    corners_px = np.array([[100.3, 50.3], [200.7, 120.7]])
    xy = (corners_px - principal) * z / focal
    v = quad(xy[0, 0], xy[0, 1], xy[1, 0], xy[1, 1], z)
    np.testing.assert_allclose(project(v, focal, principal)[[0, 2]], corners_px, atol=1e-4)
    r = make_renderer(W, H, QUAD_FACES, focal, principal)
    out = r.render(v, None, alpha=1.0)
    assert bbox(out.any(-1)) == (100, 50, 201, 121)
    assert out.any(-1).sum() == 101 * 71  # filled, no holes


def test_depth_test_keeps_the_nearest_surface():
    """A camera-facing quad (near, bright) and a tilted one (far, darker) overlapping; in either draw order the
    overlap shows only the near quad, blended once (alpha 0.8) over the background."""
    near = quad(-0.3, -0.3, 0.3, 0.3, 2.0)
    # far quad tilted ~70 degrees about the vertical axis (so its headlight shading is darker)
    far = np.array([[-1.2, -0.8, 3.0], [1.2, -0.8, 3.0 + 1.6], [1.2, 0.8, 3.0 + 1.6], [-1.2, 0.8, 3.0]],
                   np.float32)
    image = noise(seed=1)
    focal = 450.0
    rn = make_renderer(W, H, QUAD_FACES, focal)
    only_near = rn.render(near, image)
    only_far = rn.render(far, image)
    both_faces = np.concatenate([QUAD_FACES, QUAD_FACES + 4])
    near_mask = (only_near != image).any(-1)
    far_mask = (only_far != image).any(-1)
    overlap = near_mask & far_mask
    assert overlap.sum() > 5000 and (far_mask & ~near_mask).sum() > 5000
    # near and far really look different (else this test could not tell them apart)
    assert np.abs(only_near[overlap].astype(int) - only_far[overlap].astype(int)).mean() > 20

    for vertices in (np.concatenate([near, far]), np.concatenate([far, near])):
        r = make_renderer(W, H, both_faces, focal)
        out = r.render(vertices, image)
        np.testing.assert_array_equal(out[overlap], only_near[overlap])
        np.testing.assert_array_equal(out[far_mask & ~near_mask], only_far[far_mask & ~near_mask])
        np.testing.assert_array_equal(out[~(near_mask | far_mask)], image[~(near_mask | far_mask)])
        r.release()


def test_frames_without_a_body_and_meshes_out_of_view():
    r = make_renderer(W, H, QUAD_FACES, 400.0)
    image = noise(seed=2)
    assert r.render(None, image) is image
    assert r.render(None, None).shape == (H, W, 3)
    off_screen = quad(5.0, 5.0, 6.0, 6.0, 2.0)  # projects far outside the picture
    np.testing.assert_array_equal(r.render(off_screen, image), image)
    with pytest.raises(RenderError, match="vertices must be"):
        r.render(np.zeros((3, 3), np.float32), image)
    with pytest.raises(RenderError, match="image must be"):
        r.render(quad(0, 0, 1, 1, 2.0), image[:100])


def test_buffers_are_reused_across_frames(anny_mesh):
    vertices, faces = anny_mesh
    r = make_renderer(W, H, faces, 500.0)
    image = noise(seed=3)
    a = r.render(vertices + np.float32([0, 0, 3]), image)
    b = r.render(vertices + np.float32([0.3, 0, 3]), image)      # moved: re-uploaded, drawn elsewhere
    c = r.render(vertices + np.float32([0, 0, 3]), image)
    assert len(r._targets) == 1
    np.testing.assert_array_equal(a, c)
    assert bbox((b != image).any(-1))[0] > bbox((a != image).any(-1))[0] + 40


def test_side_view(anny_mesh):
    vertices, faces = anny_mesh
    v = vertices + np.float32([0.2, 0.0, 3.0])
    r = make_renderer(W, H, faces, 500.0)
    front = r.render(v, None)
    size = (300, 400)
    side = r.render_side(v, size)
    assert side.shape == (400, 300, 3) and side.dtype == np.uint8
    bg = np.all(side == SIDE_BACKGROUND, -1)
    body = ~bg & (side.astype(int).sum(-1) > 3 * 120)  # the light mesh, not the ground line
    assert 0.03 < body.mean() < 0.6
    # the silhouette is where the side camera projects the vertices
    model, focal = r.side_view_model(v, size)
    uv = project(v @ model[:3, :3].T + model[:3, 3], focal, (size[0] / 2, size[1] / 2))
    np.testing.assert_allclose(bbox(body), [*uv.min(0), *uv.max(0)], atol=2.0)
    # seen from the side the A-posed body is narrow: its width/height ratio is well below the front view's
    fx0, fy0, fx1, fy1 = bbox(front.any(-1))
    sx0, sy0, sx1, sy1 = bbox(body)
    assert (sx1 - sx0) / (sy1 - sy0) < 0.45 < (fx1 - fx0) / (fy1 - fy0)
    # it fits the picture and can go beside the overlay
    assert sx0 > 0 and sy0 > 0 and sx1 < size[0] and sy1 < size[1]
    assert np.concatenate([front, r.render_side(v, (300, H))], axis=1).shape == (H, W + 300, 3)


def test_missing_egl_gives_a_one_line_error():
    """With Mesa's drivers hidden, creating the renderer fails with a RenderError that says what to install."""
    code = ("import numpy as np\n"
            "from diffmesh.render import MeshRenderer, RenderError\n"
            "try:\n"
            "    MeshRenderer(64, 48, np.array([[0, 1, 2]]), 50.0)\n"
            "    print('CREATED')\n"
            "except RenderError as e:\n"
            "    print('ERROR:' + str(e))\n")
    env = dict(os.environ, LIBGL_DRIVERS_PATH="/nonexistent", EGL_PLATFORM="surfaceless",
               __EGL_VENDOR_LIBRARY_FILENAMES="/nonexistent.json")
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    lines = [line for line in res.stdout.splitlines() if line.startswith(("ERROR:", "CREATED"))]
    assert len(lines) == 1, res.stdout + res.stderr
    if lines[0] == "CREATED":
        pytest.skip("this machine's EGL still found a driver with the paths hidden")
    assert "apt-get install -y libegl1 libgl1-mesa-dri libegl-mesa0" in lines[0] and "--no-render" in lines[0]
