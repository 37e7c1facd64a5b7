"""`mscg serve` as a client meets it: a real server process on a free port, spoken to over HTTP."""

from __future__ import annotations

import json
import os
import queue
import re
import subprocess
import sys
import threading
import urllib.error
import urllib.request

import pytest

import mscg
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


def call(url: str, body=None, *, raw: bytes | None = None) -> tuple[int, dict]:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_health_describes_the_model(server, pipe):
    url, *_ = server
    status, health = call(f"{url}/health")
    assert status == 200
    assert health["status"] == "ok" and health["kind"] == "mscg-generator" and health["k"] == K
    assert health["items"] == len(mscg.load(pipe.generator).item_ids)


def test_recommend_answers_what_the_python_api_gives(server, pipe):
    url, *_ = server
    model = mscg.load(pipe.generator, "cpu")
    status, got = call(f"{url}/recommend", {"history": HISTORY})  # k: the server's -k
    want = model.recommend(HISTORY, k=K)
    assert status == 200 and got["items"] == [i for i, _ in want] and not set(got["items"]) & set(HISTORY)
    assert got["scores"] == pytest.approx([s for _, s in want], abs=1e-5)
    status, got = call(f"{url}/recommend", {"history": HISTORY, "k": 6, "include_history": True})
    assert status == 200 and got["items"] == [i for i, _ in model.recommend(HISTORY, k=6, exclude_history=False)]
    users = [{"user_id": "a", "history": HISTORY}, {"user_id": 7, "history": ["i1", "i5"]}]
    status, got = call(f"{url}/recommend", {"users": users, "k": 3})
    want = model.recommend_batch([HISTORY, ["i1", "i5"]], k=3)
    assert status == 200 and [u["user_id"] for u in got["users"]] == ["a", "7"]
    assert [u["items"] for u in got["users"]] == [[i for i, _ in w] for w in want]


@pytest.mark.parametrize("body, needle", [
    ({"history": "i0"}, "\"history\" must be a list"),
    ({"history": HISTORY, "k": 0}, "\"k\" must be an integer"),
    ({"history": HISTORY, "include_history": "yes"}, "\"include_history\" must be true or false"),
    ({"histories": HISTORY}, "unknown field \"histories\""),
    ({"history": ["i0", "zz"]}, "'zz' is not in the catalogue"),
    ({"users": [{"user_id": "a", "history": ["zz"]}]}, "users[0]: item 'zz'"),
    ([1, 2], "must be a JSON object"),
])
def test_a_bad_request_gets_a_400_naming_the_field(server, body, needle):
    url, *_ = server
    status, got = call(f"{url}/recommend", body)
    assert status == 400 and needle in got["error"] and "\n" not in got["error"]


def test_not_json_unknown_paths_and_methods(server):
    url, *_ = server
    status, got = call(f"{url}/recommend", raw=b"{not json")
    assert status == 400 and "not JSON" in got["error"]
    assert call(f"{url}/nowhere")[0] == 404
    assert call(f"{url}/health", {"history": HISTORY})[0] == 405


def test_zz_sigterm_stops_it_cleanly(server):
    """(runs last in this module) SIGTERM: the process ends with exit 0, no traceback on stderr."""
    url, proc, seen, lines = server
    proc.terminate()
    assert proc.wait(timeout=60) == 0
    while not lines.empty():
        seen.append(lines.get())
    text = "".join(seen)
    assert "Traceback" not in text and "stopped" in text
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"{url}/health", timeout=5)
