"""The server below the request level: framing, connections, timeouts, reloads, logs.

Each test is one of the problems a hand-written HTTP layer had (issue 16, problems 1-9), driven
by a real client against ``recsys-ssl serve`` in a subprocess (raw sockets where the problem is
in the bytes); each failed on the ``http.server`` implementation and passes on uvicorn.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse

import numpy as np
import pytest
import requests
import test_export_fixtures as fx

from recsys_ssl import index as index_lib

TIMEOUT_S = 1.0  # --timeout-keep-alive and --timeout-body of the server under test
BACKLOG = 1024
POLL_S = 0.2


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    fx.exported(tmp_path_factory)
    export_dir = fx.copy_export(tmp_path_factory.mktemp("hardening"), tmp_path_factory)
    log: list[str] = []
    proc, url = fx.start_server(
        export_dir,
        "--timeout-keep-alive",
        str(TIMEOUT_S),
        "--timeout-body",
        str(TIMEOUT_S),
        "--backlog",
        str(BACKLOG),
        "--poll-seconds",
        str(POLL_S),
        "--max-batch",
        "8",
        log=log,
    )
    yield proc, url, export_dir, log
    fx.stop_server(proc)


def _address(url: str) -> tuple[str, int]:
    parsed = urllib.parse.urlparse(url)
    return parsed.hostname, parsed.port


def _raw(url: str, request: bytes, timeout: float = 30) -> bytes:
    """Sends bytes on a fresh connection; returns everything until the server closes it."""
    with socket.create_connection(_address(url), timeout=timeout) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


def _status_and_body(response: bytes) -> tuple[int, dict]:
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def _metric(url: str, name: str, **labels) -> float:
    text = requests.get(f"{url}/metrics", timeout=30).text
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(name + ("{" + want + "}" if want else " ")) or (
            want and line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items())
        ):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


# -- 1, 2, 5: what the parser and the JSON decoder must reject ----------------------------------------
@pytest.mark.timeout(120)
def test_an_integer_of_5000_digits_is_a_400_not_a_500(server):
    proc, url, _, _ = server
    body = ('{"k": ' + "1" * 5000 + "}").encode()
    r = requests.post(f"{url}/v1/models/retrieval:predict", data=body, timeout=30)
    assert r.status_code == 400, r.text
    assert "4300" in r.json()["error"] and "malformed JSON" in r.json()["error"]


@pytest.mark.timeout(120)
def test_a_content_length_of_unicode_digits_is_a_400(server):
    proc, url, _, _ = server
    code, body = _status_and_body(
        _raw(url, "POST /v1/models/tiny:predict HTTP/1.1\r\nHost: x\r\nContent-Length: \u00b2\r\n\r\n".encode())
    )
    assert code == 400 and "Content-Length" in body["error"], body


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    "headers",
    [b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", b"Content-Length: 5\r\nContent-Length: 40\r\n"],
    ids=["cl+te", "two-cl"],
)
def test_ambiguous_framing_is_rejected_and_nothing_is_smuggled(server, headers):
    proc, url, _, _ = server
    smuggled = b"GET /v1/models/tiny HTTP/1.1\r\nHost: x\r\n\r\n"
    body = b"0\r\n\r\n" + smuggled
    response = _raw(url, b"POST /v1/models/tiny:predict HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n" + body)
    assert response.count(b"HTTP/1.1 ") == 1, response  # one answer: the smuggled GET was never run
    code, answer = _status_and_body(response)
    assert code == 400 and "malformed HTTP request" in answer["error"], answer


# -- 3: the listen backlog and a burst of new connections ------------------------------------------
def _listen_overflows() -> int:
    lines = pathlib.Path("/proc/net/netstat").read_text().splitlines()
    for names, values in zip(lines[::2], lines[1::2]):
        if names.startswith("TcpExt:"):
            return int(dict(zip(names.split()[1:], values.split()[1:]))["ListenOverflows"])
    raise AssertionError("no TcpExt line in /proc/net/netstat")


@pytest.mark.timeout(180)
def test_the_listen_backlog_holds_a_burst_of_new_connections(server):
    proc, url, _, _ = server
    host, port = _address(url)
    ss = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, check=True).stdout
    assert int(ss.split()[2]) == min(BACKLOG, int(pathlib.Path("/proc/sys/net/core/somaxconn").read_text())), ss

    clients = 128  # each opens a new connection for its one request, all at once (a proxy's pattern)
    barrier, statuses, latencies = threading.Barrier(clients), [], []
    body = json.dumps({"instances": fx.query_instances(1), "k": 5}).encode()

    def one() -> None:
        barrier.wait()
        start = time.perf_counter()
        try:
            statuses.append(
                _status_and_body(
                    _raw(
                        url,
                        b"POST /v1/models/tiny:predict HTTP/1.1\r\nHost: x\r\n"
                        b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body),
                    )
                )[0]
            )
        except OSError as error:  # a reset connection: what a full backlog does
            statuses.append(repr(error))
        latencies.append(time.perf_counter() - start)

    before = _listen_overflows()
    threads = [threading.Thread(target=one) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [200] * clients, statuses
    assert _listen_overflows() == before
    # A dropped SYN is retried after 1 s: no connection may have waited for that.
    assert max(latencies) < 1.0 or sorted(latencies)[-3] < 1.0, sorted(latencies)[-5:]


# -- 4: idle and half-sent connections ---------------------------------------------------------------
def _threads(pid: int) -> int:
    status = pathlib.Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^Threads:\s+(\d+)", status, re.M)[1])


@pytest.mark.timeout(180)
def test_idle_and_half_sent_connections_are_closed_within_the_timeout(server):
    proc, url, _, _ = server
    address = _address(url)
    threads_before = _threads(proc.pid)
    opened = []
    for i in range(500):  # idle, half a request head, and a head whose body never comes
        sock = socket.create_connection(address, timeout=30)
        if i % 3 == 1:
            sock.sendall(b"POST /v1/models/tiny:predict HTTP/1.1\r\nHost: x\r\n")
        elif i % 3 == 2:
            sock.sendall(b'POST /v1/models/tiny:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"inst')
        opened.append((i % 3, sock))
    opened_at = time.monotonic()
    assert _threads(proc.pid) <= threads_before + 2  # no thread per connection

    # Valid requests are answered meanwhile.
    with requests.Session() as session:
        for _ in range(20):
            r = session.post(
                f"{url}/v1/models/tiny:predict", json={"instances": fx.query_instances(1), "k": 3}, timeout=30
            )
            assert r.status_code == 200, r.text

    closed_by = {}
    for kind, sock in opened:
        sock.settimeout(max(0.1, opened_at + TIMEOUT_S + 5 - time.monotonic()))
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except TimeoutError:
            pytest.fail(f"a connection of kind {kind} was still open {TIMEOUT_S + 5:.0f}s after it was opened")
        closed_by.setdefault(kind, set()).add(int(data.split()[1]) if data else None)
        sock.close()
    assert closed_by == {0: {None}, 1: {408}, 2: {408}}, closed_by  # idle: just closed; half-sent: told why
    assert proc.poll() is None


# -- 6, 7: integrity-checked reloads -------------------------------------------------------------------
def _copy_version(export_dir: pathlib.Path, new: int, manifest_version: int | None = None) -> pathlib.Path:
    """A copy of version 1 as version ``new`` (staged, then renamed in, as an export publishes)."""
    model_dir = export_dir / "tiny"
    staging = model_dir / f".tmp-{new}"
    shutil.copytree(model_dir / "1", staging)
    manifest = json.loads((staging / index_lib.MANIFEST).read_text())
    manifest["version"] = new if manifest_version is None else manifest_version
    (staging / index_lib.MANIFEST).write_text(json.dumps(manifest))
    return staging


def _publish(staging: pathlib.Path, new: int) -> pathlib.Path:
    final = staging.parent / str(new)
    os.rename(staging, final)
    return final


def _statuses(url: str) -> dict[str, dict]:
    r = requests.get(f"{url}/v1/models/tiny", timeout=30)
    assert r.status_code == 200, r.text
    return {e["version"]: e for e in r.json()["model_version_status"]}


def _wait_for(predicate, what: str, seconds: float = 60) -> None:
    deadline = time.time() + seconds
    while not predicate():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(POLL_S)


@pytest.mark.timeout(240)
def test_versions_with_wrong_files_are_never_served_and_are_shown_failed(server):
    proc, url, export_dir, _ = server
    instances = fx.query_instances(3, seed=21)
    before = requests.post(f"{url}/v1/models/tiny:predict", json={"instances": instances, "k": 5}, timeout=30).json()

    # ScaNN's own copy of the items with the wrong dimension, and one of the right dimension but wrong values.
    staging = _copy_version(export_dir, 20)
    embeddings = np.load(staging / "index" / "dataset.npy")
    np.save(
        staging / "index" / "dataset.npy", np.random.default_rng(0).normal(size=(len(embeddings), 3)).astype(np.float32)
    )
    _publish(staging, 20)
    staging = _copy_version(export_dir, 21)
    np.save(
        staging / "index" / "dataset.npy", np.random.default_rng(1).normal(size=embeddings.shape).astype(np.float32)
    )
    _publish(staging, 21)
    # Embeddings that do not match the manifest's checksum.
    staging = _copy_version(export_dir, 22)
    item_embeddings = np.load(staging / "index" / index_lib.EMBEDDINGS_FILE)
    np.save(staging / "index" / index_lib.EMBEDDINGS_FILE, item_embeddings[::-1].copy())
    _publish(staging, 22)

    _wait_for(lambda: {"20", "21", "22"} <= set(_statuses(url)), "the three bad versions to be recorded")
    statuses = _statuses(url)
    assert statuses["1"]["state"] == "AVAILABLE"
    for version in ("20", "21", "22"):
        entry = statuses[version]
        assert entry["state"] == "END" and entry["status"]["error_code"] != "OK", entry
        assert f"/{version}" in entry["status"]["error_message"], entry  # names the folder
    assert "embedding_checksum" in statuses["22"]["status"]["error_message"]
    assert "disagree" in statuses["21"]["status"]["error_message"]
    after = requests.post(f"{url}/v1/models/tiny:predict", json={"instances": instances, "k": 5}, timeout=30)
    assert after.status_code == 200 and after.json() == before
    r = requests.post(f"{url}/v1/models/tiny/versions/21:predict", json={"instances": instances}, timeout=30)
    assert r.status_code == 404 and "disagree" in r.json()["error"]
    assert _metric(url, "recsys_ssl_served_version", model="tiny") == 1


@pytest.mark.timeout(240)
def test_a_copied_version_folder_is_rejected_once_and_retried_only_when_its_files_change(server):
    proc, url, export_dir, _ = server
    _publish(_copy_version(export_dir, 30, manifest_version=1), 30)  # `cp -r 1 30`: the manifest says 1
    _wait_for(lambda: "30" in _statuses(url), "version 30 to be recorded")
    entry = _statuses(url)["30"]
    assert entry["state"] == "END" and entry["status"]["error_code"] == "FAILED_PRECONDITION"
    assert "manifest says version 1" in entry["status"]["error_message"]
    assert requests.get(f"{url}/v1/models/tiny/versions/30", timeout=30).json()["model_version_status"] == [entry]

    failures = _metric(url, "recsys_ssl_reloads_total", result="failure")
    time.sleep(15 * POLL_S)  # fifteen polls: nothing is retried
    assert _metric(url, "recsys_ssl_reloads_total", result="failure") == failures
    manifest = export_dir / "tiny" / "30" / index_lib.MANIFEST
    manifest.write_text(manifest.read_text() + " ")  # its files change: tried once more
    _wait_for(lambda: _metric(url, "recsys_ssl_reloads_total", result="failure") == failures + 1, "one retry")
    time.sleep(10 * POLL_S)
    assert _metric(url, "recsys_ssl_reloads_total", result="failure") == failures + 1
    assert _statuses(url)["1"]["state"] == "AVAILABLE"


# -- 8: logs ------------------------------------------------------------------------------------------
@pytest.mark.timeout(180)
def test_hostile_traffic_and_disconnects_leave_one_line_logs_and_no_tracebacks(server):
    proc, url, _, log = server
    body = json.dumps({"instances": fx.query_instances(4), "k": 10}).encode()
    request = b"POST /v1/models/tiny:predict HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    for i in range(60):  # clients that go away: before the body ends, and before the answer
        with socket.create_connection(_address(url), timeout=30) as sock:
            sock.sendall(request[: len(request) - 5] if i % 2 else request)
    requests.post(f"{url}/v1/models/tiny:predict", data=b'{"k": ' + b"9" * 5000 + b"}", timeout=30)
    _raw(url, b"POST /v1/models/tiny:predict HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab")
    assert requests.get(f"{url}/v1/models/tiny", timeout=30).status_code == 200
    time.sleep(0.5)
    text = "".join(log)
    assert "Traceback" not in text, text[-3000:]
    assert "rejected a request" in text  # the parser's rejection is logged, in one line
    assert proc.poll() is None


@pytest.mark.timeout(180)
def test_an_internal_error_is_a_500_with_one_log_line_and_the_traceback_only_with_debug(tmp_path_factory, caplog):
    import asyncio

    from recsys_ssl.serve import cli

    _, export_dir, _ = fx.exported(tmp_path_factory)
    model_dir = index_lib.resolve_model_dir(export_dir, None)
    body = json.dumps({"instances": fx.query_instances(1)}).encode()

    def ask(app) -> tuple[int, dict]:
        sent = []

        async def receive():
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message):
            sent.append(message)

        scope = {
            "type": "http",
            "http_version": "1.1",
            "method": "POST",
            "path": "/v1/models/tiny:predict",
            "headers": [(b"content-length", str(len(body)).encode())],
        }
        asyncio.run(app(scope, receive, send))
        return sent[0]["status"], json.loads(sent[1]["body"])

    for debug in (False, True):
        args = cli._parser().parse_args(["--poll-seconds", "0"] + (["--debug"] if debug else []))
        app = cli.build_app(model_dir, args)

        def broken(*a, **k):
            raise RuntimeError("the index is gone")

        app.state.retriever.retrieve = broken
        caplog.clear()
        status, answer = ask(app)
        app.close()
        assert status == 500 and answer == {"error": "internal error: RuntimeError"}  # no internals to clients
        messages = [r.getMessage() for r in caplog.records if r.name == "recsys_ssl.serve"]
        assert any(
            "internal error on POST /v1/models/tiny:predict: RuntimeError: the index is gone" in m for m in messages
        ), messages
        assert any("Traceback" in m for m in messages) == debug, messages


# -- 9: flags -----------------------------------------------------------------------------------------
@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    "flags,words",
    [
        (["--port", "99999"], "outside 0-65535"),
        (["--port", "http"], "not a port number"),
        (["--backlog", "0"], "must be > 0"),
    ],
)
def test_a_bad_flag_is_a_one_line_error(tmp_path, flags, words):
    run = subprocess.run(
        [fx.PYTHON, "-m", "recsys_ssl.cli", "serve", "--export-dir", str(tmp_path), *flags],
        cwd=fx.ROOT,
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert run.returncode == 2 and words in run.stderr, run.stderr
    assert "Traceback" not in run.stderr + run.stdout


@pytest.mark.timeout(120)
def test_a_port_in_use_is_a_one_line_error(server, tmp_path_factory):
    proc, url, export_dir, _ = server
    run = subprocess.run(
        [fx.PYTHON, "-m", "recsys_ssl.cli", "serve", "--export-dir", str(export_dir), "--port", str(_address(url)[1])],
        cwd=fx.ROOT,
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert run.returncode == 2 and "cannot listen on" in run.stderr, run.stderr
    assert "Traceback" not in run.stderr + run.stdout


# -- --workers ---------------------------------------------------------------------------------------
@pytest.mark.timeout(240)
def test_worker_processes_share_the_port_and_answer_the_same(tmp_path_factory):
    (query_tower, _), export_dir, _ = fx.exported(tmp_path_factory)
    proc, url = fx.start_server(export_dir, "--workers", "2", "--poll-seconds", "0")
    try:
        children = pathlib.Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
        _wait_for(lambda: len(children.read_text().split()) >= 2, "two worker processes")  # + multiprocessing's helper
        instances = fx.query_instances(4, seed=41)
        answers = []
        for _ in range(12):  # a new connection each: the kernel hands them to either worker
            r = requests.post(
                f"{url}/v1/models/tiny:predict",
                json={"instances": instances, "k": 5},
                headers={"Connection": "close"},
                timeout=60,
            )
            assert r.status_code == 200, r.text
            answers.append(r.json())
        assert all(a == answers[0] for a in answers)
        assert "recsys_ssl_requests_total" in requests.get(f"{url}/metrics", timeout=30).text
    finally:
        fx.stop_server(proc)
