"""Stage 5's overlay: the recovered bodies drawn over the video's frames (`overlay.mp4`), a second decoding pass
that `pipeline.run_video` calls last. One person keeps the one-colour headlit overlay mesh; several people are
one mesh of P bodies, each in its own colour, so that one draw orders them by depth."""

import numpy as np
from tqdm import tqdm

from .body.base import BodyModel
from .render import MeshRenderer
from .video.decode import VideoInfo, VideoWriter, iter_frames


PERSON_COLORS = np.array([[0.55, 0.75, 1.0], [1.0, 0.62, 0.45], [0.6, 0.9, 0.55], [0.95, 0.8, 0.4],
                          [0.8, 0.6, 1.0], [0.5, 0.9, 0.9]], np.float32)


def _frame_vertices(body: BodyModel, motions: list, first: int, chunk: int) -> np.ndarray:
    """Camera-frame vertices (n, P V, 3) of every person for frames first.., one mesh after the other; a person
    not in a frame is folded onto one vertex of someone who is (a zero-area mesh, drawn as nothing)."""
    sl = slice(first, first + chunk)
    from .pipeline import body_vertices

    parts = [body_vertices(body, m.rotmats[sl], m.shapes[sl], m.translation[sl], m.valid[sl]) for m in motions]
    out = np.stack(parts, 1)                                   # (n, P, V, 3), NaN where a person is not
    present = np.isfinite(out[..., 0, 0])
    anchor = np.where(present.any(1)[:, None], out[np.arange(len(out)), present.argmax(1), 0], 0.0)
    out = np.where(present[..., None, None], out, anchor[:, None, None])
    return out.reshape(len(out), -1, 3)


def render_overlay(video, path, info: VideoInfo, body: BodyModel, motions: list, camera,
                   side_view: bool, progress: bool, chunk: int = 32, top_view=None) -> None:
    """Second decoding pass: every person's mesh drawn over every frame (one colour each when there are several;
    frames without anybody pass through unchanged). Vertices are made `chunk` frames at a time, so memory does not
    grow with the video's length. `side_view` adds a side view of the meshes; `top_view` (a `top_view.TopView`)
    a panel with the world from above, each person's path growing."""
    faces = body.faces.cpu().numpy()
    P, V = len(motions), body.num_vertices
    colors = None if P == 1 else np.repeat(PERSON_COLORS[np.arange(P) % len(PERSON_COLORS)], V, 0)
    renderer = MeshRenderer(info.width, info.height, np.concatenate([faces + p * V for p in range(P)]), camera.focal,
                            camera.principal, vertex_colors=colors)
    valid = np.any([m.valid for m in motions], axis=0)
    vertices, first = None, -chunk
    side_size = (info.height * 3 // 4 // 2 * 2, info.height)
    top_panel = None if top_view is None else top_view.panels((info.height // 2 * 2, info.height))
    width = info.width + (side_size[0] if side_view else 0) + (info.height // 2 * 2 if top_panel is not None else 0)
    # superfast: 20 % less encoding time than veryfast at the same quality (CRF), for somewhat larger files.
    with VideoWriter(path, info.rate or info.fps, width, info.height, preset="superfast") as writer:
        for frame in tqdm(iter_frames(video), total=len(valid), desc="render", unit="frame", disable=not progress,
                          leave=False):
            i = frame.index
            ok = i < len(valid) and valid[i]
            if ok and i >= first + chunk:
                first = i
                vertices = _frame_vertices(body, motions, i, chunk)
            image = renderer.render(vertices[i - first] if ok else None, frame.rgb)
            if side_view:
                side = (renderer.render_side(vertices[i - first], side_size) if ok
                        else np.zeros((side_size[1], side_size[0], 3), np.uint8))
                image = np.concatenate([image, side], 1)
            if top_panel is not None:
                image = np.concatenate([image, top_panel(i)], 1)
            writer.write(image)
