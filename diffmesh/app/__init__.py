"""`diffmesh app`: the whole job in a local web page (server.py), its jobs (jobs.py), its vendored viewer (vendor.py)."""
