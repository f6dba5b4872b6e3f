"""``recsys-ssl demo``: every stage of the pipeline on the embedded default, end to end.

data (TFDS synthetic catalog) -> stats and MI (Beam) -> train the baseline and the shipped
default method (``registry.DEFAULT_CONFIG``) briefly -> evaluate both (head/tail table) ->
export the default (SavedModels + tuned ScaNN index) -> serve -> a few retrieval queries from
a real HTTP client -> stop the server.

Each stage runs as its own ``recsys-ssl <stage>`` process, exactly as a user would type it
(the commands are printed), so its progress bars show and its state cannot leak into the next
stage. The timings of every stage go to ``<run_dir>/demo_summary.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shlex
import subprocess
import sys
import time
import urllib.error
import urllib.request

from recsys_ssl.paths import DEFAULT_RUN_DIR
from recsys_ssl.registry import DEFAULT_CONFIG

DEFAULT_DATASET = "synthetic_catalog/10k"
METHODS = ("baseline", DEFAULT_CONFIG)


def _banner(text: str) -> None:
    print(f"\n{'=' * 78}\n== {text}\n{'=' * 78}", flush=True)


def _stage(name: str, argv: list[str], timings: dict[str, float]) -> None:
    """Runs ``recsys-ssl <argv>`` in a child process; raises with the stage's name on failure."""
    command = [sys.executable, "-m", "recsys_ssl.cli", *argv]
    _banner(f"{name}: recsys-ssl {shlex.join(argv)}")
    started = time.perf_counter()
    result = subprocess.run(command)
    timings[name] = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(
            f"demo: stage {name!r} failed with exit code {result.returncode}: recsys-ssl {shlex.join(argv)}"
        )
    print(f"-- {name}: {timings[name]:.1f} s", flush=True)


def _metrics_table(run_dir: pathlib.Path, methods: tuple[str, ...]) -> str:
    """Overall / head / tail Recall@K and overall MAP@K of each method, from eval/<name>/metrics.json."""
    from recsys_ssl.evaluate import format_table

    return format_table(
        by_method={method: json.loads((run_dir / "eval" / method / "metrics.json").read_text()) for method in methods}
    )


def _start_server(run_dir: pathlib.Path, model_name: str) -> tuple[subprocess.Popen, int]:
    """Starts ``recsys-ssl serve --port 0`` and returns (process, port) once it listens."""
    command = [
        sys.executable,
        "-u",
        "-m",
        "recsys_ssl.cli",
        "serve",
        "--run-dir",
        str(run_dir),
        "--model-name",
        model_name,
        "--port",
        "0",
        "--poll-seconds",
        "0",
    ]
    print(f"$ recsys-ssl {shlex.join(command[4:])}", flush=True)
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 180
    assert server.stdout is not None
    for line in server.stdout:
        print(f"   [server] {line.rstrip()}", flush=True)
        if line.startswith("serving on http://"):  # recsys-ssl serve's ready line
            port = int(line.split("http://", 1)[1].split()[0].rsplit(":", 1)[1])
            return server, port
        if time.monotonic() > deadline:
            break
    server.kill()
    raise SystemExit("demo: the server did not report a listening port")


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        raise SystemExit(f"demo: {url} answered {error.code}: {error.read().decode()}") from error


def _query_examples(run_dir: pathlib.Path, dataset: str, count: int) -> list[dict]:
    """The first test queries of the dataset, as the server's ``instances`` rows."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    from recsys_ssl.datasets import inputs
    from recsys_ssl.paths import tfds_dir

    handle = inputs.load_dataset(dataset, data_dir=str(tfds_dir(run_dir)))
    names = handle.spec.query_feature_names
    rows, seen = [], set()
    for example in handle.pairs("test").as_numpy_iterator():
        key = example[handle.spec.query_key]
        if key in seen:
            continue
        seen.add(key)
        row = {}
        for name in names:
            value = example[name]
            row[name] = (
                [v.decode() for v in value]
                if hasattr(value, "__len__") and not isinstance(value, bytes)
                else value.decode()
            )
        rows.append(row)
        if len(rows) == count:
            break
    return rows


def _retrieve(run_dir: pathlib.Path, dataset: str, model_name: str, num_queries: int, k: int) -> list[dict]:
    server, port = _start_server(run_dir, model_name)
    try:
        base = f"http://127.0.0.1:{port}/v1/models"
        with urllib.request.urlopen(f"{base}/{model_name}", timeout=30) as response:
            print(f"GET {base}/{model_name} -> {response.read().decode().strip()}")
        instances = _query_examples(run_dir, dataset, num_queries)
        body = {"instances": instances, "k": k}
        print(f"POST {base}/{model_name}:predict  {json.dumps(body)[:300]}...")
        answer = _post(f"{base}/{model_name}:predict", body)
        for instance, prediction in zip(instances, answer["predictions"]):
            query = ", ".join(f"{name}={value}" for name, value in instance.items())
            items = ", ".join(f"{i} ({s:.3f})" for i, s in zip(prediction["item_ids"], prediction["scores"]))
            print(f"  query [{query}]\n    -> {items}")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as response:
            shown = [
                line
                for line in response.read().decode().splitlines()
                if line.startswith(
                    (
                        "recsys_ssl_requests_total",
                        "recsys_ssl_batch_queries_count",
                        "recsys_ssl_served_version",
                        "recsys_ssl_reloads_total",
                    )
                )
            ]
        print(f"GET http://127.0.0.1:{port}/metrics (Prometheus; some of it):\n  " + "\n  ".join(shown))
        return answer["predictions"]
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        print("server stopped", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="recsys-ssl demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", default=DEFAULT_RUN_DIR, help="where every artifact goes (default %(default)s)")
    parser.add_argument("--dataset", default=DEFAULT_DATASET)
    parser.add_argument("--steps", type=int, default=600, help="training steps per method (brief, for the demo)")
    parser.add_argument("--queries", type=int, default=3, help="retrieval queries sent to the server")
    parser.add_argument("--k", type=int, default=5, help="items per retrieval query")
    args = parser.parse_args(argv)

    run_dir = pathlib.Path(args.run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    common = ["--run-dir", str(run_dir)]
    timings: dict[str, float] = {}
    started = time.perf_counter()
    print(f"recsys-ssl demo: dataset {args.dataset}, artifacts under {run_dir}")

    _stage("data", ["data", "--dataset", args.dataset, *common], timings)
    _stage("stats", ["stats", "--dataset", args.dataset, *common], timings)
    _stage("mi", ["mi", "--dataset", args.dataset, *common], timings)
    for method in METHODS:
        _stage(
            f"train {method}",
            ["train", "--config", method, "--dataset", args.dataset, "--steps", str(args.steps), "--quiet", *common],
            timings,
        )
    for method in METHODS:
        _stage(f"evaluate {method}", ["evaluate", "--name", method, *common], timings)
    _stage("export", ["export", "--name", DEFAULT_CONFIG, "--model-name", "retrieval", *common], timings)

    _banner("evaluation (full-corpus, exact; head = top 20% items by training count)")
    table = _metrics_table(run_dir, METHODS)
    print(table)

    _banner("serve: recsys-ssl serve, then retrieval queries from an HTTP client")
    serve_started = time.perf_counter()
    predictions = _retrieve(run_dir, args.dataset, "retrieval", args.queries, args.k)
    timings["serve + queries"] = time.perf_counter() - serve_started

    total = time.perf_counter() - started
    _banner(f"demo finished in {total:.1f} s; artifacts under {run_dir}")
    width = max(len(name) for name in timings)
    for name, seconds in timings.items():
        print(f"  {name:<{width}} {seconds:>7.1f} s  {100 * seconds / total:5.1f}%")
    summary = {
        "dataset": args.dataset,
        "run_dir": str(run_dir),
        "total_seconds": total,
        "stage_seconds": timings,
        "evaluation_table": table,
        "predictions": predictions,
    }
    (run_dir / "demo_summary.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
    print(f"summary: {run_dir / 'demo_summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
