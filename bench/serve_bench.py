"""Serving benchmark: (a) ScaNN vs numpy brute force, (b) the HTTP server under load.

(a) N items x 64 dims (default 1M). ``--corpus``:

    ``synthetic_catalog`` (default): the project's own catalog,
        ``datasets.synthetic_catalog.generate_items(N)`` and its ``item_latents`` (each item's
        vector derived from its features: what a trained item tower learns to approximate),
        queries from ``generate_queries`` + ``query_latents`` (1,000 held out for tuning, the
        rest fresh, disjoint rows of one draw). The latents have ``LATENT_DIM`` (16) dims and
        the issue fixes 64, so they are mapped by a fixed seeded map with orthonormal columns
        (inner products, hence exact neighbours, unchanged), then L2-normalised.
    ``clustered``: a mixture of 1,000 Gaussians in 64 dims (generic "learned embeddings").
    ``uniform`` (``--uniform``): uniform on the sphere, the structureless worst case.

    ScaNN is tuned with ``recsys_ssl.index.tune`` to Recall@10 >= 0.95 on held-out queries,
    then measured on *fresh* queries: Recall@10 against exact search, and queries per second,
    single-query (the serving pattern) and batched, for ScaNN and for numpy brute force
    (each: one warm-up run, then the best of 3 timed runs; 2 for batched brute force).
(b) The index from (a) is exported with small query/item towers (64-d output) and served by
    ``recsys-ssl serve`` in a subprocess; a second process drives it on loopback with
    ``--clients`` concurrent keep-alive clients for ``--duration`` seconds and reports
    p50/p99 latency, QPS and errors, and the server's CPU-seconds per request (``/proc``: user +
    system time of the server process and its children over the phase, divided by the requests
    answered), which other jobs on the cores move far less than QPS.

    .venv/bin/python bench/serve_bench.py                      # the full run (~5-10 min on 2 cores)
    .venv/bin/python bench/serve_bench.py --num-items 100000 --duration 10   # a quick one
    .venv/bin/python bench/serve_bench.py --corpus uniform --skip-server      # (a) only

Prints a table and writes JSON (``--output``, default runs/bench/serve_bench.json).
All timings are in the same process, so the ratios are what to read; absolute numbers
depend on the machine (and on whatever else it runs).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def clustered_unit_vectors(
    n: int, dim: int, seed: int, clusters: int = 1000, spread: float = 0.6, uniform: bool = False
) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(12345).normal(size=(clusters, dim)).astype(np.float32)
    out = np.empty((n, dim), np.float32)
    for start in range(0, n, 200_000):  # chunks: bounded temporary memory
        m = min(200_000, n - start)
        x = rng.normal(size=(m, dim)).astype(np.float32)
        if not uniform:
            x = centres[rng.integers(clusters, size=m)] + spread * x
        out[start : start + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def to_unit_vectors(latents: np.ndarray, dim: int, seed: int = 0) -> np.ndarray:
    """[n, L] latents -> [n, dim] float32 unit vectors through a fixed seeded linear map.

    dim >= L: a [L, dim] map with orthonormal rows (Q of a Gaussian's QR), an isometry, so
    inner products and exact neighbours are the latents' own; dim < L: a Gaussian random
    projection (Johnson-Lindenstrauss). Then each row is L2-normalised (the index's contract).
    """
    latent_dim = latents.shape[1]
    gaussian = np.random.default_rng([seed, 64]).normal(size=(max(dim, latent_dim), min(dim, latent_dim)))
    if dim >= latent_dim:
        q, _ = np.linalg.qr(gaussian)  # [dim, L], orthonormal columns
        projection = q.T
    else:
        projection = gaussian / np.sqrt(dim)  # [L, dim]
    out = (np.asarray(latents, np.float64) @ projection).astype(np.float32)
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def synthetic_catalog_vectors(num_items: int, num_queries: int, dim: int) -> tuple[np.ndarray, list[str], np.ndarray]:
    """(items [N, dim], item ids, queries [num_queries, dim]) from the synthetic catalog (seed 0).

    Queries are rows of one ``generate_queries`` draw: ``query_latents`` must use the items'
    seed (it picks the shared country latents), and its noise is drawn per row, so distinct
    rows are distinct queries; callers split them into held-out and fresh.
    """
    from recsys_ssl.datasets import synthetic_catalog as catalog

    items = catalog.generate_items(num_items, seed=0)
    ids = [i.decode() for i in items["item_id"]]
    latents = catalog.item_latents(items, seed=0)
    del items  # ~1M x 11 Python objects
    item_vectors = to_unit_vectors(latents, dim)
    del latents
    queries = catalog.query_latents(catalog.generate_queries(num_queries, seed=0), seed=0)
    return item_vectors, ids, to_unit_vectors(queries, dim)


def corpus(args) -> tuple[np.ndarray, list[str], np.ndarray, np.ndarray]:
    """(items [N, dim], ids, tuning queries [1000, dim], fresh queries [num_queries, dim])."""
    if args.corpus == "synthetic_catalog":
        items, ids, queries = synthetic_catalog_vectors(args.num_items, 1000 + args.num_queries, args.dim)
        return items, ids, queries[:1000], queries[1000:]
    uniform = args.corpus == "uniform"
    items = clustered_unit_vectors(args.num_items, args.dim, seed=0, uniform=uniform)
    tuning = clustered_unit_vectors(1000, args.dim, seed=1, uniform=uniform)
    fresh = clustered_unit_vectors(args.num_queries, args.dim, seed=2, uniform=uniform)
    return items, [f"item{i}" for i in range(args.num_items)], tuning, fresh


def qps(fn, count: int, repeats: int = 3, warm_up_s: float = 2.0) -> float:
    """Queries per second of ``fn`` (which answers ``count`` queries): best of ``repeats`` runs
    after untimed warm-up runs (at least one, and at least ``warm_up_s`` seconds: on this VM a
    cold single-query ScaNN loop runs ~1.5x slower for its first ~2 s, measured), the same
    protocol for ScaNN and brute force."""
    start = time.perf_counter()
    fn()
    while time.perf_counter() - start < warm_up_s:
        fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return count / best


def bench_search(args) -> tuple[dict, object, np.ndarray, list[str]]:
    from recsys_ssl import index as index_lib

    t0 = time.perf_counter()
    items, ids, tuning, fresh = corpus(args)
    print(
        f"(a) {args.num_items} x {args.dim} {args.corpus} unit vectors in {time.perf_counter() - t0:.1f}s", flush=True
    )

    t0 = time.perf_counter()
    index, report = index_lib.tune(items, ids, tuning, target_recall=args.target_recall, k=10, brute_force_below=0)
    build_s = time.perf_counter() - t0

    # Exact reference for the fresh queries (also the batched brute-force timing).
    exact_rows = None

    def brute_batched():
        nonlocal exact_rows
        exact_rows, _ = index_lib.exact_top_k(fresh, items, 10)  # 16-query blocks at 1M (the fastest)

    bf_batched = qps(brute_batched, len(fresh), repeats=2)  # ~15 s a run at 1M items
    single = fresh[: args.single_queries]
    bf_single = qps(lambda: [index_lib.exact_top_k(q[None], items, 10) for q in single], len(single))

    got, _ = index.search(fresh, 10)
    recall = index_lib.recall_at_k(got, [[ids[r] for r in row] for row in exact_rows])
    searcher, cfg = index.searcher, index.config
    pre = max(cfg.reorder_num_neighbors, 10)
    sc_single = qps(lambda: [searcher.search(q, 10, pre, cfg.num_leaves_to_search) for q in fresh], len(fresh))
    sc_batched = qps(lambda: searcher.search_batched(fresh, 10, pre, cfg.num_leaves_to_search), len(fresh))
    sc_parallel = qps(lambda: searcher.search_batched_parallel(fresh, 10, pre, cfg.num_leaves_to_search), len(fresh))
    result = {
        "num_items": args.num_items,
        "dim": args.dim,
        "data": args.corpus,
        "index_config": cfg.to_dict(),
        "build_and_tune_s": round(build_s, 1),
        "tuning_recall_held_out": round(report["recall"], 4),
        "recall_at_10_fresh_queries": round(recall, 4),
        "num_fresh_queries": len(fresh),
        "qps": {
            "scann_single": round(sc_single),
            "scann_batched": round(sc_batched),
            "scann_batched_parallel": round(sc_parallel),
            "brute_force_single": round(bf_single, 1),
            "brute_force_batched": round(bf_batched, 1),
        },
        "speedup": {
            "single_query": round(sc_single / bf_single, 1),
            "batched": round(max(sc_batched, sc_parallel) / bf_batched, 1),
        },
    }
    print(json.dumps(result, indent=2), flush=True)
    return result, (index, report), items, ids


# -- (b) the server under load ------------------------------------------------------------------


def load_client(url: str, clients: int, duration: float, out_path: str, new_connection: bool = False) -> None:
    """Runs in its own process: ``clients`` concurrent clients on one asyncio loop for ``duration`` s.

    Each client sends one retrieval query at a time and waits for its answer (closed loop),
    on a keep-alive connection, or (``new_connection``) on a new connection per request with
    ``Connection: close``, as a reverse proxy does by default. Raw HTTP/1.1 over asyncio
    streams: the client must cost far less CPU than the server it measures (they share the cores).
    An answer counts as an error unless it is a 200 with 10 item ids.
    """
    import asyncio
    import urllib.parse

    parsed = urllib.parse.urlparse(url)
    rng = np.random.default_rng(0)
    connection = b"close" if new_connection else b"keep-alive"
    requests_ = []
    for _ in range(1000):
        body = json.dumps(
            {"instances": [{"query_id": f"q{rng.integers(5000)}", "query_segment": f"s{rng.integers(8)}"}], "k": 10}
        ).encode()
        requests_.append(
            b"POST /v1/models/bench:predict HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            b"Connection: %s\r\nContent-Length: %d\r\n\r\n%s" % (connection, len(body), body)
        )
    latencies: list[float] = []
    errors: list[str] = []

    async def one_client(i: int, stop_at: float) -> None:
        reader = writer = None
        j = i
        while time.perf_counter() < stop_at:
            request = requests_[j % len(requests_)]
            j += clients
            start = time.perf_counter()
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection(parsed.hostname, parsed.port)
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                headers = head.lower()
                length = int(headers.split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
                payload = await reader.readexactly(length)
                ok = head[9:12] == b"200" and len(json.loads(payload)["predictions"][0]["item_ids"]) == 10
                if new_connection or b"connection: close" in headers:
                    writer.close()
                    reader = writer = None
                if not ok:
                    errors.append(payload[:300].decode(errors="replace"))
            except Exception as error:  # counted, and the connection renewed
                errors.append(repr(error)[:300])
                if writer is not None:
                    writer.close()
                reader = writer = None
            latencies.append(time.perf_counter() - start)
        if writer is not None:
            writer.close()

    async def run() -> float:
        start = time.perf_counter()
        await asyncio.gather(*(one_client(i, start + duration) for i in range(clients)))
        return time.perf_counter() - start

    try:
        import uvloop

        elapsed = uvloop.run(run())
    except ImportError:
        elapsed = asyncio.run(run())
    all_ms = np.array(latencies) * 1e3
    pathlib.Path(out_path).write_text(
        json.dumps(
            {
                "clients": clients,
                "connection": "new per request" if new_connection else "keep-alive",
                "duration_s": round(elapsed, 1),
                "requests": int(all_ms.size),
                "errors": len(errors),
                "error_samples": errors[:5],
                "qps": round(all_ms.size / elapsed, 1),
                "latency_ms": {
                    "p50": round(float(np.percentile(all_ms, 50)), 2),
                    "p90": round(float(np.percentile(all_ms, 90)), 2),
                    "p99": round(float(np.percentile(all_ms, 99)), 2),
                    "max": round(float(all_ms.max()), 2),
                },
            }
        )
    )


def bench_server(args, prebuilt, items, ids) -> dict:
    from recsys_ssl import export, towers
    from recsys_ssl import features as fs
    from recsys_ssl.tf_setup import tf

    spec = fs.spec_from_dict(
        {
            "name": "bench",
            "query_key": "query_id",
            "item_key": "item_id",
            "query_features": [
                {"name": "query_id", "kind": "categorical", "embedding_dim": 32},
                {"name": "query_segment", "kind": "categorical", "embedding_dim": 8},
            ],
            "item_features": [{"name": "item_id", "kind": "categorical", "vocab": {"source": "hash", "buckets": 1000}}],
        }
    )
    tf.keras.utils.set_random_seed(0)
    vocab = {"query_id": [f"q{i}" for i in range(5000)], "query_segment": [f"s{i}" for i in range(8)]}
    query_tower, item_tower = towers.build_towers(spec, vocab, query_hidden=[64, args.dim], item_hidden=[args.dim])
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="serve_bench_"))
    try:
        t0 = time.perf_counter()
        export.export_models(
            query_tower,
            item_tower,
            spec,
            {"item_id": np.array(ids, dtype=object)},
            workdir,
            "bench",
            item_embeddings=items,
            prebuilt_index=prebuilt,
            with_retrieval_savedmodels=False,
        )
        print(f"(b) exported {len(ids)} items in {time.perf_counter() - t0:.1f}s; starting the server", flush=True)
        result = _serve_and_load(workdir, args.server_flags, args.phases, args)
        result["variants"] = {flags: _serve_and_load(workdir, flags, ["keep-alive"], args) for flags in args.variant}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result["num_items"] = len(ids)
    print(json.dumps(result, indent=2), flush=True)
    return result


def _serve_and_load(workdir: pathlib.Path, flags: str, phases: list[str], args) -> dict:
    """``recsys-ssl serve`` with ``flags`` on the export in ``workdir``, driven through ``phases``."""
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "recsys_ssl.cli",
            "serve",
            "--export-dir",
            str(workdir),
            "--port",
            "0",
            "--poll-seconds",
            "0",
            *flags.split(),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = None
    while url is None:
        line = server.stdout.readline()
        if not line and server.poll() is not None:
            raise RuntimeError("the server exited before it started")
        if line.startswith("serving on "):
            url = line.split()[2]
            print(line.strip(), f"[flags: {flags or 'defaults'}]", flush=True)
    threading.Thread(target=lambda: [print("server:", text.rstrip()) for text in server.stdout], daemon=True).start()
    try:
        # Warm up (first calls trace nothing, but page in the index; workers start), then the measured phases.
        _load(url, workdir, 2, 5)
        result = {
            "server_flags": flags,
            "phases": {name: _measured_phase(name, server.pid, url, workdir, args) for name in phases},
        }
        result["server_alive_after"] = server.poll() is None
    finally:
        server.terminate()
        server.wait(timeout=30)
    return result


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) used so far by ``pid`` and its live descendants (``--workers``)."""
    total, ticks = 0.0, os.sysconf("SC_CLK_TCK")
    try:
        fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / ticks
        for task in pathlib.Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                total += process_cpu_s(int(child))
    except (OSError, ValueError, IndexError):  # exited meanwhile
        pass
    return total


def _measured_phase(name: str, pid: int, url: str, workdir: pathlib.Path, args) -> dict:
    """One phase, plus the server's CPU per request (robust where wall-clock QPS is not: other
    jobs share the cores) and the load average at its end."""
    before = process_cpu_s(pid)
    result = PHASES[name](url, workdir, args)
    cpu_s = process_cpu_s(pid) - before
    result["server_cpu_s"] = round(cpu_s, 2)
    result["server_cpu_us_per_request"] = round(cpu_s / max(result["requests"], 1) * 1e6, 1)
    result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    return result


def _load(url: str, workdir: pathlib.Path, clients: int, duration: float, new_connection: bool = False) -> dict:
    """One load-client run in its own process (its CPU is not the server's); returns its JSON."""
    out = workdir / "load.json"
    subprocess.run(
        [
            sys.executable,
            __file__,
            "--load-client",
            url,
            "--clients",
            str(clients),
            "--duration",
            str(duration),
            "--load-output",
            str(out),
        ]
        + (["--new-connection"] if new_connection else []),
        check=True,
    )
    return json.loads(out.read_text())


def _listen_overflows() -> int:
    """The kernel's count of connections dropped because a listen queue was full (all sockets)."""
    lines = pathlib.Path("/proc/net/netstat").read_text().splitlines()
    for names, values in zip(lines[::2], lines[1::2]):
        if names.startswith("TcpExt:"):
            return int(dict(zip(names.split()[1:], values.split()[1:]))["ListenOverflows"])
    return -1


def _phase_keep_alive(url, workdir, args) -> dict:
    return _load(url, workdir, args.clients, args.duration)


def _phase_keep_alive_32(url, workdir, args) -> dict:
    return _load(url, workdir, 32, args.duration)


def _phase_new_connection(url, workdir, args) -> dict:
    before = _listen_overflows()
    result = _load(url, workdir, 16, args.duration, new_connection=True)
    result["listen_overflows"] = _listen_overflows() - before
    return result


def _phase_idle_connections(url, workdir, args) -> dict:
    """500 connections that send nothing (or half a request head), opened before a keep-alive
    load of ``--clients``; reports the load and how long the server took to close the idle ones."""
    import socket
    import urllib.parse

    parsed = urllib.parse.urlparse(url)
    idle = []
    for i in range(500):
        sock = socket.create_connection((parsed.hostname, parsed.port), timeout=60)
        if i % 2:
            sock.sendall(b"POST /v1/models/bench:predict HTTP/1.1\r\nHost: x\r\n")
        idle.append(sock)
    opened = time.monotonic()
    closed_after: list[float] = []

    def watch() -> None:
        for sock in idle:
            try:
                while sock.recv(65536):
                    pass
                closed_after.append(time.monotonic() - opened)
            except OSError:
                pass
            sock.close()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    result = _load(url, workdir, args.clients, min(args.duration, 30))
    watcher.join(timeout=60)
    result["idle_connections"] = len(idle)
    result["idle_closed"] = len(closed_after)
    result["idle_closed_within_s"] = round(max(closed_after), 2) if closed_after else None
    return result


PHASES = {
    "keep-alive": _phase_keep_alive,
    "new-connection": _phase_new_connection,
    "keep-alive-32": _phase_keep_alive_32,
    "idle-connections": _phase_idle_connections,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-items", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument(
        "--corpus",
        choices=("synthetic_catalog", "clustered", "uniform"),
        default="synthetic_catalog",
        help="item vectors: the synthetic catalog's feature latents (default), a Gaussian "
        "mixture, or uniform on the sphere (module docstring)",
    )
    parser.add_argument(
        "--uniform", dest="corpus", action="store_const", const="uniform", help="alias of --corpus uniform"
    )
    parser.add_argument("--target-recall", type=float, default=0.95)
    parser.add_argument("--num-queries", type=int, default=2000, help="fresh queries for recall and QPS")
    parser.add_argument("--single-queries", type=int, default=100, help="single-query brute-force timing sample")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--skip-server", action="store_true", help="part (a) only")
    parser.add_argument(
        "--phases",
        type=lambda text: text.split(","),
        default=list(PHASES),
        help=f"server load phases, comma-separated (default all: {','.join(PHASES)})",
    )
    parser.add_argument("--server-flags", default="", help="extra `recsys-ssl serve` flags, e.g. '--access-log'")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="FLAGS",
        help="also measure the keep-alive phase with these server flags (repeatable), e.g. --variant='--workers 2'",
    )
    parser.add_argument("--output", default=str(ROOT / "runs" / "bench" / "serve_bench.json"))
    parser.add_argument("--load-client", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--load-output", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--new-connection", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load_client:
        load_client(args.load_client, args.clients, args.duration, args.load_output, args.new_connection)
        return 0
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    search, prebuilt, items, ids = bench_search(args)
    results = {"search": search, "load_average_before_server": os.getloadavg(), "cpus": os.cpu_count()}
    if not args.skip_server:
        results["server"] = bench_server(args, prebuilt, items, ids)
    results["load_average_after"] = os.getloadavg()  # other processes share these cores
    output = pathlib.Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2) + "\n")
    s = search
    print(f"\nScaNN vs numpy brute force, {s['num_items']} x {s['dim']} ({s['data']}):")
    print(f"  Recall@10 (fresh queries)   {s['recall_at_10_fresh_queries']:.4f}   config {s['index_config']}")
    print(
        f"  single-query QPS            ScaNN {s['qps']['scann_single']:>8}"
        f"   brute force {s['qps']['brute_force_single']:>8}"
        f"   speed-up {s['speedup']['single_query']}x"
    )
    print(
        f"  batched QPS                 ScaNN {max(s['qps']['scann_batched'], s['qps']['scann_batched_parallel']):>8}"
        f"   brute force {s['qps']['brute_force_batched']:>8}   speed-up {s['speedup']['batched']}x"
    )
    if "server" in results:
        r = results["server"]
        single = s["qps"]["scann_single"]
        print(f"server, {r['num_items']} items (in-process single-query ScaNN: {single} QPS)")
        print(
            f"  {'phase':<30} {'clients':>7} {'connection':<16} {'QPS':>7} {'/ScaNN':>7} {'p50 ms':>7} {'p99 ms':>7} "
            f"{'errors':>14} {'CPU us/req':>10}  notes"
        )
        rows = [(name, p) for name, p in r["phases"].items()]
        rows += [(f"keep-alive {flags}", v["phases"]["keep-alive"]) for flags, v in r["variants"].items()]
        for name, p in rows:
            p["qps_over_scann_single"] = round(p["qps"] / single, 3)
            notes = []
            if "listen_overflows" in p:
                notes.append(f"listen overflows {p['listen_overflows']}")
            if "idle_closed" in p:
                notes.append(
                    f"{p['idle_closed']}/{p['idle_connections']} idle closed within {p['idle_closed_within_s']} s"
                )
            print(
                f"  {name:<30} {p['clients']:>7} {p['connection']:<16} {p['qps']:>7.0f} "
                f"{p['qps_over_scann_single']:>7.1%} "
                f"{p['latency_ms']['p50']:>7} {p['latency_ms']['p99']:>7} {p['errors']:>6} / {p['requests']:<7} "
                f"{p.get('server_cpu_us_per_request', ''):>10} "
                f"{'; '.join(notes)}"
            )
        output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"load average (1, 5, 15 min) at the end: {results['load_average_after']} on {os.cpu_count()} CPUs")
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
