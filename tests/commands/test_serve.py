"""`mscg serve` as a client meets it: a real server process on a free port, spoken to over HTTP; and the same
application in this process (uvicorn in a thread), where its model calls can be counted or broken."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import queue
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

import mscg
from mscg.errors import DataError
from mscg.serve import MAX_BODY_BYTES, listen, make_app, make_server
from tests.helpers import Pipeline, build_tiny_pipeline, one_thread  # noqa: F401 (fixture)

HISTORY = ["i0", "i4", "i8"]
K = 4


@pytest.fixture(scope="module")
def pipe(tmp_path_factory) -> Pipeline:
    return build_tiny_pipeline(tmp_path_factory.mktemp("serve"), sasrec=False)


@pytest.fixture(scope="module")
def server(pipe):
    """`python -m mscg serve MODEL --port 0 -k 4`: (base URL, the process, its stderr lines so far)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "mscg", "serve", str(pipe.generator), "--port", "0", "-k", str(K),
                             "--device", "cpu"], stderr=subprocess.PIPE, text=True, env=env)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stderr], daemon=True).start()
    seen = []
    try:
        while True:
            line = lines.get(timeout=120)
            seen.append(line)
            found = re.search(r"at (http://127\.0\.0\.1:\d+) ", line)
            if found:
                break
        yield found.group(1), proc, seen, lines
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def call(url: str, body=None, *, raw: bytes | None = None, method: str | None = None) -> tuple[int, dict]:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def many(url: str, bodies: list) -> list[tuple[int, dict]]:
    """POST every body to url/recommend at once, one thread each, released together."""
    start = threading.Barrier(len(bodies))

    def one(body):
        start.wait()
        return call(f"{url}/recommend", body)

    with ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(one, bodies))


def expected(model, history, k: int) -> dict:
    want = model.recommend(history, k=k)
    return {"items": [i for i, _ in want], "scores": [round(s, 6) for _, s in want], "score_kind": model.score_kind}


def assert_one_line_error(status: int, got: dict, code: int, needle: str = "") -> None:
    assert status == code and set(got) == {"error"}, (status, got)
    assert needle in got["error"] and "\n" not in got["error"] and "Traceback" not in got["error"], got


def test_health_describes_the_model(server, pipe):
    url, *_ = server
    status, health = call(f"{url}/health")
    assert status == 200
    assert health["status"] == "ok" and health["kind"] == "mscg-generator" and health["k"] == K
    assert health["items"] == len(mscg.load(pipe.generator).item_ids)
    assert set(health) == {"status", "kind", "items", "k", "model", "version"}


def test_recommend_answers_what_the_python_api_gives(server, pipe):
    url, *_ = server
    model = mscg.load(pipe.generator, "cpu")
    status, got = call(f"{url}/recommend", {"history": HISTORY})  # k: the server's -k
    want = model.recommend(HISTORY, k=K)
    assert status == 200 and got["items"] == [i for i, _ in want] and not set(got["items"]) & set(HISTORY)
    assert got["scores"] == pytest.approx([s for _, s in want], abs=1e-5)
    assert got["score_kind"] == "log-probability" == model.score_kind  # as `mscg recommend` names them
    status, got = call(f"{url}/recommend", {"history": HISTORY, "k": 6, "include_history": True})
    assert status == 200 and got["items"] == [i for i, _ in model.recommend(HISTORY, k=6, exclude_history=False)]
    users = [{"user_id": "a", "history": HISTORY}, {"user_id": 7, "history": ["i1", "i5"]}]
    status, got = call(f"{url}/recommend", {"users": users, "k": 3})
    want = model.recommend_batch([HISTORY, ["i1", "i5"]], k=3)
    assert status == 200 and [u["user_id"] for u in got["users"]] == ["a", "7"]
    assert [u["items"] for u in got["users"]] == [[i for i, _ in w] for w in want]
    assert [u["score_kind"] for u in got["users"]] == ["log-probability"] * 2


def test_integer_ids_skip_unknown_and_the_popular_fallback(server, pipe):
    url, *_ = server
    model = mscg.load(pipe.generator, "cpu")
    status, got = call(f"{url}/recommend", {"history": ["i0", "zz"], "skip_unknown": True, "k": 3})
    assert status == 200 and got["items"] == [i for i, _ in model.recommend(["i0"], k=3)] and "fallback" not in got
    status, got = call(f"{url}/recommend", {"history": ["zz"], "skip_unknown": True, "fallback": "popular", "k": 3})
    assert status == 200 and got["fallback"] == "popular" and got["items"] == [i for i, _ in model.popular(3)]
    assert got["score_kind"] == "popularity"  # training counts, not log-probabilities
    status, got = call(f"{url}/recommend", {"users": [{"user_id": 10**20, "history": []}], "fallback": "popular"})
    assert status == 200 and got["users"][0]["user_id"] == str(10**20) and got["users"][0]["fallback"] == "popular"


@pytest.mark.parametrize("body, needle", [
    ({"history": "i0"}, "\"history\" must be a list"),
    ({"history": HISTORY, "k": 0}, "\"k\" must be an integer from 1 to 10,000"),
    ({"history": HISTORY, "k": 10_001}, "\"k\" must be an integer from 1 to 10,000"),
    ({"history": HISTORY, "k": True}, "\"k\" must be an integer"),
    ({"history": HISTORY, "include_history": "yes"}, "\"include_history\" must be true or false"),
    ({"history": HISTORY, "fallback": "random"}, "\"fallback\" must be one of: none, popular"),
    ({"histories": HISTORY}, "unknown field \"histories\""),
    ({"history": HISTORY, "users": [{"user_id": "a", "history": HISTORY}]}, "give either \"history\""),
    ({}, "give either \"history\""),
    ({"history": ["i0", 1.5]}, "\"history[1]\" must be an item id"),
    ({"history": ["x" * 300]}, "\"history[0]\" must be an item id: a string (or an integer) of at most 256"),
    ({"history": ["i0"] * 10_001}, "\"history\" has 10,001 items, more than 10,000"),
    ({"history": ["i0", "zz"]}, "'zz' is not in the catalogue"),
    ({"history": ["zz"], "skip_unknown": True}, "\"history\" has no item the model knows"),
    ({"users": [{"user_id": "a", "history": ["zz"]}]}, "users[0]: item 'zz'"),
    ({"users": [{"user_id": "a", "history": []}]}, "\"users[0].history\" has no item the model knows"),
    ({"users": [{"user_id": "a"}]}, "\"users[0].history\" is missing"),
    ({"users": [{"user_id": None, "history": HISTORY}]}, "\"users[0].user_id\" must be a string (or an integer)"),
    ({"users": ["a"]}, "\"users[0]\" must be an object"),
    ({"users": []}, "\"users\" must be a non-empty list"),
    ({"users": [{"user_id": n, "history": ["i0"]} for n in range(200)], "k": 10_000}, "split the batch"),
    ([1, 2], "must be a JSON object"),
])
def test_a_bad_request_gets_a_400_naming_the_field(server, body, needle):
    url, *_ = server
    assert_one_line_error(*call(f"{url}/recommend", body), 400, needle)


@pytest.mark.parametrize("raw, needle", [
    (b"{not json", "not JSON"),
    (b"", "not JSON"),
    (b"\xff\xfe{", "not JSON"),
    (b'{"history": [' + b"1" * 5000 + b"]}", "a number of 5,000 digits"),
    (b'{"k": ' + b"9" * 300 + b', "history": ["i0"]}', "a number of 300 digits"),
    (b"[" * 100_000 + b"]" * 100_000, "nested 100,000 levels deep"),
    (b'{"history": ' + b"[" * 40 + b"]" * 40 + b"}", "nested 41 levels deep"),
    (b'{"history": ["' + b"[" * 200 + b'"]}', "'[[[["),  # brackets inside a string do not count
])
def test_bodies_that_would_break_the_parser_get_a_400(server, raw, needle):
    url, proc, *_ = server
    assert_one_line_error(*call(f"{url}/recommend", raw=raw), 400, needle)
    assert proc.poll() is None


def test_unknown_paths_and_methods_get_json_errors(server):
    url, *_ = server
    assert_one_line_error(*call(f"{url}/nowhere"), 404, "no such path")
    assert_one_line_error(*call(f"{url}/health", {"history": HISTORY}), 405, "/health takes GET, not POST")
    assert_one_line_error(*call(f"{url}/recommend"), 405, "/recommend takes POST, not GET")
    for method in ("OPTIONS", "PATCH", "PUT", "DELETE"):
        assert_one_line_error(*call(f"{url}/recommend", {"history": HISTORY}, method=method), 405,
                              f"/recommend takes POST, not {method}")
        assert_one_line_error(*call(f"{url}/health", method=method), 405, f"/health takes GET, not {method}")


def raw_exchange(url: str, head: bytes, body_parts: list[bytes]) -> tuple[int, dict, dict]:
    """Send a request by hand (headers, then the body parts); (status, headers, JSON body)."""
    netloc = urllib.parse.urlsplit(url).netloc
    connection = http.client.HTTPConnection(netloc, timeout=60)
    connection.connect()
    connection.sock.sendall(head)
    with contextlib.suppress(OSError):  # the server may answer (and close) before the body is all sent
        for part in body_parts:
            connection.sock.sendall(part)
    response = http.client.HTTPResponse(connection.sock, method="POST")
    response.begin()
    got = response.status, dict(response.getheaders()), json.loads(response.read())
    connection.close()
    return got


def test_a_body_over_the_limit_gets_a_413(server):
    url, proc, *_ = server
    head = (f"POST /recommend HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {MAX_BODY_BYTES + 1}\r\n\r\n").encode()
    status, _, got = raw_exchange(url, head, [])  # refused from Content-Length, before any body byte
    assert_one_line_error(status, got, 413, "at most 16,777,216 bytes")
    head = (b"POST /recommend HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")
    chunk = 2**20
    parts = [b"%x\r\n" % chunk + b" " * chunk + b"\r\n" for _ in range(MAX_BODY_BYTES // chunk)]
    status, _, got = raw_exchange(url, head, [*parts, b"1\r\n \r\n0\r\n\r\n"])
    assert_one_line_error(status, got, 413, "at most 16,777,216 bytes")
    assert proc.poll() is None and call(f"{url}/health")[0] == 200


def test_a_client_gone_mid_body_is_not_an_error(server):
    """(the last test checks that the operator heard nothing of it)"""
    url, proc, *_ = server
    netloc = urllib.parse.urlsplit(url).netloc
    host, port = netloc.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        sock.sendall(b"POST /recommend HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"history\": [")
    time.sleep(0.2)
    assert proc.poll() is None and call(f"{url}/health")[0] == 200


def test_no_python_version_in_the_headers(server):
    url, *_ = server
    with urllib.request.urlopen(f"{url}/health", timeout=60) as response:
        headers = dict(response.getheaders())
    assert headers.get("server", headers.get("Server", "mscg")).startswith("mscg")
    assert not any("python" in value.lower() or "uvicorn" in value.lower() for value in headers.values())


def test_openapi_documents_the_request_and_answer(server):
    url, *_ = server
    with urllib.request.urlopen(f"{url}/openapi.json", timeout=60) as response:
        schema = json.loads(response.read())
    post = schema["paths"]["/recommend"]["post"]
    ref = post["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    request = schema["components"]["schemas"][ref.rsplit("/", 1)[1]]
    assert set(request["properties"]) == {"history", "users", "k", "include_history", "skip_unknown", "fallback"}
    assert {"user_id", "history"} <= set(schema["components"]["schemas"]["User"]["properties"])
    assert {"200", "400", "413"} <= set(post["responses"]) and "/health" in schema["paths"]
    with urllib.request.urlopen(f"{url}/docs", timeout=60) as response:
        assert response.status == 200 and b"swagger" in response.read().lower()


def test_200_concurrent_requests_are_all_answered(server, pipe):
    url, *_ = server
    model = mscg.load(pipe.generator, "cpu")
    bodies = [{"history": [f"i{(n + j) % 40}" for j in range(1 + n % 5)], "k": 3} for n in range(200)]
    results = many(url, bodies)
    assert [status for status, _ in results] == [200] * 200
    for body, (_, got) in zip(bodies, results):  # batched, up to float32 rounding in the batched products
        want = expected(model, body["history"], 3)
        assert got["items"] == want["items"] and got["scores"] == pytest.approx(want["scores"], abs=1e-5)


def test_zz_sigterm_stops_it_cleanly(server):
    """(runs last in this module) SIGTERM: the process ends with exit 0, no traceback on stderr."""
    url, proc, seen, lines = server
    proc.terminate()
    assert proc.wait(timeout=60) == 0
    while not lines.empty():
        seen.append(lines.get())
    text = "".join(seen)
    assert "Traceback" not in text and "stopped" in text and "warning" not in text
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"{url}/health", timeout=5)


# ---- the application in this process ---------------------------------------------------------------------

@contextlib.contextmanager
def running(app):
    """`app` on uvicorn in a thread, on a free port: its base URL."""
    sock = listen("127.0.0.1", 0)
    server = make_server(app)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline
            time.sleep(0.01)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=60)
        sock.close()


@pytest.fixture(scope="module")
def model(pipe):
    return mscg.load(pipe.generator, "cpu")


def slowed(model, seconds: float, calls: list):
    """Make each model call take `seconds` longer and record its number of histories, so that requests
    sent together queue up behind the first."""
    rank = model.rank_indices

    def slow(histories, k, **kwargs):
        calls.append(len(histories))
        time.sleep(seconds)
        return rank(histories, k, **kwargs)

    return slow


def test_concurrent_requests_are_ranked_together_and_answered_as_alone(model, monkeypatch):
    calls: list[int] = []
    monkeypatch.setattr(model, "rank_indices", slowed(model, 0.2, calls))
    bodies = [{"history": [f"i{(3 * n + j) % 40}" for j in range(1 + n % 4)], "k": 3 + n % 2,
               "include_history": n % 3 == 0} for n in range(32)]
    app = make_app(model, K)
    with running(app) as url:
        results = many(url, bodies)
    assert [status for status, _ in results] == [200] * 32
    assert app.state.batcher.requests == 32 and sum(calls) == 32
    assert len(calls) <= 10, f"{len(calls)} model calls for 32 requests sent at once: {calls}"
    monkeypatch.undo()
    for body, (_, got) in zip(bodies, results):
        want = model.recommend(body["history"], k=body["k"], exclude_history=not body["include_history"])
        assert got["items"] == [i for i, _ in want]
        assert got["scores"] == pytest.approx([s for _, s in want], abs=1e-5)


def test_without_batching_the_answers_are_bit_identical(model):
    bodies = [{"history": [f"i{(5 * n + j) % 40}" for j in range(1 + n % 3)], "k": 5} for n in range(8)]
    with running(make_app(model, K, max_batch=1)) as url:
        results = many(url, bodies)
    assert [got for _, got in results] == [expected(model, body["history"], 5) for body in bodies]


def test_a_bad_request_in_a_concurrent_batch_fails_alone(model, monkeypatch):
    calls: list[int] = []
    monkeypatch.setattr(model, "rank_indices", slowed(model, 0.2, calls))
    bad = {5: {"history": ["i0", "zz"]}, 9: {"history": ["i1"], "k": 0}, 13: {"history": [], "fallback": "no"}}
    bodies = [bad.get(n, {"history": [f"i{n}", f"i{n + 1}"]}) for n in range(16)]
    with running(make_app(model, K)) as url:
        results = many(url, bodies)
    assert [status for status, _ in results] == [400 if n in bad else 200 for n in range(16)]
    assert "'zz' is not in the catalogue" in results[5][1]["error"] and "\"k\"" in results[9][1]["error"]
    assert sum(calls) == 13 and all(len(got["items"]) == K for status, got in results if status == 200)


def test_an_internal_error_is_a_500_json_and_one_line_for_the_operator(model, monkeypatch):
    told: list[str] = []
    with running(make_app(model, K, on_error=told.append)) as url:
        monkeypatch.setattr(model, "rank_indices", lambda histories, k, **kw: [[(0, float("nan"))]] * len(histories))
        assert_one_line_error(*call(f"{url}/recommend", {"history": HISTORY}), 500, "internal error")

        def broken(histories, k, **kwargs):
            raise RuntimeError("out of memory\nsecond line")

        monkeypatch.setattr(model, "rank_indices", broken)
        assert_one_line_error(*call(f"{url}/recommend", {"history": HISTORY}), 500, "internal error (RuntimeError)")

        def diverged(histories, k, **kwargs):  # mscg.api's own refusal of non-finite scores: not the client's fault
            raise DataError("the model gives a non-finite score (NaN or infinity)")

        monkeypatch.setattr(model, "rank_indices", diverged)
        assert_one_line_error(*call(f"{url}/recommend", {"history": HISTORY}), 500, "internal error (DataError)")
        monkeypatch.undo()
        assert call(f"{url}/recommend", {"history": HISTORY})[0] == 200  # the model's thread lives on
    assert len(told) == 3 and "not a finite number" in told[0] and "out of memory second line" in told[1]
    assert "non-finite score" in told[2] and all("\n" not in line for line in told)


def test_the_popular_fallback_of_a_model_without_counts_is_a_400(model, monkeypatch):
    from mscg.popularity import no_counts_error

    def no_counts(k, asked_by):
        raise no_counts_error(asked_by, model.path)

    monkeypatch.setattr(model, "popular_indices", no_counts)
    with running(make_app(model, K)) as url:
        body = {"users": [{"user_id": "a", "history": []}], "fallback": "popular"}
        assert_one_line_error(*call(f"{url}/recommend", body), 400, "\"fallback\": \"popular\" needs the model's")
        assert call(f"{url}/recommend", {"history": HISTORY, "fallback": "popular"})[0] == 200
