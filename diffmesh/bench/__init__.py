"""`diffmesh bench`: the paper's speed claims measured side by side on this machine, and the pipeline's cost as
videos grow. One JSON object per line on stdout (and in `--out`); docs/performance.md has a full run.

Settings (`--settings`, default all four):
- table4 (`table4`): one clip (f=16, batch 1) of 2D keypoints through DiffMesh, Baseline 1 and Baseline 2 (the
  paper's Table 4): the whole forward, and the forward without the input adapter (conditional-feature generation,
  the reverse chain and the mesh head on precomputed adapter tokens). Baseline 1 twice: as this package runs it
  (its f chains batched as one chain of batch f) and as the paper counts it (the f chains one after another).
- table9 (`table9`): a 64-frame video of 2048-d features (the paper's Table 9): DiffMesh (paper size, feature
  input) on [4, 16, 2048] and the SMPL-layout body on its 64 frames, against the temporal heads of TCMR, MPS-Net
  and GLoT (`peers`) on 64 edge-padded sliding windows [64, 16, 2048] and the same body model; every method
  outputs vertices [64, 6890, 3]. Besides (not --quick): the peers with the bodies their released code poses per
  window (MPS-Net 17, GLoT 2) and with the 64 windows run one at a time (batch 1).
- video (`video`): `run_video` on the demo video without and with the overlay, stage by stage, and decoding alone.
- growth (`growth`): the model (DiffMesh + body joints, synthetic keypoints) and the whole pipeline (a video made by
  looping the demo's frames) on 64, 256, 1024 and 4096 frames, each length in a fresh subprocess (peak resident
  memory is per process), with a least-squares line through time and memory.

Timing (`measure`): warm-up calls first; then rounds in which every compared item runs once (round-robin, the
starting item rotating from round to round), so ratios come from one run under the same load; medians over rounds.
Ratios (`ratio_to`) are the median over rounds of this item's time divided by the other's in the same round.
Options, round counts and targets: `options`; the whole run: `run`.
"""

from .measure import Recorder, linear_fit, paired_ratio, round_robin, stats, timing_line
from .options import DEFAULT_SETTINGS, SCHEMA, SETTINGS, TARGETS, BenchOptions, check_options, parse_list
from .run import run_bench
from .table4 import adapter_replaced, baseline1_sequential

__all__ = ["DEFAULT_SETTINGS", "SCHEMA", "SETTINGS", "TARGETS", "BenchOptions", "Recorder", "adapter_replaced", "baseline1_sequential",
           "check_options", "linear_fit", "paired_ratio", "parse_list", "round_robin", "run_bench", "stats",
           "timing_line"]
