"""Training throughput: the baseline vs SSL-CFM, in one process, same data and batch size.

    .venv/bin/python bench/train_bench.py [--items 10000 --pairs 60000 --batch-size 512 --steps 40 --repeats 3]
    .venv/bin/python bench/train_bench.py --input-only --catalog 1m [--tfds-dir DIR] [--json out.json]

Prints examples (training pairs) per second for each and the ratio SSL-CFM / baseline (goal:
>= 0.6; SSL adds two item-tower passes over a uniform item batch per step), by wall-clock
time and by the process's CPU time (the steadier one on a shared machine). The data is the
synthetic catalog's generator (no TFDS build); vocabularies and CFM groups are computed
in-process. Each measurement is a separate ``fit`` of ``--steps`` steps after a warm-up fit
(tracing); the methods alternate, and the medians over ``--repeats`` are reported (the ratio:
the median of each repeat's ssl/baseline ratio).

``--input-only``: which one limits training, the tf.data input or the model? Per method, in
one process: examples/s of ``train.training_dataset`` alone (the pairs and, for SSL, the
uniform item batches, read on their own), of the full train step fed by that pipeline, and of
the train step on cached batches (the model alone), with their per-repeat ratios. Every
measurement starts a fresh iterator and skips its first ``--skip`` batches (shuffle-buffer
fill, tracing), so it is the steady state. ``--catalog SIZE`` takes the items, queries and
pairs of ``synthetic_catalog/SIZE``; with ``--tfds-dir`` the pairs are read from that
prepared TFDS dataset through ``inputs.batch``, exactly as ``recsys-ssl train`` reads them.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
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
from recsys_ssl.datasets import inputs, item_sampler, synthetic_catalog  # noqa: E402
from recsys_ssl.paths import CONFIGS_DIR  # noqa: E402
from recsys_ssl.tf_setup import tf  # noqa: E402


def synthetic_training_data(num_items: int, num_pairs: int, seed: int = 0, **law) -> train.TrainingData:
    """The generator's items and pairs in memory; ``law``: more ``generate_pairs`` keywords."""
    spec = synthetic_catalog.spec()
    items = synthetic_catalog.generate_items(num_items, seed=seed)
    interactions = synthetic_catalog.generate_pairs(items, num_pairs, seed=seed, **law)
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
            .shuffle(min(num_pairs, inputs.DEFAULT_SHUFFLE_BUFFER), seed=batch_seed)
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


def tfds_pairs(data: train.TrainingData, name: str, tfds_dir: str) -> train.TrainingData:
    """``data`` with its pairs read from the prepared TFDS dataset ``name`` (train split) the way
    ``train.load_training_data`` reads them."""
    dataset = inputs.load_dataset(name, data_dir=tfds_dir)
    pairs, spec = dataset.pairs("train"), dataset.spec

    def batch_pairs(batch_size: int, seed: int) -> tf.data.Dataset:
        return inputs.batch(pairs, spec, batch_size, shuffle=True, seed=seed, repeat=True, drop_remainder=True)

    sources = {"dataset": f"{name} (TFDS pairs, generator corpus)"}
    return dataclasses.replace(data, batch_pairs=batch_pairs, num_pairs=dataset.num_examples("train"), sources=sources)


def batch_parsed_pairs(name: str, tfds_dir: str, batch_size: int, seed: int) -> tf.data.Dataset:
    """A reference reader, not what training uses: the TFDS record files of the train split,
    serialized records shuffled (same buffer as ``inputs.batch``), then parsed a batch at a time
    (``tf.io.parse_example``, multi-valued features padded to max_len) instead of TFDS's
    per-example decoding."""
    dataset = inputs.load_dataset(name, data_dir=tfds_dir)
    builder, spec = dataset.pairs_builder, dataset.spec
    files = [str(pathlib.Path(builder.data_dir) / f) for f in builder.info.splits["train"].filenames]
    features = spec.query_features + spec.item_features
    parse = {
        f.name: tf.io.VarLenFeature(tf.string) if f.multi_valued else tf.io.FixedLenFeature([], tf.string)
        for f in features
    }

    def parse_batch(records):
        parsed = tf.io.parse_example(records, parse)
        for feature in (f for f in features if f.multi_valued):
            dense = tf.sparse.to_dense(parsed[feature.name], default_value="")[:, : feature.max_len]
            parsed[feature.name] = tf.pad(dense, [[0, 0], [0, feature.max_len - tf.shape(dense)[1]]])
        return parsed

    records = tf.data.TFRecordDataset(files).shuffle(inputs.DEFAULT_SHUFFLE_BUFFER, seed=seed).repeat()
    return records.batch(batch_size, drop_remainder=True).map(parse_batch).prefetch(tf.data.AUTOTUNE)


def reader_reference(data: train.TrainingData, args: argparse.Namespace) -> dict:
    """--tfds-dir: the pairs reader alone, as training reads them (TFDS per-example decoding,
    ``inputs.batch``) vs the batch-parsed records reference; median (wall, cpu) examples/s."""
    readers = {
        "tfds_per_example (training)": data.batch_pairs(args.batch_size, 0),
        "records_batch_parsed (reference)": batch_parsed_pairs(
            f"synthetic_catalog/{args.catalog}", args.tfds_dir, args.batch_size, 0
        ),
    }
    out = {}
    for name, dataset in readers.items():
        rates = [steady_input(dataset, args.steps, args.skip, args.batch_size) for _ in range(args.repeats)]
        out[name] = {"wall": statistics.median(r[0] for r in rates), "cpu": statistics.median(r[1] for r in rates)}
        print(f"  pairs reader {name}: {out[name]['wall']:,.0f} ex/s wall, {out[name]['cpu']:,.0f} per CPU second")
    return out


def measure(model, dataset, steps: int) -> tuple[float, float]:
    """(pairs per wall-clock second, pairs per CPU second) of one fit() of ``steps`` steps.

    CPU seconds (all of this process's threads) measure the work a step costs; on a machine
    shared with other jobs they are far steadier than wall-clock time.
    """
    wall, cpu = time.perf_counter(), time.process_time()
    model.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0)
    examples = steps * model.bench_batch_size
    return examples / (time.perf_counter() - wall), examples / (time.process_time() - cpu)


class _Clock(tf.keras.callbacks.Callback):
    """Wall-clock and CPU time at the end of batch ``skip`` - 1 and of the last batch."""

    def __init__(self, skip: int):
        super().__init__()
        self.skip, self.marks = skip, []

    def on_train_batch_end(self, batch, logs=None):
        if batch == self.skip - 1 or batch == self.params["steps"] - 1:
            self.marks.append((time.perf_counter(), time.process_time()))


def steady_fit(model, dataset, steps: int, skip: int, batch_size: int) -> tuple[float, float]:
    """(pairs per wall-clock second, per CPU second) of train steps ``skip`` .. ``skip + steps``
    of one fit(): its fresh iterator's start (shuffle-buffer fill) is left out."""
    clock = _Clock(skip)
    model.fit(dataset, epochs=1, steps_per_epoch=skip + steps, verbose=0, callbacks=[clock])
    (wall0, cpu0), (wall1, cpu1) = clock.marks
    return steps * batch_size / (wall1 - wall0), steps * batch_size / (cpu1 - cpu0)


def steady_input(dataset, steps: int, skip: int, batch_size: int) -> tuple[float, float]:
    """(pairs per wall-clock second, per CPU second) of reading batches ``skip`` .. ``skip + steps``
    of a fresh iterator over ``dataset``, with no model: the input pipeline alone."""
    iterator = iter(dataset)
    for _ in range(skip):
        next(iterator)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        next(iterator)
    return steps * batch_size / (time.perf_counter() - wall), steps * batch_size / (time.process_time() - cpu)


METHODS = ("baseline", "ssl_cfm")


def _models(data: train.TrainingData, batch_size: int, cached: bool) -> dict:
    """method -> (compiled model, its training dataset), warmed up (traced)."""
    runs = {}
    for name in METHODS:
        config = cfg.replace(cfg.load_config(CONFIGS_DIR / f"{name}.yaml"), train={"batch_size": batch_size})
        model = train.build_model(config, data)
        model.bench_batch_size = batch_size
        dataset = train.training_dataset(config, data, seed=0)
        if cached:  # the model's cost alone: the same few batches, materialised
            dataset = dataset.take(10).cache().repeat()
        model.fit(dataset, epochs=1, steps_per_epoch=12, verbose=0)  # warm-up: tracing, caches
        runs[name] = (model, dataset)
    return runs


def methods_ratio(data: train.TrainingData, args: argparse.Namespace) -> dict:
    """SSL-CFM / baseline examples/s (the default mode)."""
    runs = _models(data, args.batch_size, cached=args.input == "cached")
    wall: dict[str, list[float]] = {name: [] for name in runs}
    cpu: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, (model, dataset) in runs.items():
            rate_wall, rate_cpu = measure(model, dataset, args.steps)
            wall[name].append(rate_wall)
            cpu[name].append(rate_cpu)
    device = "GPU" if tf.config.list_physical_devices("GPU") else "CPU"
    result = {"device": device, "input": args.input, "batch_size": args.batch_size, "items": args.items}
    result.update(steps=args.steps, repeats=args.repeats)
    print(
        f"train throughput on {device} ({args.input} input), batch {args.batch_size}, {args.items} items, "
        f"median of {args.repeats} x {args.steps} steps:"
    )
    for clock, rates in (("wall-clock", wall), ("cpu-time", cpu)):
        # Adjacent measurements share the machine's load at that moment: the median of each
        # repeat's ratio is steadier than the ratio of medians on a shared machine.
        ratios = [s / b for b, s in zip(rates["baseline"], rates["ssl_cfm"])]
        baseline, ssl = statistics.median(rates["baseline"]), statistics.median(rates["ssl_cfm"])
        ratio = statistics.median(ratios)
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
    return result


STAGES = ("input", "train_step", "model_step")
RATIOS = (("input", "model_step"), ("input", "train_step"), ("train_step", "model_step"))


def _measure_stages(model, pipeline, cached, args: argparse.Namespace) -> dict[str, tuple[float, float]]:
    """stage -> (wall, cpu) examples/s: the pipeline alone, the train step on it, on cached batches."""
    return {
        "input": steady_input(pipeline, args.steps, args.skip, args.batch_size),
        "train_step": steady_fit(model, pipeline, args.steps, args.skip, args.batch_size),
        "model_step": steady_fit(model, cached, args.steps, args.skip, args.batch_size),
    }


def input_vs_step(data: train.TrainingData, args: argparse.Namespace) -> dict:
    """Per method: the input pipeline alone, the train step fed by it, the model step alone."""
    runs = _models(data, args.batch_size, cached=False)
    rates = {name: {clock: {stage: [] for stage in STAGES} for clock in ("wall", "cpu")} for name in runs}
    for _ in range(args.repeats):
        for name, (model, pipeline) in runs.items():
            measured = _measure_stages(model, pipeline, pipeline.take(10).cache().repeat(), args)
            for stage, (wall, cpu) in measured.items():
                rates[name]["wall"][stage].append(wall)
                rates[name]["cpu"][stage].append(cpu)
    result = {"device": "GPU" if tf.config.list_physical_devices("GPU") else "CPU", "mode": "input-only"}
    result.update(batch_size=args.batch_size, items=data.num_items, pairs=data.num_pairs, sources=data.sources)
    result.update(steps=args.steps, skip=args.skip, repeats=args.repeats)
    print(f"input vs step on {result['device']}: {data.num_items} items, {data.num_pairs} pairs ({data.sources}),")
    print(f"  batch {args.batch_size}, median of {args.repeats} x {args.steps} steps after {args.skip}; examples/s:")
    result["methods"] = {name: _input_summary(name, by_clock) for name, by_clock in rates.items()}
    print("\n".join(markdown_rows(result)))
    return result


def markdown_rows(result: dict) -> list[str]:
    """The --input-only result as Markdown table rows (median examples/s and ratios, CPU time and wall-clock)."""
    rows = [
        "| method | clock | input alone | train step (pipeline) | model step (cached) | input / model step | "
        "input / train step | train step / model step |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, by_clock in result["methods"].items():
        for clock in ("cpu", "wall"):
            rates, ratios = by_clock[clock]["examples_per_s"], by_clock[clock]["ratios"]
            cells = [f"{rates[stage]:,.0f}" for stage in STAGES] + [f"{ratios[f'{a}/{b}']:.2f}" for a, b in RATIOS]
            rows.append(f"| {name} | {clock} | " + " | ".join(cells) + " |")
    return rows


def _input_summary(name: str, by_clock: dict) -> dict:
    """Medians of each stage's rate and of each repeat's ratios (adjacent measurements share the load)."""
    out = {}
    for clock, rate in by_clock.items():
        ratios = {f"{a}/{b}": [x / y for x, y in zip(rate[a], rate[b])] for a, b in RATIOS}
        out[clock] = {
            "examples_per_s": {stage: statistics.median(values) for stage, values in rate.items()},
            "ratios": {key: statistics.median(values) for key, values in ratios.items()},
            "per_repeat": {**rate, **ratios},
        }
        line = "  ".join(f"{stage} {value:8.0f}" for stage, value in out[clock]["examples_per_s"].items())
        line += "  " + "  ".join(f"{key} {value:.2f}" for key, value in out[clock]["ratios"].items())
        print(f"  {name:8s} {clock:4s}  {line}")
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--pairs", type=int, default=60_000)
    parser.add_argument("--catalog", choices=list(synthetic_catalog.SIZES), help="items/queries/pairs of this size")
    parser.add_argument("--tfds-dir", help="with --catalog: read the pairs from this prepared TFDS folder")
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
    parser.add_argument("--input-only", action="store_true", help="the input pipeline alone vs the model step")
    parser.add_argument("--skip", type=int, default=5, help="--input-only: batches left out at each start")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    if args.tfds_dir and not args.catalog:
        parser.error("--tfds-dir needs --catalog (the synthetic_catalog size prepared there)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    law = {}
    if args.catalog:
        args.items, num_queries, args.pairs = synthetic_catalog.SIZES[args.catalog]
        law = {"num_queries": num_queries}
    started = time.perf_counter()
    data = synthetic_training_data(args.items, args.pairs, **law)
    if args.tfds_dir:
        data = tfds_pairs(data, f"synthetic_catalog/{args.catalog}", args.tfds_dir)
    print(f"data: {time.perf_counter() - started:.0f} s", flush=True)
    result = input_vs_step(data, args) if args.input_only else methods_ratio(data, args)
    if args.input_only and args.tfds_dir:
        result["pairs_readers"] = reader_reference(data, args)
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
