"""Benchmark: building ``synthetic_catalog`` with TFDS's own writer in-process (the reference),
with the fast example writer (datasets/example_writer.py, the default) and with the Beam
pipeline (datasets/beam_generate.py, local FnApiRunner, 2 worker processes).

    python bench/data_bench.py --size 1m --modes reference fast --reference-root /work/main
    python bench/data_bench.py --size 1m --modes fast --pairs 1000000 4000000   # memory vs pairs

Each build runs in a fresh child process (same command, same cores) into its own TFDS dir:
the ``<size>-items`` config, then the pairs config, through ``download_and_prepare`` as
``inputs.load_dataset`` does. The bench records its wall-clock time, its CPU time (user +
system of the reaped child: steadier than wall time on a loaded machine), the peak RSS of the whole
process tree (sampled every 0.1 s with psutil: the driver plus any Beam workers, summed), the
load average before and after, and the digests of every split (datasets/digest.py): every
build must hold the reference's examples. ``--reference-root`` runs the reference from another
checkout (e.g. main before this change: "built in-process today"); the reference mode sets
``RECSYS_SSL_EXAMPLE_WRITER=tfds``; ``--fast-root`` runs the fast and Beam modes from another
checkout (e.g. an export of an earlier commit). ``--pairs`` builds the size's catalog with these numbers
of pairs instead of the config's. Results: bench/results/data/<size>[_<tag>].json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import subprocess
import sys
import tempfile
import time

import psutil

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "data"
MODES = ("reference", "fast", "beam")

# The builders directly (not inputs.load_dataset, which imports TensorFlow for its readers):
# the fast writer never needs TensorFlow, TFDS's own writer imports it when it serializes.
CHILD = """
import sys
import tensorflow_datasets as tfds
from recsys_ssl.datasets import synthetic_catalog, _common
size, data_dir, mode, pairs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
beam = {}
if mode == "beam":
    from pipelines import options as beam_options
    options = beam_options.pipeline_options([])
    beam = dict(beam_runner=beam_options.make_runner(options), beam_options=options)
items, queries, config_pairs = synthetic_catalog.SIZES[size]
name = f"{size}_{pairs}" if pairs else size
for kind in (_common.ITEMS, _common.PAIRS):
    config = name if kind == _common.PAIRS else _common.items_config_name(name)
    if pairs:
        config = synthetic_catalog.SyntheticCatalogConfig(
            name=config, kind=kind, num_items=items, num_queries=queries, num_pairs=pairs)
    builder = synthetic_catalog.SyntheticCatalog(config=config, data_dir=data_dir)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(try_download_gcs=False, **beam))
    print("DIR", kind, builder.data_dir, flush=True)
print("TENSORFLOW", "tensorflow" in sys.modules)
"""


def _tree_rss(process: psutil.Process) -> int:
    total = 0
    for p in [process] + process.children(recursive=True):
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def build(size: str, mode: str, pairs: int = 0, root: pathlib.Path = ROOT) -> dict:
    """One build in a child process: wall seconds, peak RSS of the process tree, digests."""
    from recsys_ssl.datasets import digest

    data_dir = tempfile.mkdtemp(prefix=f"data_bench_{mode}_")
    env = dict(os.environ, PYTHONPATH=str(root), TF_CPP_MIN_LOG_LEVEL="3")
    env["RECSYS_SSL_EXAMPLE_WRITER"] = "tfds" if mode == "reference" else "fast"
    load_before, start = os.getloadavg()[0], time.time()
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, size, data_dir, mode, str(pairs)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    watched, peak = psutil.Process(child.pid), 0
    while child.poll() is None:
        peak = max(peak, _tree_rss(watched))
        time.sleep(0.1)
    wall = time.time() - start
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the child is reaped: its CPU time counts
    cpu = sum(getattr(cpu_after, f) - getattr(cpu_before, f) for f in ("ru_utime", "ru_stime"))
    out = child.stdout.read()
    if child.returncode:
        raise SystemExit(f"{mode} build of {size} failed (exit {child.returncode})")
    dirs = dict(line.split()[1:] for line in out.splitlines() if line.startswith("DIR "))
    return {
        "mode": mode,
        "size": size,
        "pairs": pairs or synthetic_pairs(size),
        "code": str(root),
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
        "peak_rss_tree_mb": round(peak / 2**20),
        "imports_tensorflow": "TENSORFLOW True" in out,
        "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "digests": {kind: digest.split_digests(path) for kind, path in dirs.items()},
    }


def synthetic_pairs(size: str) -> int:
    sys.path.insert(0, str(ROOT))
    from recsys_ssl.datasets import synthetic_catalog

    return synthetic_catalog.SIZES[size][2]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="1m", help="synthetic_catalog size (default %(default)s)")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=["reference", "fast"])
    parser.add_argument("--pairs", type=int, nargs="*", default=[], help="builds with these numbers of pairs instead")
    parser.add_argument("--reference-root", default=str(ROOT), help="checkout the reference runs (default: this one)")
    parser.add_argument(
        "--fast-root", default=str(ROOT), help="checkout the fast and Beam modes run (default: this one)"
    )
    parser.add_argument("--tag", default="", help="suffix of the result files")
    parser.add_argument("--reference-json", help="compare with the reference run of an earlier result file")
    args = parser.parse_args(argv)
    runs = []
    if args.reference_json:
        earlier = json.loads(pathlib.Path(args.reference_json).read_text())["runs"]
        runs.append(next(r for r in earlier if r["mode"] == "reference"))
    for pairs in args.pairs or [0]:
        for mode in args.modes:
            root = pathlib.Path(args.reference_root if mode == "reference" else args.fast_root)
            runs.append(build(args.size, mode, pairs, root))
            print(json.dumps({k: v for k, v in runs[-1].items() if k != "digests"}), flush=True)
    result = {"size": args.size, "cpus": os.cpu_count(), "runs": runs}
    reference = next((r for r in runs if r["mode"] == "reference"), None)
    for run in runs:
        if reference and run is not reference and run["pairs"] == reference["pairs"]:
            run["speedup_vs_reference"] = round(reference["wall_s"] / run["wall_s"], 2)
            run["same_examples_as_reference"] = run["digests"] == reference["digests"]
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = RESULTS / (args.size + (f"_{args.tag}" if args.tag else ""))
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    stem.with_suffix(".md").write_text(_table(result))
    print(_table(result))
    return 0


def _table(result: dict) -> str:
    lines = [
        f"# synthetic_catalog/{result['size']}: TFDS's writer vs the fast writer vs Beam ({result['cpus']} CPUs)",
        "",
        "| build | code | pairs | wall s | CPU s (child tree, user + sys) | peak RSS, process tree (MB) "
        "| TensorFlow imported | load avg before, after | speed-up vs reference | same examples as reference |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in result["runs"]:
        same = run.get("same_examples_as_reference", "-")
        same = "reference" if run["mode"] == "reference" else {True: "yes", False: "**no**"}.get(same, same)
        lines.append(
            f"| {run['mode']} | {run['code']} | {run['pairs']:,} | {run['wall_s']} | {run.get('cpu_s', '-')} "
            f"| {run['peak_rss_tree_mb']:,} "
            f"| {'yes' if run['imports_tensorflow'] else 'no'} | {run['load_average_1min'][0]}, "
            f"{run['load_average_1min'][1]} | {run.get('speedup_vs_reference', '-')} | {same} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
