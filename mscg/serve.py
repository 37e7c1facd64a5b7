"""`mscg serve`'s HTTP API: a loaded `mscg.api.Model` behind FastAPI, on uvicorn. GET /docs (and /openapi.json)
is the reference; in short:

    GET  /health     -> {"status": "ok", "kind", "items", "k", "model", "version"}
    POST /recommend  {"history": [item_id, ...], "k": 10, "include_history": false}
                     -> {"items": [item_id, ...], "scores": [...], "score_kind": "log-probability"}
                     {"users": [{"user_id": ..., "history": [...]}, ...], "k": ...}
                     -> {"users": [{"user_id", "items", "scores", "score_kind"}, ...]}

Optional fields: "skip_unknown" (drop history items the model does not know) and "fallback": "popular" (a
history with no known item gets the items most often in training; its answer is marked "fallback": "popular").
Ids are strings or integers (an integer is read as its decimal string). Scores are rounded to 6 decimals; "score_kind"
says what they are (`mscg.api.SCORE_KINDS`, or "popularity" for a fallback answer).

Every error is {"error": "one line naming the field and the fix"}: 400 for a body the client can fix, 404 for
an unknown path, 405 for a method a path does not take, 413 for a body over MAX_BODY_BYTES, 500 for an internal
error (also told to the operator, in one line). Limits: a body of at most 16 MiB (refused from its
Content-Length, or as soon as a chunked body passes it), nested at most MAX_DEPTH deep and with no number of
more than MAX_ID_CHARS digits (both checked on the bytes, before JSON parsing), ids of at most MAX_ID_CHARS
characters, k from 1 to MAX_K, at most MAX_USERS users, MAX_HISTORY items per history, and MAX_ANSWER_ITEMS
items (users x k) per request.

Concurrency: uvicorn's event loop accepts and reads requests; each one is checked and turned into dense item
indices there (a large body in a worker thread), so that a bad request fails alone. The model runs in one
thread of its own (`Batcher`): it takes every request waiting (up to MAX_BATCH_USERS users; under load it
waits up to BATCH_WAIT_S for more), ranks the requests that ask for the same k and include_history with one
`Model.rank_indices` call, and hands each request its own rows: the same items and scores as it would get
alone (skip_unknown and fallback act before and after the ranking, per request).
"""

from __future__ import annotations

import asyncio
import json
import math
import queue
import re
import socket
import threading
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Literal

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    StrictBool,
    ValidationError,
    WithJsonSchema,
    model_validator,
)
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from mscg import __version__
from mscg.api import POPULARITY, Model, item_key
from mscg.recommenders.defaults import EVAL_BATCH_SIZE
from mscg.errors import MscgError

MAX_BODY_BYTES = 16 * 2**20
MAX_K = 10_000
MAX_DEPTH = 32  # a request needs 4: {"users": [{"history": [...]}]}
MAX_ID_CHARS = 256
MAX_USERS = 10_000
MAX_HISTORY = 10_000  # the model reads the last max_history items; the others are only left out of the answer
MAX_ANSWER_ITEMS = 1_000_000
MAX_BATCH_USERS = EVAL_BATCH_SIZE  # users ranked by one model call
BATCH_WAIT_S = 0.002
BACKLOG = 2048
INLINE_BODY_BYTES = 64 * 2**10  # larger bodies are parsed and answered off the event loop
EXAMPLE = "{\"history\": [\"50\", \"172\"], \"k\": 10}"
USER = "{\"user_id\": ..., \"history\": [item_id, ...]}"
FIELDS = "history (or users), k, include_history, skip_unknown, fallback"


class BadRequest(Exception):
    """A request the client can fix: 400 with its message."""


class TooLarge(Exception):
    """A body over MAX_BODY_BYTES: 413."""


# ---- the request and the answers, as the OpenAPI schema documents them -----------------------------------

ID_RULE = f"must be an item id: a string (or an integer) of at most {MAX_ID_CHARS} characters"


def _id(value) -> str:
    key = item_key(value)
    if key is None or len(key) > MAX_ID_CHARS:
        raise ValueError(ID_RULE)
    return key


ItemId = Annotated[str, PlainValidator(_id), WithJsonSchema({
    "anyOf": [{"type": "string", "maxLength": MAX_ID_CHARS}, {"type": "integer"}],
    "description": "An id: a string, or an integer read as its decimal string (50 is \"50\")."})]
History = Annotated[list[ItemId], Field(max_length=MAX_HISTORY, description="Item ids, oldest first.")]


class User(BaseModel):
    """One user of a batch."""

    model_config = ConfigDict(extra="forbid")
    user_id: ItemId = Field(description="Any id of yours; the answer repeats it (as a string).")
    history: History


class RecommendRequest(BaseModel):
    """One user (`history`) or a batch (`users`), and how to rank."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"history": ["50", "172", "181"], "k": 5},
        {"users": [{"user_id": "u1", "history": ["50"]}, {"user_id": 7, "history": [172, 181]}],
         "include_history": True}]})
    history: History | None = Field(None, description="One user's item ids, oldest first (or give users).")
    users: Annotated[list[User], Field(min_length=1, max_length=MAX_USERS)] | None = Field(
        None, description=f"A batch: at most {MAX_USERS:,} users (or give history).")
    k: Annotated[int, Field(strict=True, ge=1, le=MAX_K)] | None = Field(
        None, description="Items per user (default: the server's -k).")
    include_history: StrictBool = Field(False, description="Rank the history's own items too.")
    skip_unknown: StrictBool = Field(False, description="Drop history items the model does not know "
                                                        "(otherwise such an item is a 400).")
    fallback: Literal["none", "popular"] = Field("none", description="\"popular\": a history with no known item "
                                                                     "gets the items most often in training.")

    @model_validator(mode="after")
    def _one_of(self):
        if (self.history is None) == (self.users is None):
            raise ValueError(f"give either \"history\": [item_id, ...] (one user) or \"users\": [{USER}, ...]")
        return self


class Recommendation(BaseModel):
    items: list[str] = Field(description="Item ids, best first (fewer than k when fewer remain).")
    scores: list[float] = Field(description="Their scores, best first, of the kind score_kind names.")
    score_kind: Literal["log-probability", "inner-product", "fused", "popularity"] = Field(
        description="What the scores are: log-probabilities (generator), inner products (SASRec), a weighted sum of "
                    "log-probabilities (fused), or training counts (popularity: a fallback answer).")
    fallback: Literal["popular"] | None = Field(None, description="Present when the history had no known item.")


class UserRecommendation(Recommendation):
    user_id: str


class BatchRecommendation(BaseModel):
    users: list[UserRecommendation]


class Health(BaseModel):
    status: Literal["ok"]
    kind: str = Field(description="mscg-generator, sasrec or fused")
    items: int = Field(description="Items in the catalogue.")
    k: int = Field(description="Items per user when a request gives no k.")
    model: str
    version: str = Field(description="mscg's version.")


class ErrorBody(BaseModel):
    error: str = Field(description="One line naming the field and the fix.")


# ---- reading a body ---------------------------------------------------------------------------------------

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)  # an unclosed string runs to the end: no backtracking
_LONG_NUMBER = re.compile(rb"[0-9]{%d,}" % (MAX_ID_CHARS + 1))
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def check_shape(raw: bytes) -> None:
    """Refuse, before `json.loads` sees the bytes, a body nested deeper than MAX_DEPTH (which would exhaust
    Python's recursion) and a number of more than MAX_ID_CHARS digits (over 4,300 `int()` refuses). Brackets
    and digits inside strings do not count."""
    bare = _STRING.sub(b'""', raw)
    long = _LONG_NUMBER.search(bare)
    if long:
        raise BadRequest(f"the body has a number of {len(long.group()):,} digits; an id has at most {MAX_ID_CHARS} "
                         f"characters and k at most {len(str(MAX_K))} digits")
    brackets = np.frombuffer(bare.translate(None, _NOT_BRACKETS), dtype=np.uint8)
    if len(brackets):
        depth = int(np.cumsum(np.where((brackets == ord("[")) | (brackets == ord("{")), 1, -1)).max())
        if depth > MAX_DEPTH:
            raise BadRequest(f"the body is nested {depth:,} levels deep, more than {MAX_DEPTH}; send e.g. {EXAMPLE}")


def _shown(value) -> str:
    return json.dumps(value, default=str)[:60]


def _where(loc) -> str:
    """A pydantic error location as the client wrote it: users[0].history[2]."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


HINTS = {
    "history": "must be a list of item ids, e.g. " + EXAMPLE,
    "users": f"must be a non-empty list of {USER}",
    "k": f"must be an integer from 1 to {MAX_K:,}",
    "include_history": "must be true or false",
    "skip_unknown": "must be true or false",
    "fallback": "must be one of: none, popular",
    "user_id": f"must be a string (or an integer) of at most {MAX_ID_CHARS} characters",
}


def validation_message(error: dict) -> str:
    """One line for the first error pydantic (or FastAPI) found in a request body."""
    loc = list(error.get("loc", ()))
    if loc[:1] == ["body"]:
        loc = loc[1:]
    kind, where = error.get("type", ""), _where(loc)
    names = [part for part in loc if isinstance(part, str)]
    if kind == "json_invalid":
        return f"the body is not JSON ({error.get('ctx', {}).get('error', 'invalid')}); send e.g. {EXAMPLE}"
    if not loc:
        if kind == "value_error":
            return str(error["ctx"]["error"])
        return f"the body must be a JSON object, e.g. {EXAMPLE}"
    if kind == "extra_forbidden":
        if len(loc) == 1:
            return f"unknown field \"{loc[0]}\"; the fields are {FIELDS}"
        return f"\"{_where(loc[:-1])}\" has an unknown field \"{loc[-1]}\"; a user is {USER}"
    if kind == "missing":
        return f"\"{where}\" is missing; a user is {USER}"
    if kind == "too_long":
        unit, fix = ("users", "split the batch") if names[-1] == "users" else ("items", "send the most recent ones")
        ctx = error["ctx"]
        return f"\"{where}\" has {ctx['actual_length']:,} {unit}, more than {ctx['max_length']:,}; {fix}"
    if isinstance(loc[-1], int):
        rule = ID_RULE if names[-1] == "history" else f"must be an object {USER}"
    else:
        rule = HINTS.get(names[-1], str(error.get("msg", "is not valid")))
    return f"\"{where}\" {rule}, found {_shown(error.get('input'))}"


@dataclass
class Prepared:
    """A request checked and in dense indices, ready for the model."""

    user_ids: list[str] | None  # None: one user ("history")
    dense: list[np.ndarray]
    k: int
    include_history: bool
    popular: bool  # fallback "popular": an empty history gets the most popular items


def prepare(model: Model, raw: bytes, default_k: int) -> Prepared:
    """A POST /recommend body, checked and turned into dense indices; BadRequest for what the client must fix."""
    check_shape(raw)
    try:
        body = json.loads(raw)
    except RecursionError:
        raise BadRequest(f"the body is nested too deep; send e.g. {EXAMPLE}") from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError, an integer of too many digits
        reason = " ".join(str(e).split())[:200]
        raise BadRequest(f"the body is not JSON ({reason}); send e.g. {EXAMPLE}") from None
    try:
        request = RecommendRequest.model_validate(body)
    except ValidationError as e:
        raise BadRequest(validation_message(e.errors(include_url=False)[0])) from None
    k = default_k if request.k is None else request.k
    if request.history is not None:
        user_ids, histories, wheres = None, [request.history], ["\"history\""]
    else:
        user_ids = [u.user_id for u in request.users]
        histories = [u.history for u in request.users]
        wheres = [f"\"users[{n}].history\"" for n in range(len(histories))]
    if len(histories) * k > MAX_ANSWER_ITEMS:
        raise BadRequest(f"{len(histories):,} users x k {k:,} is more than {MAX_ANSWER_ITEMS:,} items in one "
                         "answer; split the batch or lower \"k\"")
    dense = []
    for n, history in enumerate(histories):
        try:
            rows = model.indices(history, skip_unknown=request.skip_unknown)
        except MscgError as e:  # an unknown item, worded for the Python API
            where = "" if user_ids is None else f"users[{n}]: "
            raise BadRequest(where + str(e).replace("skip_unknown=True", "\"skip_unknown\": true")) from None
        if not len(rows) and request.fallback != "popular":
            raise BadRequest(f"{wheres[n]} has no item the model knows; give at least one, or pass "
                             "\"fallback\": \"popular\"")
        dense.append(rows)
    return Prepared(user_ids, dense, k, request.include_history, request.fallback == "popular")


def encode(prepared: Prepared, ranked: list[tuple[list[tuple[int, float]], bool]], item_ids: list[str],
           score_kind: str) -> bytes:
    """The JSON answer; ValueError for a score that is not a finite number (JSON has none)."""
    answers = []
    for recs, popular in ranked:
        one = {"items": [item_ids[i] for i, _ in recs], "scores": [round(s, 6) for _, s in recs],
               "score_kind": POPULARITY if popular else score_kind}
        if not all(map(math.isfinite, one["scores"])):
            raise ValueError("the model gave a score that is not a finite number")
        if popular:
            one["fallback"] = "popular"
        answers.append(one)
    obj = answers[0] if prepared.user_ids is None else \
        {"users": [{"user_id": u, **a} for u, a in zip(prepared.user_ids, answers)]}
    return (json.dumps(obj, allow_nan=False) + "\n").encode()


async def read_body(request: Request) -> bytes:
    """The body, refused (TooLarge) from its Content-Length or as soon as the bytes received pass the limit."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and (len(length) > 12 or int(length) > MAX_BODY_BYTES):
        raise TooLarge
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


# ---- the model's thread ---------------------------------------------------------------------------------

@dataclass(eq=False)
class _Job:
    dense: list[np.ndarray]
    k: int
    exclude_history: bool
    popular: bool
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future


class Batcher:
    """The one thread that runs the model. It takes every request waiting (up to `max_users` users; when
    requests came in while the previous batch ran, or several are waiting, it waits up to `wait` seconds for
    more), ranks those with the same (k, exclude_history) in one `Model.rank_indices` call, and settles each
    request's future with its own rows. `calls` counts the model calls, `requests` the requests answered."""

    def __init__(self, model: Model, *, max_users: int = MAX_BATCH_USERS, wait: float = BATCH_WAIT_S):
        self.model = model
        self.max_users = max_users
        self.wait = wait
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()
        self.thread: threading.Thread | None = None
        self.calls = 0
        self.requests = 0

    def start(self) -> None:
        self.thread = threading.Thread(target=self._work, name="mscg-serve-model", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        if self.thread is not None:
            self.jobs.put(None)
            self.thread.join(timeout=60)
            self.thread = None

    async def rank(self, prepared: Prepared) -> list[tuple[list[tuple[int, float]], bool]]:
        """Per history: ((item index, score) best first, whether it is the popular fallback)."""
        loop = asyncio.get_running_loop()
        job = _Job(prepared.dense, prepared.k, not prepared.include_history, prepared.popular, loop,
                   loop.create_future())
        self.jobs.put(job)
        return await job.future

    def _work(self) -> None:
        busy = False
        while True:
            job = self.jobs.get()
            if job is None:
                return
            batch, users, stopping = [job], len(job.dense), False
            deadline = time.monotonic() + self.wait
            while users < self.max_users:
                try:
                    job = self.jobs.get_nowait()
                except queue.Empty:
                    remaining = deadline - time.monotonic()
                    if not (busy or len(batch) > 1) or remaining <= 0:
                        break
                    try:
                        job = self.jobs.get(timeout=remaining)
                    except queue.Empty:
                        break
                if job is None:
                    stopping = True
                    break
                batch.append(job)
                users += len(job.dense)
            self._answer(batch)
            if stopping:
                return
            busy = len(batch) > 1 or not self.jobs.empty()

    def _answer(self, batch: list[_Job]) -> None:
        groups: dict[tuple[int, bool], list[_Job]] = {}
        for job in batch:
            groups.setdefault((job.k, job.exclude_history), []).append(job)
        for (k, exclude_history), jobs in groups.items():
            histories = [h for job in jobs for h in job.dense if len(h)]
            try:
                ranked = self.model.rank_indices(histories, k, exclude_history=exclude_history) if histories else []
            except Exception as e:  # noqa: BLE001 a 500 for each request of the group (a model giving NaN, ...)
                for job in jobs:
                    _settle(job, error=e)
                continue
            self.calls += bool(histories)
            at = 0
            for job in jobs:
                n = sum(1 for h in job.dense if len(h))
                own, at = iter(ranked[at:at + n]), at + n
                try:
                    popular = self.model.popular_indices(k, "fallback=\"popular\"") if n < len(job.dense) else []
                    _settle(job, [(popular, True) if not len(h) else (next(own), False) for h in job.dense])
                except MscgError as e:  # a model that records no training counts: this request alone, a 400
                    _settle(job, error=BadRequest(" ".join(str(e).replace("fallback=\"popular\"",
                                                                          "\"fallback\": \"popular\"").split())))
                except Exception as e:  # noqa: BLE001 this request alone, a 500
                    _settle(job, error=e)
            self.requests += len(jobs)


def _settle(job: _Job, result=None, *, error: BaseException | None = None) -> None:
    def done():
        if not job.future.done():
            if error is not None:
                job.future.set_exception(error)
            else:
                job.future.set_result(result)
    try:
        job.loop.call_soon_threadsafe(done)
    except RuntimeError:  # the loop has closed: nobody waits
        pass


# ---- the application ------------------------------------------------------------------------------------

def error_response(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


ERRORS = {400: {"model": ErrorBody, "description": "A bad request: the message names the field and the fix."},
          413: {"model": ErrorBody, "description": f"A body over {MAX_BODY_BYTES:,} bytes."},
          500: {"model": ErrorBody, "description": "An internal error."}}


class _Guard:
    """The outermost layer: an exception that escapes the app becomes a 500 {"error"} and one line for the
    operator, never a traceback on stderr."""

    def __init__(self, app, on_error: Callable[[str], None] | None = None):
        self.app, self.on_error = app, on_error

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def tracked(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception as e:  # noqa: BLE001
            _tell(self.on_error, f"{scope.get('method')} {scope.get('path', '')[:100]} failed: "
                                 f"{type(e).__name__}: {e}")
            if not started:
                await error_response(500, f"internal error ({type(e).__name__})")(scope, receive, send)


def _tell(on_error, message: str) -> None:
    if on_error is not None:
        on_error(" ".join(message.split())[:500])


def make_app(model: Model, default_k: int, *, on_error: Callable[[str], None] | None = None,
             max_batch: int = MAX_BATCH_USERS, wait: float = BATCH_WAIT_S) -> FastAPI:
    """The FastAPI application over `model`; `on_error(message)` hears of internal errors (one line each). Its
    lifespan starts and stops the model's thread (`app.state.batcher`: `max_batch` users per model call, 1 for
    none batched together; `wait` seconds at most for more requests)."""
    batcher = Batcher(model, max_users=max_batch, wait=wait)
    health = {"status": "ok", "kind": model.kind, "items": len(model.item_ids), "k": default_k,
              "model": str(model.path), "version": __version__}

    @asynccontextmanager
    async def lifespan(app):
        batcher.start()
        try:
            yield
        finally:
            batcher.stop()

    app = FastAPI(title="mscg serve", version=__version__, lifespan=lifespan,
                  description=f"Recommendations from `{model.path}` ({model.kind}, {len(model.item_ids):,} items). "
                              "Every error is `{\"error\": \"one line naming the field and the fix\"}`.")
    app.state.batcher = batcher
    app.add_middleware(_Guard, on_error=on_error)

    @app.get("/health", response_model=Health, summary="What is served")
    async def get_health():
        return JSONResponse(health)

    @app.post("/recommend", summary="The k best next items of one user or a batch",
              response_model=Recommendation | BatchRecommendation, responses=ERRORS,
              openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                  "schema": {"$ref": "#/components/schemas/RecommendRequest"}}}}})
    async def recommend(request: Request):
        """Body: `history` (one user) or `users` (a batch); `k`, `include_history`, `skip_unknown` and
        `fallback` are optional. The answer has the same shape: `items`, `scores` and `score_kind` (per user)."""
        try:
            raw = await read_body(request)
            large = len(raw) > INLINE_BODY_BYTES
            prepared = await run_in_threadpool(prepare, model, raw, default_k) if large else \
                prepare(model, raw, default_k)
            ranked = await batcher.rank(prepared)
            big = large or sum(len(r) for r, _ in ranked) > 10_000
            data = await run_in_threadpool(encode, prepared, ranked, model.item_ids, model.score_kind) if big else \
                encode(prepared, ranked, model.item_ids, model.score_kind)
        except BadRequest as e:
            return error_response(400, str(e))
        except ClientDisconnect:  # gone before its body was all sent: nobody to answer, nothing to tell
            return error_response(400, "the connection closed before the body ended")
        except TooLarge:
            return error_response(413, f"the body must be at most {MAX_BODY_BYTES:,} bytes; split the batch",
                                  {"Connection": "close"})
        except Exception as e:  # noqa: BLE001 never a traceback to the client; one line for the operator
            _tell(on_error, f"POST /recommend failed: {type(e).__name__}: {e}")
            return error_response(500, f"internal error ({type(e).__name__})")
        return Response(data, media_type="application/json")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        path = request.url.path
        if exc.status_code == 404:
            message = f"no such path {_shown(path)}; use POST /recommend or GET /health (GET /docs describes them)"
        elif exc.status_code == 405 and (exc.headers or {}).get("Allow"):
            message = f"{path} takes {exc.headers['Allow']}, not {request.method[:20]}"
        else:
            message = " ".join(str(exc.detail).split())
        return error_response(exc.status_code, message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        return error_response(400, validation_message(exc.errors()[0]))

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description,
                                 routes=app.routes)
            body = RecommendRequest.model_json_schema(ref_template="#/components/schemas/{model}")
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components.update(body.pop("$defs", {}))
            components["RecommendRequest"] = body
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi
    return app


def listen(host: str, port: int) -> socket.socket:
    """A TCP socket listening on host:port (port 0: a free one; `getsockname()` names it). OSError if not."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                         flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    return sock


def make_server(app: FastAPI):
    """A uvicorn server for `app` (run it with `.run(sockets=[listen(...)])`): no Server header, no access
    log, only errors logged, a large backlog, at most 10 s for requests in flight at shutdown."""
    import uvicorn

    config = uvicorn.Config(app, log_level="error", access_log=False, server_header=False, backlog=BACKLOG,
                            timeout_graceful_shutdown=10, lifespan="on")
    return uvicorn.Server(config)
