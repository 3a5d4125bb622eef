"""The shipped checkpoints (trained by this project on open data; how, and their scores: README.md here and
docs/results.md). `DEFAULT_CHECKPOINT` is what `diffmesh run` and `diffmesh eval` load when given none."""

from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parent
DEFAULT_CHECKPOINT = WEIGHTS_DIR / "diffmesh_tiny_anny.pt"
