"""The FastAPI app: POST /predict (micro-batched), GET /health, GET /info, and the OpenAPI schema at /openapi.json.

Every answer to a client's mistake is a JSON 4xx in one shape ({"error": ..., "detail": [...]}):
400 malformed JSON, 413 body over the size limit, 415 not JSON, 422 wrong types / empty text / too many texts /
text too long / unknown fields, 404 and 405 for wrong paths and methods. 503 means "overloaded, retry": the
queue of waiting texts is full. 500 is left for bugs in the server itself.
"""

# No `from __future__ import annotations` here: FastAPI reads the endpoint's body type from its annotation, and the
# request model is built per app (from its limits), so the annotation must be the class itself, not a string.

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

import tinylm
from tinylm.inference.predictor import Predictor
from tinylm.serving.batcher import MicroBatcher, Overloaded, Stopped
from tinylm.serving.guard import RequestGuard
from tinylm.serving.schemas import (
    ErrorResponse,
    HealthResponse,
    InfoResponse,
    PredictBatchResponse,
    PredictResponse,
    request_model,
)
from tinylm.serving.settings import ServeSettings

log = logging.getLogger(__name__)

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "malformed JSON"},
    413: {"model": ErrorResponse, "description": "request body over the size limit"},
    415: {"model": ErrorResponse, "description": "body is not JSON"},
    422: {"model": ErrorResponse, "description": "wrong types, empty text, too many texts or a text too long"},
    503: {"model": ErrorResponse, "description": "overloaded: too many texts waiting; retry later"},
}


def error(status: int, message: str, detail: list[dict[str, Any]] | None = None,
          headers: dict[str, str] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"error": message}
    if detail is not None:
        body["detail"] = detail
    return JSONResponse(body, status_code=status, headers=headers)


def _validation_answer(err: RequestValidationError) -> JSONResponse:
    errors = list(err.errors())
    bad_json = next((e for e in errors if e.get("type") == "json_invalid"), None)
    if bad_json is not None:
        reason = (bad_json.get("ctx") or {}).get("error", "JSON decode error")
        return error(400, f"malformed JSON: {reason} (at character {bad_json['loc'][-1]})")
    # Only loc, msg and type: the rejected input may be huge, and ctx can hold exception objects.
    detail = [{"loc": [x if isinstance(x, int) else str(x) for x in e.get("loc", ())], "msg": str(e.get("msg", "")),
               "type": str(e.get("type", ""))} for e in errors]
    where = ".".join(str(x) for x in detail[0]["loc"][1:]) if detail else ""
    first = f"{where}: {detail[0]['msg']}" if where else (detail[0]["msg"] if detail else "invalid request")
    return error(422, f"invalid request: {first}", detail)


def create_app(predictor: Predictor, settings: ServeSettings | None = None) -> FastAPI:
    """The app serving `predictor` within `settings`' limits; its micro-batcher runs while the app does."""
    settings = settings or ServeSettings()
    batcher = MicroBatcher(lambda texts: predictor.predict_proba(texts, batch_size=settings.chunk),
                           max_batch=settings.max_batch, max_wait_ms=settings.max_wait_ms,
                           max_queue=settings.max_queue)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await batcher.start()
        try:
            yield
        finally:
            await batcher.stop()

    app = FastAPI(
        title="tinylm",
        version=tinylm.__version__,
        summary="Text classification with a tiny BERT (or a soft committee of them), micro-batched.",
        lifespan=lifespan,
    )
    app.state.batcher = batcher
    app.state.predictor = predictor
    app.add_middleware(RequestGuard, max_body_bytes=settings.max_body_bytes)
    _add_error_handlers(app)
    _add_routes(app, predictor, batcher, settings)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    """Every error in the one JSON shape: validation (400/422), HTTP errors (404, 405, ...), and bugs (500)."""

    @app.exception_handler(RequestValidationError)
    async def _on_invalid(_: Request, err: RequestValidationError) -> JSONResponse:
        return _validation_answer(err)

    @app.exception_handler(StarletteHTTPException)
    async def _on_http(_: Request, err: StarletteHTTPException) -> JSONResponse:
        return error(err.status_code, str(err.detail), headers=getattr(err, "headers", None))

    @app.exception_handler(Exception)
    async def _on_bug(_: Request, err: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=err)
        return error(500, "internal server error")


def _add_routes(app: FastAPI, predictor: Predictor, batcher: MicroBatcher, settings: ServeSettings) -> None:
    PredictRequest = request_model(settings)
    info = {**predictor.describe(), "version": tinylm.__version__, "limits": settings.to_dict()}

    @app.post("/predict", response_model=PredictResponse | PredictBatchResponse, responses=ERRORS)
    async def predict(body: PredictRequest) -> Any:  # type: ignore[valid-type]
        """Classify one text ({"text": ...}) or a list ({"texts": [...]}); concurrent requests share forward
        passes (micro-batching)."""
        started = time.perf_counter()
        texts = [body.text] if body.text is not None else body.texts
        try:
            probs = await batcher.submit(texts)
        except Overloaded as err:
            return error(503, str(err), headers={"Retry-After": "1"})
        except Stopped as err:
            return error(503, str(err))
        predictions = predictor.format(probs)
        latency_ms = round((time.perf_counter() - started) * 1000, 3)
        if body.text is not None:
            return {**predictions[0], "latency_ms": latency_ms}
        return {"predictions": predictions, "latency_ms": latency_ms}

    @app.get("/health", response_model=HealthResponse)
    async def health() -> dict[str, Any]:
        """Liveness, the texts waiting for a forward pass, and batching counters."""
        return {"status": "ok", "waiting_texts": batcher.waiting, "stats": batcher.stats.to_dict()}

    @app.get("/info", response_model=InfoResponse)
    async def model_info() -> dict[str, Any]:
        """The model behind the server: folder, kind (model or committee), labels, runtime, tinylm version."""
        return info
