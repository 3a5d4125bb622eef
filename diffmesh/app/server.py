"""`diffmesh app`: a local web page that does all of `diffmesh run` (FastAPI; docs/app.md).

The API the page uses:
- `POST /api/jobs?<options>`: the request body is the video's bytes (streamed to the job's folder, stopped at the
  size limit), or `sample=1` and no body for the bundled demo. The file is checked by decoding its first frame,
  never by its name. Answers the job's id and place in the queue, or `{"error": one line}` with status 400/413.
- `GET /api/jobs/{id}`: its state, the stages done, the error, the files and, when done, the per-frame jitter.
- `POST /api/jobs/{id}/cancel`; `GET /api/jobs/{id}/files/{name}`: only the files that job's run wrote.
- `/` the page, `/static/...` its script, style and the vendored `<model-viewer>`.
"""

import tempfile
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from ..errors import DiffMeshError
from .jobs import Job, JobQueue
from .vendor import is_vendored

STATIC = Path(__file__).parent / "static"
DEFAULT_MAX_UPLOAD_MB = 500            # a few minutes of phone video at 1080p
EXPORT_NAMES = ("npz", "glb", "bvh", "topview")
DRAIN_FACTOR = 4
MEDIA_TYPES = {".npz": "application/octet-stream", ".glb": "model/gltf-binary", ".bvh": "text/plain",
               ".mp4": "video/mp4", ".png": "image/png"}


class UploadRefused(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def run_options(query) -> dict:
    """The page's options as RunSettings keywords, or UploadRefused(400) with what to change."""
    def flag(name: str) -> bool:
        return query.get(name, "0") in ("1", "true", "on")

    try:
        people = int(query.get("max_people", "0"))
        focal = float(query["focal"]) if query.get("focal") else None
    except ValueError:
        raise UploadRefused(400, "people and focal length must be numbers") from None
    exports = tuple(e for e in query.get("exports", ",".join(EXPORT_NAMES)).split(",") if e)
    if people < 0 or (focal is not None and not 10 < focal < 100000) or set(exports) - set(EXPORT_NAMES):
        raise UploadRefused(400, "choose people >= 0 (0: everyone), a focal length in pixels (10-100000) or none, "
                                 f"and exports among {', '.join(EXPORT_NAMES)}")
    if query.get("body", "anny") != "anny":
        raise UploadRefused(400, "this app runs the open Anny body; SMPL needs `diffmesh run --body smpl`")
    return {"max_people": people, "focal": focal, "side_view": flag("side_view"), "top_view": flag("top_view"),
            "exports": exports}


async def receive_upload(request: Request, path: Path, limit: int) -> int:
    """Stream the request body into `path`, stopping at `limit` bytes (UploadRefused 413). The rest of a refused
    body is read and dropped (up to DRAIN_FACTOR times the limit) so that the client gets the answer rather than
    a reset connection; nothing of it is kept."""
    declared = request.headers.get("content-length")
    too_big = bool(declared and declared.isdigit() and int(declared) > limit)
    size = 0
    with open(path, "wb") as out:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                too_big = True
            if too_big:
                if size > DRAIN_FACTOR * limit:
                    break
                continue
            out.write(chunk)
    if too_big:
        path.unlink(missing_ok=True)
        raise UploadRefused(413, f"the video is larger than this app's limit of {limit // 2**20} MB; cut it or "
                                 "start `diffmesh app --max-upload-mb N`")
    if size == 0:
        raise UploadRefused(400, "no video was sent; choose a file or the sample")
    return size


def check_video(path: Path) -> None:
    """UploadRefused(400) unless FFmpeg decodes a frame of it (the check is the decoder, not the name)."""
    from ..video.decode import iter_frames, probe_video

    try:
        info = probe_video(path)
        next(iter(iter_frames(path, max_frames=1)))
    except (DiffMeshError, StopIteration, RuntimeError):    # their text names the server's folder: not shown
        raise UploadRefused(400, "this file is not a video this app can read (FFmpeg decodes no frame of it); "
                                 "choose an mp4, mov, mkv or webm video") from None
    if info.width < 64 or info.height < 64:
        raise UploadRefused(400, f"the video is {info.width}x{info.height}: too small to find a person in")


def job_status(jobs: JobQueue, job: Job) -> dict:
    return {"id": job.id, "name": job.name, "state": job.state, "place": jobs.place(job), "stages": job.stages,
            "error": job.error, "report": job.report,
            "files": [{"name": f, "url": f"/api/jobs/{job.id}/files/{f}", "size": (job.outdir / f).stat().st_size}
                      for f in job.files if (job.outdir / f).is_file()]}


def create_app(max_upload_mb: int = DEFAULT_MAX_UPLOAD_MB, sample: Path | None = None,
               root: Path | None = None, device: str = "cpu") -> FastAPI:
    """The app; its jobs live in `root` (a new temporary folder by default), removed when the server stops, and
    run their model on `device`."""
    from ..paths import DEMO_VIDEO

    sample = Path(sample or DEMO_VIDEO)
    limit = max_upload_mb * 2**20
    state: dict = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state["jobs"] = JobQueue(Path(root or tempfile.mkdtemp(prefix="diffmesh-app-")), device)
        yield
        state["jobs"].close()

    app = FastAPI(title="diffmesh", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    def find(job_id: str) -> Job:
        job = state["jobs"].get(job_id)
        if job is None:
            raise HTTPException(404, "no such job")
        return job

    @app.get("/")
    def page():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/api/info")
    def info():
        return {"sample": sample.name, "max_upload_mb": max_upload_mb, "viewer": is_vendored(),
                "ready": state["jobs"].ready.is_set()}

    @app.post("/api/jobs")
    async def submit(request: Request):
        jobs: JobQueue = state["jobs"]
        query = request.query_params
        use_sample = query.get("sample") == "1"
        job = None
        try:
            settings = {**run_options(query), "device": device}
            name = sample.name if use_sample else (query.get("name") or "upload")[:120]
            job = jobs.new_job(settings, name, sample if use_sample else None)
            if not use_sample:
                await receive_upload(request, job.video, limit)
                check_video(job.video)
        except UploadRefused as e:
            if job is not None:
                jobs.discard(job)
            return JSONResponse({"error": e.message}, status_code=e.status)
        place = jobs.submit(job)
        return {"id": job.id, "place": place}

    @app.get("/api/jobs")
    def list_jobs():
        jobs = state["jobs"]
        return [job_status(jobs, j) for j in jobs.all()]

    @app.get("/api/jobs/{job_id}")
    def status(job_id: str):
        return job_status(state["jobs"], find(job_id))

    @app.post("/api/jobs/{job_id}/cancel")
    def cancel(job_id: str):
        return {"cancelled": state["jobs"].cancel(find(job_id).id)}

    @app.get("/api/jobs/{job_id}/files/{name}")
    def download(job_id: str, name: str):
        job = find(job_id)
        if name not in job.files or not (job.outdir / name).is_file():    # only what this job's run wrote
            raise HTTPException(404, "no such file")
        return FileResponse(job.outdir / name, media_type=MEDIA_TYPES.get(Path(name).suffix),
                            filename=name if name.endswith((".npz", ".glb", ".bvh")) else None)

    return app


def serve(host: str = "127.0.0.1", port: int = 0, max_upload_mb: int = DEFAULT_MAX_UPLOAD_MB,
          device: str = "cpu") -> None:
    """Start the server (a free port when `port` is 0), print its address, serve until Ctrl-C."""
    import socket

    import uvicorn

    if not is_vendored():
        raise DiffMeshError("the app's 3D viewer is not set up; run `diffmesh setup` (or `make setup`) once with "
                            "the npm registry reachable")
    if port == 0:
        with socket.socket() as probe:
            probe.bind((host, 0))
            port = probe.getsockname()[1]
    print(f"diffmesh app: open http://{host}:{port}/ in a browser (Ctrl-C stops it)", flush=True)
    uvicorn.run(create_app(max_upload_mb, device=device), host=host, port=port, log_level="warning")
