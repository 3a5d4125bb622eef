"""Every place on disk the package reads from or writes to by default, in one file.

- Bundled data (`diffmesh/assets/`, with their licences and provenance in the READMEs there): the two sample
  videos (and the BlazePose reference beside the squats clip) and the CMU mocap subset. A bare clone has all
  that `make demo`, `make test` and the default training need.
- `$DIFFMESH_SHARED`: a folder laid out like the project's `shared/` (`data/videos/`, `data/mocap/`); a file
  found there is used instead of the bundled copy. Without the variable, a `shared/` folder beside the repository
  plays that part.
- The shipped weights (`diffmesh/weights/`) and the data cache (`$DIFFMESH_CACHE`, default `~/.cache/diffmesh`).
"""

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
ASSETS_DIR = PACKAGE_DIR / "assets"
WEIGHTS_DIR = PACKAGE_DIR / "weights"
DEFAULT_CHECKPOINT = WEIGHTS_DIR / "diffmesh_tiny_anny.pt"

_SIBLING_SHARED = PACKAGE_DIR.parents[1] / "shared"
SHARED_DIR: Path | None = (Path(os.environ["DIFFMESH_SHARED"]) if os.environ.get("DIFFMESH_SHARED")
                           else _SIBLING_SHARED if _SIBLING_SHARED.is_dir() else None)


def data_file(relative: str) -> Path:
    """`relative` (e.g. 'videos/x.mp4') from the shared folder when it has it, else the bundled copy."""
    if SHARED_DIR is not None and (SHARED_DIR / "data" / relative).is_file():
        return SHARED_DIR / "data" / relative
    return ASSETS_DIR / relative


DEMO_VIDEO_NAME = "sports2d_demo_walk_jumpingjacks_flip.mp4"
DEMO_VIDEO = data_file(f"videos/{DEMO_VIDEO_NAME}")
SQUATS_VIDEO = data_file("videos/pexels_4838220_woman_squats_5fps.mp4")
VIDEOS_DIR = DEMO_VIDEO.parent
DEFAULT_MOCAP = data_file("mocap/cmu_30fps.npz")


def cache_root() -> Path:
    """The data cache: $DIFFMESH_CACHE, else ~/.cache/diffmesh (read at call time, so tests can point it away)."""
    root = os.environ.get("DIFFMESH_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "diffmesh"
