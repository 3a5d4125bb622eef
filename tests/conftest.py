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


@pytest.fixture(scope="session")
def test_split_fits(mocap):
    """Fits of the test subjects (13, 35, 55) in the fit cache, made with the default settings if missing
    (about 3 minutes on 2 cores; instant when `diffmesh prepare` has run on this machine)."""
    from diffmesh.data.prepare import default_cache_dir, run_prepare

    run_prepare(subjects=["13", "35", "55"], quiet=True)
    return default_cache_dir()
