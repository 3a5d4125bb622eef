"""`python -m diffmesh.bench child SPEC`: one growth measurement in this process (internal; `diffmesh bench` starts
these itself)."""

import sys

from .growth import child_main

if len(sys.argv) >= 3 and sys.argv[1] == "child":
    child_main(sys.argv[2:])
else:
    print("usage: diffmesh bench [...] (python -m diffmesh.bench child SPEC is internal)", file=sys.stderr)
    sys.exit(2)
