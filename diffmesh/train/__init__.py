"""Training: `loop.py` is the one training loop (steps, seeds, TensorBoard, validation, checkpoints, resume, DDP);
`cmu.py` (`diffmesh train`, Anny on CMU clips) and `paper.py` (`diffmesh paper-train`, SMPL on the paper's
databases) are its two callers; `publish.py` copies finished runs into diffmesh/weights/."""

from .cmu import TrainSettings, run_training
from .loop import seed_everything, train_step
from .paper import PaperTrainSettings, run_paper_training

__all__ = ["TrainSettings", "run_training", "seed_everything", "train_step", "PaperTrainSettings",
           "run_paper_training"]
