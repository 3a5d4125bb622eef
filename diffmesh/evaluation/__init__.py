"""Evaluation: `cmu.py` (`diffmesh eval` on the CMU test split), `paper.py` (the TCMR and MotionBERT protocols,
`diffmesh paper-eval`), `video_checks.py` (a `diffmesh run` result on real video against MediaPipe and a 3D
reference) and `predict.py` (a model over many clips in batches). Nothing here imports the training code."""
