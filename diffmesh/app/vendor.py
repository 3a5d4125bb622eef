"""The page's one third-party script, `<model-viewer>` (Google, Apache-2.0; three.js bundled inside), vendored into
`diffmesh/app/static/vendor/` at set-up: the npm package's tarball from the npm registry, checked against its
SHA-256, and its self-contained `dist/model-viewer.min.js` and licence taken out. The app serves it from there, so
the page needs no internet once set up (`make setup` / `diffmesh setup` call `ensure_vendored`)."""

import hashlib
import io
import tarfile
import urllib.request
from pathlib import Path

from ..errors import DiffMeshError

MODEL_VIEWER_VERSION = "4.4.0"
MODEL_VIEWER_URL = f"https://registry.npmjs.org/@google/model-viewer/-/model-viewer-{MODEL_VIEWER_VERSION}.tgz"
MODEL_VIEWER_SHA256 = "8b621bd58da86cfa9908aaedf5a263d49770d08fc9e04ca661e3019616565f02"
VENDOR_DIR = Path(__file__).parent / "static" / "vendor"
FILES = {"package/dist/model-viewer.min.js": "model-viewer.min.js", "package/LICENSE": "model-viewer-LICENSE.txt"}


def is_vendored(folder: Path = VENDOR_DIR) -> bool:
    return all((folder / name).is_file() for name in FILES.values())


def ensure_vendored(folder: Path = VENDOR_DIR, url: str = MODEL_VIEWER_URL) -> Path:
    """Download and unpack `<model-viewer>` into `folder` unless it is there; each file appears whole or not at all."""
    if is_vendored(folder):
        return folder
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            blob = response.read()
    except OSError as e:
        raise DiffMeshError(f"could not download <model-viewer> for `diffmesh app` from {url} ({e}); run "
                            "`diffmesh setup` again where the npm registry is reachable") from None
    digest = hashlib.sha256(blob).hexdigest()
    if digest != MODEL_VIEWER_SHA256:
        raise DiffMeshError(f"{url} has SHA-256 {digest}, expected {MODEL_VIEWER_SHA256}; not using it")
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
        for member, name in FILES.items():
            data = tar.extractfile(member).read()
            partial = folder / f".{name}.tmp"
            partial.write_bytes(data)
            partial.replace(folder / name)
    return folder
