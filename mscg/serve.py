"""`mscg serve`'s HTTP endpoint: a loaded `mscg.api.Model` answering JSON requests (standard library only).

    GET  /health     -> {"status": "ok", "kind", "items", "k", "model", "version"}
    POST /recommend  {"history": [item_id, ...], "k": 10, "include_history": false}
                     -> {"items": [item_id, ...], "scores": [...]}
                     {"users": [{"user_id": ..., "history": [...]}, ...], "k": ...}
                     -> {"users": [{"user_id", "items", "scores"}, ...]}

Optional fields: "skip_unknown" (drop history items the model does not know) and "fallback": "popular" (a
history with no known item gets the items most often in training; its answer is marked "fallback": "popular").
A bad request gets a 400 with {"error": "one line naming the field and the fix"}; an unknown path a 404.
Requests are answered one at a time (the model is shared), by a thread each.
"""

from __future__ import annotations

import json
import re
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from mscg import __version__
from mscg.api import FALLBACKS, Model, item_key
from mscg.errors import MscgError

MAX_BODY_BYTES = 16 * 2**20
MAX_K = 10_000


class BadRequest(Exception):
    """A request the client can fix: 400 with its message."""


def _flag(body: dict, name: str, default: bool) -> bool:
    value = body.get(name, default)
    if not isinstance(value, bool):
        raise BadRequest(f"\"{name}\" must be true or false, found {json.dumps(value)[:60]}")
    return value


def _history(value, where: str) -> list:
    if not isinstance(value, list):
        raise BadRequest(f"{where}\"history\" must be a list of item ids, e.g. {{\"history\": [\"50\", \"172\"]}}")
    return value


def answer(model: Model, body, default_k: int) -> dict:
    """The JSON answer to one POST /recommend body; BadRequest for what the client must fix."""
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object, e.g. {\"history\": [\"50\", \"172\"], \"k\": 10}")
    unknown = sorted(set(body) - {"history", "users", "k", "include_history", "skip_unknown", "fallback"})
    if unknown:
        raise BadRequest(f"unknown field \"{unknown[0]}\"; the fields are history (or users), k, include_history, "
                         "skip_unknown, fallback")
    k = body.get("k", default_k)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise BadRequest(f"\"k\" must be an integer from 1 to {MAX_K:,}, found {json.dumps(k)[:60]}")
    include_history = _flag(body, "include_history", False)
    skip_unknown = _flag(body, "skip_unknown", False)
    fallback = body.get("fallback", "none")
    if fallback not in FALLBACKS:
        raise BadRequest(f"\"fallback\" must be one of: {', '.join(FALLBACKS)}")
    if ("history" in body) == ("users" in body):
        raise BadRequest("give either \"history\": [item_id, ...] (one user) or \"users\": [{\"user_id\": ..., "
                         "\"history\": [...]}, ...]")
    if "history" in body:
        user_ids, histories = None, [_history(body["history"], "")]
    else:
        users = body["users"]
        if not isinstance(users, list) or not users:
            raise BadRequest("\"users\" must be a non-empty list of {\"user_id\": ..., \"history\": [...]}")
        user_ids, histories = [], []
        for n, user in enumerate(users):
            if not isinstance(user, dict) or "history" not in user or "user_id" not in user:
                raise BadRequest(f"users[{n}] must be an object {{\"user_id\": ..., \"history\": [item_id, ...]}}")
            user_id = item_key(user["user_id"])
            if user_id is None:
                raise BadRequest(f"users[{n}].user_id must be a string (or an integer)")
            user_ids.append(user_id)
            histories.append(_history(user["history"], f"users[{n}]: "))
    try:
        ranked = model.recommend_batch(histories, k, exclude_history=not include_history,
                                       skip_unknown=skip_unknown, fallback=fallback)
        popular = [fallback == "popular" and not len(model.indices(h, skip_unknown=True)) for h in histories]
    except MscgError as e:  # an unknown item, a history with no known item: worded for the Python API
        message = re.sub(r"^history (\d+): ", "" if user_ids is None else r"users[\1]: ", str(e))
        raise BadRequest(message.replace("skip_unknown=True", "\"skip_unknown\": true")
                         .replace("fallback=\"popular\"", "\"fallback\": \"popular\"")) from None
    answers = []
    for recs, marked in zip(ranked, popular):
        one = {"items": [i for i, _ in recs], "scores": [round(s, 6) for _, s in recs]}
        if marked:
            one["fallback"] = "popular"
        answers.append(one)
    if user_ids is None:
        return answers[0]
    return {"users": [{"user_id": u, **a} for u, a in zip(user_ids, answers)]}


def make_server(model: Model, host: str, port: int, default_k: int, on_error=None) -> ThreadingHTTPServer:
    """A threading HTTP server over `model` (not yet serving); `on_error(message)` hears of internal errors."""
    lock = threading.Lock()
    health = {"status": "ok", "kind": model.kind, "items": len(model.item_ids), "k": default_k,
              "model": str(model.path), "version": __version__}

    class Handler(BaseHTTPRequestHandler):
        server_version = f"mscg/{__version__}"

        def log_message(self, format, *args):  # no line per request
            pass

        def _send(self, status: int, obj: dict) -> None:
            data = (json.dumps(obj) + "\n").encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _route(self, method: str) -> None:
            path = self.path.split("?", 1)[0]
            routes = {"/health": "GET", "/recommend": "POST"}
            if path not in routes:
                self._send(HTTPStatus.NOT_FOUND, {"error": f"no such path {path}; use POST /recommend or GET /health"})
            elif routes[path] != method:
                self._send(HTTPStatus.METHOD_NOT_ALLOWED, {"error": f"{path} takes {routes[path]}, not {method}"})
            elif path == "/health":
                self._send(HTTPStatus.OK, health)
            else:
                self._recommend()

        def _recommend(self) -> None:
            try:
                length = int(self.headers.get("Content-Length", ""))
            except ValueError:
                self.close_connection = True
                return self._send(HTTPStatus.LENGTH_REQUIRED, {"error": "send the JSON body with a Content-Length"})
            if not 0 <= length <= MAX_BODY_BYTES:
                self.close_connection = True
                return self._send(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                                  {"error": f"the body must be at most {MAX_BODY_BYTES:,} bytes; split the batch"})
            try:
                body = json.loads(self.rfile.read(length))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                return self._send(HTTPStatus.BAD_REQUEST, {"error": f"the body is not JSON ({e}); send e.g. "
                                                                    "{\"history\": [\"50\", \"172\"]}"})
            try:
                with lock:
                    result = answer(model, body, default_k)
            except BadRequest as e:
                return self._send(HTTPStatus.BAD_REQUEST, {"error": str(e)})
            except Exception as e:  # noqa: BLE001 never a traceback to the client; one line for the operator
                if on_error is not None:
                    on_error(f"POST /recommend failed: {type(e).__name__}: {e}")
                return self._send(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"internal error ({type(e).__name__})"})
            self._send(HTTPStatus.OK, result)

        def do_GET(self):  # http.server calls do_<METHOD>
            self._route("GET")

        def do_POST(self):
            self._route("POST")

        def do_PUT(self):
            self._route("PUT")

        def do_DELETE(self):
            self._route("DELETE")

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server
