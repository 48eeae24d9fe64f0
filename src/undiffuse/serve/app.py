"""The HTTP API and the page: a FastAPI app over a :class:`~undiffuse.serve.catalog.Catalog` and a
:class:`~undiffuse.serve.batcher.Batcher`.

| endpoint | answer |
|---|---|
| ``GET /`` | the page (plain HTML/CSS/JS from the package; nothing from a CDN) |
| ``GET /api/health`` | ok, models loaded or failed, queue and worker state, counters |
| ``GET /api/models`` | each model: kind, shape, classes/text, samplers and their options, formats, limits |
| ``POST /api/sample`` | JSON :class:`~undiffuse.serve.requests.SampleBody` → the file (same bytes as ``undiffuse sample``) |
| ``POST /api/sample/stream`` | the same body → server-sent events: progress, x̂₀ previews (PNG data URLs), result |
| ``POST /api/edit`` (``/stream``) | multipart: ``image``, optional ``mask`` (white = generate) + fields → PNG (or events) |
| ``GET /openapi.json``, ``GET /docs`` | the schema of all of these, and a page that lists it |

Errors are JSON ``{"error": "problem — fix"}`` with a 4xx status (429: queue full, 413: too large, 504:
timed out) or 500 for a failure inside a model, which answers that request only.
"""

from __future__ import annotations

import asyncio
import base64
import json
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, AsyncIterator, Callable, Optional, Sequence

from fastapi import Depends, FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware

from undiffuse.errors import UserError
from undiffuse.serve.batcher import Batcher, Job
from undiffuse.serve.catalog import Catalog
from undiffuse.serve.limits import Cancelled, Limits, TimedOut
from undiffuse.serve.outputs import encode, encode_edit, media_type, preview_url
from undiffuse.serve.requests import EditFields, SampleBody, edit_work, sample_work
from undiffuse.serve.server import BodyLimit

__all__ = ["create_app", "STATIC"]

STATIC = Path(__file__).with_name("static")


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": " ".join(str(message).split())}, status_code=status)


def _install_errors(app: FastAPI) -> None:
    @app.exception_handler(UserError)
    async def user_error(_: Request, e: UserError) -> JSONResponse:
        return _error(getattr(e, "status", 400), str(e))

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, e: RequestValidationError) -> JSONResponse:
        parts = [f"{'.'.join(str(p) for p in err.get('loc', ())[1:]) or 'body'}: {err.get('msg')}" for err in e.errors()[:3]]
        return _error(400, f"bad request ({'; '.join(parts)}) — see GET /openapi.json for the fields")

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, e: HTTPException) -> JSONResponse:
        return _error(e.status_code, str(e.detail))

    @app.exception_handler(Exception)
    async def crash(_: Request, e: Exception) -> JSONResponse:
        return _error(500, f"the model failed on this request ({type(e).__name__}: {str(e)[:200]}) — the server keeps running")


async def _submit(app: FastAPI, work: Any, stream: bool) -> Job:
    job = Job(work, asyncio.get_running_loop(), previews=stream)
    app.state.batcher.submit(job)
    return job


def _timed_out(timeout: float) -> TimedOut:
    return TimedOut(f"the request took longer than {timeout:g} s — ask for fewer samples or steps")


async def _result(request: Request, job: Job, timeout: float) -> Any:
    """The job's result; cancels it when the client goes away (499) or the timeout passes (504)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        while True:
            try:
                return await asyncio.wait_for(asyncio.shield(job.future), 0.25)
            except asyncio.TimeoutError:
                if await request.is_disconnected():
                    raise Cancelled("the client went away") from None
                if loop.time() > deadline:
                    raise _timed_out(timeout) from None
    finally:
        job.cancel()  # a no-op once finished; otherwise the worker drops it


def _sse(event: str, data: dict) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


async def _stream(job: Job, data: Any, timeout: float, finish: Callable[[Any], dict]) -> AsyncIterator[str]:
    """Server-sent events of one job: progress, previews, then result (or error). When the client goes
    away the response is cancelled or its next write fails, and ``finally`` drops the job."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        yield _sse("queued", {"queued": True})
        while True:
            try:
                ev = await asyncio.wait_for(job.events.get(), 1.0)
            except asyncio.TimeoutError:
                if loop.time() > deadline:
                    raise _timed_out(timeout) from None
                yield ": waiting\n\n"  # a comment line: a client that left makes this write fail
                continue
            if ev[0] == "done":
                break
            if ev[0] == "progress":
                yield _sse("progress", {"step": ev[1], "steps": ev[2]})
            elif ev[0] == "preview":
                url = await asyncio.to_thread(preview_url, ev[3], data)
                if url is not None:  # a kind without a .png writer has no picture of x̂₀
                    yield _sse("preview", {"step": ev[1], "steps": ev[2], "image": url})
        yield _sse("result", await asyncio.to_thread(finish, job.future.result()))
    except UserError as e:
        yield _sse("error", {"error": str(e), "status": getattr(e, "status", 400)})
    except Exception as e:  # noqa: BLE001 — a model failure answers this stream only
        yield _sse("error", {"error": f"the model failed on this request ({type(e).__name__}: {str(e)[:200]})", "status": 500})
    finally:
        job.cancel()


def _payload(body: bytes, fmt: str, filename: str, job: Job) -> dict:
    return {"format": fmt, "media_type": media_type(fmt), "filename": filename, "shared_with": job.shared_with,
            "data": base64.b64encode(body).decode("ascii")}  # fmt: skip


def _sse_response(gen: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(gen, media_type="text/event-stream", headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


def _file(body: bytes, fmt: str, filename: str, job: Job) -> Response:
    headers = {"Content-Disposition": f'attachment; filename="{filename}"', "X-Undiffuse-Shared-With": str(job.shared_with)}
    return Response(body, media_type=media_type(fmt), headers=headers)


def _add_sample_routes(app: FastAPI, catalog: Catalog, limits: Limits) -> None:
    @app.post("/api/sample", summary="Draw samples; the answer is the file (the bytes of `undiffuse sample`)")
    async def sample(body: SampleBody, request: Request) -> Response:
        work, fmt = await asyncio.to_thread(sample_work, body, catalog, limits)
        job = await _submit(app, work, stream=False)
        x = await _result(request, job, limits.timeout_s)
        return _file(await asyncio.to_thread(encode, x, work.model.data, fmt), fmt, f"samples.{fmt}", job)

    @app.post("/api/sample/stream", summary="Draw samples with progress and x̂₀ previews as server-sent events")
    async def sample_stream(body: SampleBody) -> StreamingResponse:
        work, fmt = await asyncio.to_thread(sample_work, body, catalog, limits)
        job = await _submit(app, work, stream=True)
        finish = lambda x: _payload(encode(x, work.model.data, fmt), fmt, f"samples.{fmt}", job)  # noqa: E731
        return _sse_response(_stream(job, work.model.data, limits.timeout_s, finish))


async def _edit_job(app: FastAPI, fields: EditFields, image: UploadFile, mask: Optional[UploadFile], stream: bool) -> tuple:
    catalog, limits = app.state.catalog, app.state.limits
    img = await image.read(limits.upload_bytes + 1)
    msk = await mask.read(limits.upload_bytes + 1) if mask is not None else None
    work = await asyncio.to_thread(edit_work, fields, img, msk, catalog, limits)
    return work, await _submit(app, work, stream)


def _edit_fields(model: str = Form(...), strength: Optional[float] = Form(None), seed: int = Form(0, ge=-(2**63), lt=2**64),  # noqa: B008
                 sampler: str = Form("ddim"), steps: int = Form(50), eta: float = Form(0.0), resample: int = Form(1),
                 jump: int = Form(1), guidance: Optional[float] = Form(None), class_label: Optional[int] = Form(None, alias="class"),
                 prompt: Optional[str] = Form(None, max_length=500)) -> EditFields:  # fmt: skip
    """The form fields of an edit (FastAPI reads them from the multipart body)."""
    return EditFields(model=model, strength=strength, seed=seed, sampler=sampler, steps=steps, eta=eta, resample=resample,
                      jump=jump, guidance=guidance, class_label=class_label, prompt=prompt)  # fmt: skip


Fields = Annotated[EditFields, Depends(_edit_fields)]
Image = Annotated[UploadFile, File(description="PNG or JPEG, decoded in memory")]
Mask = Annotated[Optional[UploadFile], File(description="PNG: white = generate, black = keep")]


def _add_edit_routes(app: FastAPI, limits: Limits) -> None:
    @app.post("/api/edit", summary="Inpaint (with a mask: white = generate) or SDEdit an uploaded image → PNG")
    async def edit(request: Request, f: Fields, image: Image, mask: Mask = None) -> Response:
        work, job = await _edit_job(app, f, image, mask, stream=False)
        x = await _result(request, job, limits.timeout_s)
        return _file(await asyncio.to_thread(encode_edit, x), "png", "edited.png", job)

    @app.post("/api/edit/stream", summary="The same edit with progress and previews as server-sent events")
    async def edit_stream(f: Fields, image: Image, mask: Mask = None) -> StreamingResponse:
        work, job = await _edit_job(app, f, image, mask, stream=True)
        finish = lambda x: _payload(encode_edit(x), "png", "edited.png", job)  # noqa: E731
        return _sse_response(_stream(job, work.model.data, limits.timeout_s, finish))


def _add_info_routes(app: FastAPI, catalog: Catalog, limits: Limits) -> None:
    @app.get("/api/health", summary="Liveness: models, queue, worker")
    async def health() -> dict:
        b: Batcher = app.state.batcher
        models = {name: e.model is not None for name, e in catalog.entries.items()}
        return {"ok": any(models.values()), "models": models, "queued": b.queued, "running_rows": b.running,
                "worker_alive": b.alive, "stats": dict(b.stats)}  # fmt: skip

    @app.get("/api/models", summary="The loaded models, their kind, options and formats")
    async def models() -> list:
        return catalog.describe(limits)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> FileResponse:  # the API reference, read from /openapi.json by the page itself
        return FileResponse(STATIC / "api.html", media_type="text/html")


#: Host headers a loopback server answers (others: 400), so a web page cannot reach it by DNS rebinding.
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")


def create_app(catalog: Catalog, limits: Optional[Limits] = None, hosts: Sequence[str] = LOOPBACK_HOSTS) -> FastAPI:
    """The app: routes, JSON errors, a body-size limit, the static page; the worker runs while it is served.
    ``hosts``: the Host headers it answers (``("*",)``: any)."""
    limits = limits or Limits()
    batcher = Batcher(limits)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        batcher.start()
        try:
            yield
        finally:
            await asyncio.to_thread(batcher.stop)

    app = FastAPI(title="undiffuse", summary="Sample and edit with trained diffusion models", docs_url=None,
                  redoc_url=None, lifespan=lifespan)  # fmt: skip  (the framework's doc pages load a CDN)
    app.state.catalog, app.state.limits, app.state.batcher = catalog, limits, batcher
    _install_errors(app)
    _add_info_routes(app, catalog, limits)
    _add_sample_routes(app, catalog, limits)
    _add_edit_routes(app, limits)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(BodyLimit, json_bytes=limits.body_bytes, upload_bytes=limits.upload_bytes)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(hosts))
    return app
