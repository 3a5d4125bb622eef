"""A training run on chosen CMU test sequences, for the torchrun test: `torchrun --nproc_per_node 2
tests/entry/ddp_train.py OUT SEQ,SEQ`. The data selection is a Python-API argument of `run_training`, not a
command-line option, so this script stands in for `diffmesh train` and reports through the CLI's own reporter."""

import sys

import torch

from diffmesh.cli import report_training
from diffmesh.train import TrainSettings, run_training

if __name__ == "__main__":
    out, sequences = sys.argv[1], sys.argv[2].split(",")
    torch.set_num_threads(1)
    settings = TrainSettings(epochs=1, steps_per_epoch=2, batch_size=2, val_clips=4, warmup_steps=1)
    report_training(run_training(out, settings, quiet=True, splits=("test", "test"), sequences=sequences))
