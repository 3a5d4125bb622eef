import os
import warnings
from pathlib import Path

import pytest
import torch

warnings.filterwarnings("ignore", message=".*CUDA driver.*")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def anny_body():
    from diffmesh.body import load_body

    return load_body("anny")


@pytest.fixture(scope="session")
def mocap():
    from diffmesh.data.mocap import DEFAULT_MOCAP, CMUMocap

    if not Path(DEFAULT_MOCAP).is_file():
        pytest.skip(f"CMU mocap not found at {DEFAULT_MOCAP} (set DIFFMESH_SHARED to the shared/ folder)")
    return CMUMocap()
