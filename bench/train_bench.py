"""Training throughput: the baseline vs SSL-CFM, in one process, same data and batch size.

    .venv/bin/python bench/train_bench.py [--items 10000 --pairs 60000 --batch-size 512 --steps 40 --repeats 3]

Prints examples (training pairs) per second for each and the ratio SSL-CFM / baseline (goal:
>= 0.6; SSL adds two item-tower passes over a uniform item batch per step), by wall-clock
time and by the process's CPU time (the steadier one on a shared machine). The data is the
synthetic catalog's generator (no TFDS build); vocabularies and CFM groups are computed
in-process. Each measurement is a separate ``fit`` of ``--steps`` steps after a warm-up fit
(tracing); the methods alternate, and the medians over ``--repeats`` are reported (the ratio:
the median of each repeat's ssl/baseline ratio).
"""

from __future__ import annotations

import argparse
import collections
import json
import pathlib
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from recsys_ssl import (
    artifacts,  # noqa: E402
    train,  # noqa: E402
)
from recsys_ssl import config as cfg  # noqa: E402
from recsys_ssl.datasets import item_sampler, synthetic_catalog  # noqa: E402
from recsys_ssl.paths import CONFIGS_DIR  # noqa: E402
from recsys_ssl.tf_setup import tf  # noqa: E402


def synthetic_training_data(num_items: int, num_pairs: int, seed: int = 0) -> train.TrainingData:
    spec = synthetic_catalog.spec()
    items = synthetic_catalog.generate_items(num_items, seed=seed)
    interactions = synthetic_catalog.generate_pairs(items, num_pairs, seed=seed)
    dense_items = item_sampler.pad_item_arrays(items, spec)
    pairs = {name: column[interactions.item_rows] for name, column in dense_items.items()}
    for feature in spec.query_features:
        pairs[feature.name] = interactions.queries[feature.name][interactions.query_rows]
    vocabularies = {}
    for feature in spec.item_features + spec.query_features:
        column = dense_items[feature.name] if feature in spec.item_features else pairs[feature.name]
        counts = collections.Counter(v for v in np.asarray(column).ravel() if v)
        vocabularies[feature.name] = [v.decode() for v, _ in counts.most_common()]
    seen = collections.Counter(pairs[spec.item_key])
    frequencies = {i.decode(): seen.get(i, 0) for i in dense_items[spec.item_key]}
    names = spec.mi_features
    mi = np.eye(len(names))
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            if i != j and any(a in g and b in g for g in synthetic_catalog.PLANTED_GROUPS):
                mi[i, j] = 0.5
    tensors = {name: tf.constant(column.tolist(), tf.string) for name, column in pairs.items()}

    def batch_pairs(batch_size: int, batch_seed: int) -> tf.data.Dataset:
        return (
            tf.data.Dataset.from_tensor_slices(tensors)
            .shuffle(num_pairs, seed=batch_seed)
            .batch(batch_size, drop_remainder=True)
            .repeat()
        )

    return train.TrainingData(
        spec=spec,
        batch_pairs=batch_pairs,
        num_pairs=num_pairs,
        item_arrays=items,
        vocabularies=vocabularies,
        item_frequencies=frequencies,
        cfm_groups=artifacts.cfm_groups(names, mi),
        sources={"dataset": "synthetic (bench)"},
    )


def measure(model, dataset, steps: int) -> tuple[float, float]:
    """(pairs per wall-clock second, pairs per CPU second) of one fit() of ``steps`` steps.

    CPU seconds (all of this process's threads) measure the work a step costs; on a machine
    shared with other jobs they are far steadier than wall-clock time.
    """
    wall, cpu = time.perf_counter(), time.process_time()
    model.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0)
    examples = steps * model.bench_batch_size
    return examples / (time.perf_counter() - wall), examples / (time.process_time() - cpu)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--pairs", type=int, default=60_000)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--input",
        choices=("pipeline", "cached"),
        default="pipeline",
        help="pipeline: batches made by tf.data each step, as in training; cached: "
        "10 pre-made batches repeated (measures the model step alone)",
    )
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)

    data = synthetic_training_data(args.items, args.pairs)
    runs = {}
    for name in ("baseline", "ssl_cfm"):
        config = cfg.replace(cfg.load_config(CONFIGS_DIR / f"{name}.yaml"), train={"batch_size": args.batch_size})
        model = train.build_model(config, data)
        model.bench_batch_size = args.batch_size
        dataset = train.training_dataset(config, data, seed=0)
        if args.input == "cached":  # the model's cost alone: the same few batches, materialised
            dataset = dataset.take(10).cache().repeat()
        model.fit(dataset, epochs=1, steps_per_epoch=12, verbose=0)  # warm-up: tracing, caches
        runs[name] = (model, dataset)
    wall: dict[str, list[float]] = {name: [] for name in runs}
    cpu: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, (model, dataset) in runs.items():
            rate_wall, rate_cpu = measure(model, dataset, args.steps)
            wall[name].append(rate_wall)
            cpu[name].append(rate_cpu)

    def summary(rates):
        # Adjacent measurements share the machine's load at that moment: the median of each
        # repeat's ratio is steadier than the ratio of medians on a shared machine.
        ratios = [s / b for b, s in zip(rates["baseline"], rates["ssl_cfm"])]
        return (
            statistics.median(rates["baseline"]),
            statistics.median(rates["ssl_cfm"]),
            statistics.median(ratios),
            ratios,
        )

    device = "GPU" if tf.config.list_physical_devices("GPU") else "CPU"
    result = {
        "device": device,
        "input": args.input,
        "batch_size": args.batch_size,
        "items": args.items,
        "steps": args.steps,
        "repeats": args.repeats,
    }
    print(
        f"train throughput on {device} ({args.input} input), batch {args.batch_size}, {args.items} items, "
        f"median of {args.repeats} x {args.steps} steps:"
    )
    for clock, rates in (("wall-clock", wall), ("cpu-time", cpu)):
        baseline, ssl, ratio, ratios = summary(rates)
        result[clock] = {
            "baseline_examples_per_s": baseline,
            "ssl_cfm_examples_per_s": ssl,
            "ratio": ratio,
            "ratios": ratios,
        }
        print(
            f"  {clock:10s}  baseline {baseline:9.0f} ex/s   ssl_cfm {ssl:9.0f} ex/s   "
            f"ratio ssl_cfm/baseline {ratio:.3f}  (per repeat: {', '.join(f'{r:.2f}' for r in ratios)})"
        )
    print("  goal: ratio >= 0.6")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
