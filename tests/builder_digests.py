"""Every shipped builder on small fixtures, and the digests of what it writes.

``python tests/builder_digests.py tests/data/builder_digests.json`` records them (it was run
on the code before the shared builder template; test_datasets_digests.py compares against it).
"""

from __future__ import annotations

import json
import pathlib
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import raw_fixtures  # noqa: E402

from recsys_ssl.datasets import digest, inputs  # noqa: E402

MOVIELENS = [
    "100k-user-item",
    "100k-item-item",
    "100k-user-item-val",
    "100k-item-item-val",
    "1m-user-item",
    "1m-item-item-val",
]


def build_all(root: pathlib.Path, **load_kwargs) -> dict[str, object]:
    """Builds every fixture dataset under ``root``; returns name -> dataset handle."""
    raw = root / "raw"
    raw_fixtures.write_ml100k(raw / "movielens-100k")
    raw_fixtures.write_ml1m(raw / "movielens-1m")
    tfds_dir = root / "tfds"
    out = {"synthetic_catalog/tiny": inputs.load_dataset("synthetic_catalog/tiny", data_dir=tfds_dir, **load_kwargs)}
    for config in MOVIELENS:
        name = f"movielens/{config}"
        out[name] = inputs.load_dataset(name, data_dir=tfds_dir, raw_data_dir=raw, **load_kwargs)
    for name, with_queries, split_column in (("shop", True, None), ("shop_rows", False, "split")):
        configs = raw_fixtures.interactions_csv_configs(root / "csv" / name, name, split_column, with_queries)
        out[f"interactions_csv/{name}"] = inputs.load_dataset(
            f"interactions_csv/{name}", data_dir=tfds_dir, csv_configs=configs, **load_kwargs
        )
    return out


def digests(datasets: dict) -> dict[str, dict]:
    """'<name>' and '<name> items' -> split -> {examples, sha256}."""
    out = {}
    for name, ds in datasets.items():
        out[name] = digest.split_digests(ds.pairs_builder.data_dir)
        out[f"{name} items"] = digest.split_digests(ds.items_builder.data_dir)
    return out


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        found = digests(build_all(pathlib.Path(tmp)))
    pathlib.Path(sys.argv[1]).write_text(json.dumps(found, indent=1, sort_keys=True) + "\n")
