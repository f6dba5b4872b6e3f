"""Benchmark: building ``synthetic_catalog`` in-process (TFDS's generator path, the reference)
against the Beam pipeline (datasets/beam_generate.py, local FnApiRunner, 2 worker processes).

    python bench/data_bench.py --size 1m                     # the issue's target size
    python bench/data_bench.py --size 10k --pairs 250000 1000000   # what fits a busy 2-core box

Each build runs in a fresh child process (same command, same cores) into its own TFDS dir;
the bench records its wall-clock time, the peak RSS of the whole process tree (sampled every
0.1 s with psutil: the driver plus the Beam workers, summed) and the largest single process
(getrusage of the children), and the digests of every split (datasets/digest.py): the Beam
build must hold the reference's examples byte for byte. ``--pairs`` adds Beam-only builds
of the same catalog with that many pairs (memory against the number of pairs).
Results: bench/results/data/<size>.json and .md.
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

CHILD = """
import sys, json
from recsys_ssl.datasets import inputs, synthetic_catalog, _common
size, data_dir, mode, pairs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
beam_args = None if mode == "in_process" else []
if pairs:  # the size's catalog with another number of pairs
    items, queries, _ = synthetic_catalog.SIZES[size]
    for kind in (_common.PAIRS, _common.ITEMS):
        name = f"{size}_{pairs}" if kind == _common.PAIRS else _common.items_config_name(f"{size}_{pairs}")
        config = synthetic_catalog.SyntheticCatalogConfig(
            name=name, kind=kind, num_items=items, num_queries=queries, num_pairs=pairs)
        builder = synthetic_catalog.SyntheticCatalog(config=config, data_dir=data_dir)
        inputs._prepare(builder, beam_args=beam_args)
        print("DIR", kind, builder.data_dir)
else:
    ds = inputs.load_dataset(f"synthetic_catalog/{size}", data_dir=data_dir, beam_args=beam_args)
    print("DIR", _common.PAIRS, ds.pairs_builder.data_dir)
    print("DIR", _common.ITEMS, ds.items_builder.data_dir)
"""


def _tree_rss(process: psutil.Process) -> int:
    total = 0
    for p in [process] + process.children(recursive=True):
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def build(size: str, mode: str, pairs: int = 0) -> dict:
    """One build in a child process: wall seconds, peak RSS (tree sum and largest process), digests."""
    from recsys_ssl.datasets import digest

    data_dir = tempfile.mkdtemp(prefix=f"data_bench_{mode}_")
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3")
    start = time.time()
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
    out = child.stdout.read()
    if child.returncode:
        raise SystemExit(f"{mode} build of {size} failed (exit {child.returncode})")
    dirs = dict(line.split()[1:] for line in out.splitlines() if line.startswith("DIR "))
    largest = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # so far, over all children
    return {
        "mode": mode,
        "size": size,
        "pairs": pairs or None,
        "wall_s": round(wall, 1),
        "peak_rss_tree_mb": round(peak / 2**20),
        "max_rss_single_process_mb_so_far": round(largest / 2**20),
        "digests": {kind: digest.split_digests(path) for kind, path in dirs.items()},
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="1m", help="synthetic_catalog size (default %(default)s)")
    parser.add_argument("--pairs", type=int, nargs="*", default=[], help="Beam builds with these numbers of pairs")
    parser.add_argument("--skip-reference", action="store_true", help="no in-process build (memory runs only)")
    args = parser.parse_args(argv)
    runs = [] if args.skip_reference else [build(args.size, "in_process")]
    runs.append(build(args.size, "beam"))
    runs += [build(args.size, "beam", pairs) for pairs in args.pairs]
    result = {"size": args.size, "cpus": os.cpu_count(), "runs": runs}
    if not args.skip_reference:
        reference, beam = runs[0], runs[1]
        result["beam_speedup"] = round(reference["wall_s"] / beam["wall_s"], 2)
        result["same_examples"] = reference["digests"] == beam["digests"]
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = RESULTS / (args.size + ("_pairs" if args.skip_reference else ""))
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    stem.with_suffix(".md").write_text(_table(result))
    print(_table(result))
    return 0


def _table(result: dict) -> str:
    lines = [
        f"# synthetic_catalog/{result['size']}: in-process vs Beam ({result['cpus']} CPUs)",
        "",
        "| build | pairs | wall s | peak RSS, process tree (MB) | same examples |",
        "|---|---|---|---|---|",
    ]
    reference = next((r for r in result["runs"] if r["mode"] == "in_process"), None)
    for run in result["runs"]:
        same = (
            "reference"
            if run is reference
            else ("yes" if reference and run["digests"] == reference["digests"] else "-")
        )
        lines.append(
            f"| {run['mode']} | {run['pairs'] or 'config'} | {run['wall_s']} | {run['peak_rss_tree_mb']} | {same} |"
        )
    if "beam_speedup" in result:
        lines += [
            "",
            f"Beam speed-up: {result['beam_speedup']}x (in-process wall / Beam wall; the target is >= 4).",
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
