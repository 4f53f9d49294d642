"""The ASGI app: POST /predict, GET /health, /info, the webcam page at / (static/), FastAPI's /docs.

Bad input is the client's problem, never the server's: every refusal is a 4xx with {"error": "one line"},
and the next request is served. Analysis is CPU-bound, so it runs on a pool of `concurrency` threads
(torch, onnxruntime and OpenCV let go of the GIL), never on the event loop.
"""

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from fer.errors import FerError, first_line
from fer.serve.analyse import Analyser, versions
from fer.serve.images import BadImage, decode

log = logging.getLogger("fer.serve")
STATIC = Path(__file__).parent / "static"
RAW_TYPES = ("", "application/octet-stream")  # besides image/*: a raw body that is the image itself


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status)


class TooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware: a body over `limit` bytes is refused (413) by its Content-Length before any of it is
    read, and a body without one (chunked) as soon as what has arrived passes the limit."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    def message(self) -> str:
        return f"the request body is over the limit of {self.limit / 2**20:g} MB (max_upload_mb)"

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length", b"")  # the server has checked it is a number
        if length.isdigit() and int(length) > self.limit:
            return await error(413, self.message())(scope, receive, send)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise TooLarge(self.message())
            return message

        await self.app(scope, counted, send)


def create_app(load: Callable[[], Analyser], concurrency: int, max_upload_mb: float, max_pixels: int) -> FastAPI:
    """`load` builds the models; it runs once, at start-up, before the server takes requests."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.analyser = await asyncio.to_thread(load)
        with ThreadPoolExecutor(concurrency, thread_name_prefix="fer-analyse") as pool:
            app.state.pool = pool
            yield
        app.state.analyser = None

    app = FastAPI(title="fer", summary="Facial emotion recognition on uploaded images", lifespan=lifespan)
    app.state.analyser = None
    app.add_middleware(BodyLimit, limit=int(max_upload_mb * 2**20))
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(TooLarge)
    async def too_large(request, e):
        return error(413, str(e))

    @app.exception_handler(ClientDisconnect)
    async def gone(request, e):  # nobody reads this answer; it only keeps the log free of tracebacks
        return error(400, "the client went away before sending the whole body")

    @app.exception_handler(HTTPException)
    async def http_error(request, e: HTTPException):
        return error(e.status_code, first_line(e.detail))

    @app.exception_handler(Exception)
    async def bug(request, e: Exception):  # a fault of ours, not the client's: still one line of JSON; the log has the traceback
        log.exception(f"{request.method} {request.url.path} failed")
        return error(500, f"internal error ({type(e).__name__}); the server's log has the details")

    @app.exception_handler(RequestValidationError)
    async def invalid(request, e: RequestValidationError):
        problem = e.errors()[0]
        where = ".".join(str(p) for p in problem["loc"][1:]) or "the request"
        return error(422, f"{where}: {problem['msg']}")

    def analyse(data: bytes, detect: bool | None) -> tuple[int, dict, float]:
        start = time.perf_counter()
        try:
            result = 200, app.state.analyser.analyse(decode(data, max_pixels), detect)
        except BadImage as e:
            result = e.status, {"error": str(e)}
        except FerError as e:
            result = 422, {"error": str(e)}
        return (*result, time.perf_counter() - start)

    @app.post("/predict")
    async def predict(request: Request, detect: bool | None = None):
        """An image (any format OpenCV reads) as the raw body or as the multipart field `file` -> every face on it.

        detect=false: the whole image is one face (a crop). Answers {"width", "height", "faces": [{"box": [x, y, w, h],
        "label", "score", "probabilities": {class: p}, "landmarks": [[x, y] x 5] or null}]}."""
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        body = await request.body()  # counted against max_upload_mb as it arrives (BodyLimit)
        if kind == "multipart/form-data":
            try:
                form = await request.form(max_files=1, max_fields=10)
            except (HTTPException, ValueError, AssertionError) as e:
                return error(400, f"the multipart form cannot be read ({first_line(getattr(e, 'detail', e))})")
            upload = form.get("file")
            if upload is None or isinstance(upload, str):
                await form.close()
                return error(422, "the multipart form has no file in its field 'file'")
            data = await upload.read()
            await form.close()
        elif kind in RAW_TYPES or kind.startswith("image/"):
            data = body
        else:
            return error(
                415,
                f"Content-Type {kind} is not an image: send the image as the body (image/* or application/octet-stream) "
                "or as the multipart/form-data field 'file'",
            )
        status, answer, seconds = await asyncio.get_running_loop().run_in_executor(app.state.pool, analyse, data, detect)
        # Server-Timing: the page shows how much of a frame's round trip the analysis itself took.
        return JSONResponse(answer, status, headers={"Server-Timing": f"analyse;dur={seconds * 1000:.1f}"})

    @app.get("/health")
    async def health():
        """200 once the models are loaded (the load balancer's readiness check); 503 before."""
        if app.state.analyser is None:
            return JSONResponse({"status": "loading"}, 503)
        return {"status": "ready"}

    @app.get("/info")
    async def info():
        """The model, its classes and their colours, its validation accuracy, the detector, the limits, the versions."""
        if app.state.analyser is None:
            return error(503, "the models are still loading")
        limits = {"max_upload_mb": max_upload_mb, "max_pixels": max_pixels, "concurrency": concurrency}
        return {**app.state.analyser.info, "limits": limits, "versions": versions()}

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html")

    return app
