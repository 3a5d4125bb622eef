"""What `diffmesh run` is asked to do (`RunSettings`) and what it reports (`RunSummary`); `pipeline.run_video` takes
the one and returns the other."""

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .windows import DEFAULT_WINDOWS

EXPORTS = ("npz", "glb", "bvh", "topview")


@dataclass
class RunSettings:
    """What `diffmesh run` does. checkpoint None = the shipped default; focal None = the image diagonal (px)."""

    checkpoint: str | None = None
    device: str = "cpu"
    body: str = "anny"
    smpl_path: str | None = None
    focal: float | None = None
    render: bool = True
    side_view: bool = False
    top_view: bool = False          # a panel with the world from above beside the overlay (where there is a world)
    exports: tuple[str, ...] = EXPORTS
    save_vertices: bool = False
    batch_clips: int = 64
    seed: int = 0
    force: bool = False
    progress: bool = True
    resample: bool = True           # run the model at its training rate (windows.TRAINING_FPS), not the video's
    windows: str = DEFAULT_WINDOWS  # windows.WINDOW_MODES: independent | blended | chained
    keypoint_workers: int | None = None   # MediaPipe processes; None: 2 on 2+ cores for long videos (video/detect.py)
    max_people: int = 0             # 0: everyone found, N > 1: the N most prominent (video/people.py);
                                    # 1: MediaPipe's single-person tracker (the fast path, about 2x the fps)
    person: int | None = None       # only this person (its id from video/people.py's ranking)
    on_stage: Callable[[str], None] | None = None     # told each stage's name as it starts (`diffmesh app`'s progress)

    @property
    def several_people(self) -> bool:
        return self.max_people != 1 or self.person is not None


@dataclass
class RunSummary:
    video: str
    outdir: str
    frames: int
    valid_frames: int
    people: int
    fps_video: float
    seconds: dict[str, float] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)    # what the user should know about the outputs (stderr)

    def stage_fps(self) -> dict[str, float]:
        return {k: self.frames / max(v, 1e-9) for k, v in self.seconds.items()}

    def lines(self) -> list[str]:
        fps = self.stage_fps()
        total = sum(v for k, v in self.seconds.items() if k != "total")
        out = [f"{self.video}: {self.frames} frames at {self.fps_video:.2f} fps, a person in {self.valid_frames} "
               f"({self.people} track{'s' if self.people != 1 else ''})",
               "  " + ", ".join(f"{k} {fps[k]:.1f} fps" for k in self.seconds if k != "total")
               + f"; total {self.frames / max(total, 1e-9):.1f} fps ({total:.1f} s)"]
        out += [f"  wrote {Path(self.outdir) / f}" for f in self.files]
        return out
