"""Video input/output (`decode`), 2D pose (`pose`) and person presence (`presence`); import the submodules."""
