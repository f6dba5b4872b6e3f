"""``recsys-ssl index``: manage an exported ScaNN index (``add`` new items, ``info``).

The CLI of :mod:`recsys_ssl.index`, kept apart so that the index library imports neither this
command nor the SavedModel signature helpers it needs (:mod:`recsys_ssl.retrieve`), and the
two stay free of an import cycle.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import sys
import time

import numpy as np

from recsys_ssl.index import (
    INDEX_DIR,
    ItemIndex,
    embedding_checksum,
    next_version,
    publish,
    read_manifest,
    resolve_model_dir,
    staging_dir,
    version_dir,
)
from recsys_ssl.paths import DEFAULT_RUN_DIR


def add_items(version_path: pathlib.Path, items_file: str, *, batch_size: int = 1024, log=print) -> pathlib.Path:
    """Embeds the items in ``items_file`` (JSON lines of item features) with the version's
    item_model and publishes a new version whose index holds them. Returns the new version."""
    from recsys_ssl import retrieve  # TensorFlow: only `add` needs it.

    manifest = read_manifest(version_path)
    item_sig = manifest["signatures"]["item_features"]
    item_key = manifest["item_key"]
    rows = retrieve.read_jsonl(items_file)
    instances = [row for _, row in rows]
    for line, row in rows:
        retrieve.validate_instance(row, item_sig, where=f"{items_file}:{line}", extra_ok=())
    embed = retrieve.load_signature(version_path / "item_model", "serving_default")
    embeddings = []
    for start in range(0, len(instances), batch_size):
        arrays = retrieve.instances_to_arrays(instances[start : start + batch_size], item_sig)
        embeddings.append(retrieve.call_signature(embed, arrays)["embedding"])
    embeddings = np.concatenate(embeddings) if embeddings else np.zeros((0, 0), np.float32)
    new_ids = [str(row[item_key]) for row in instances]

    index = ItemIndex.load(version_path / INDEX_DIR)
    added, updated = index.add(new_ids, embeddings)
    model_dir = version_path.parent
    version = next_version(model_dir)
    staging = staging_dir(model_dir, version)
    # SavedModels are immutable: hard-link them into the new version (a copy where links fail).
    for child in version_path.iterdir():
        if child.is_dir() and child.name != INDEX_DIR:
            shutil.copytree(child, staging / child.name, copy_function=_link_or_copy)
    index.save(staging / INDEX_DIR)
    manifest = dict(manifest)
    manifest.update(
        version=version,
        base_version=int(version_path.name),
        corpus_size=index.size,
        embedding_checksum=embedding_checksum(index.embeddings),
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
    manifest.setdefault("added_items", []).append({"file": str(items_file), "added": added, "updated": updated})
    # The SavedModels' own top_k / retrieval_scann corpora are the exported one; say so.
    manifest["savedmodel_corpus_size"] = manifest.get("savedmodel_corpus_size", manifest["corpus_size"] - added)
    final = publish(staging, model_dir, version, manifest)
    log(f"index add: {added} new, {updated} updated items -> {final} ({index.size} items)")
    return final


def _link_or_copy(src, dst):
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="recsys-ssl index", description="Manage the exported ScaNN index.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_ in (
        ("add", "embed new items with item_model and add them to the index (new version)"),
        ("info", "print the manifest of an export version"),
    ):
        p = sub.add_parser(name, help=help_)
        p.add_argument("--run-dir", default=DEFAULT_RUN_DIR, help="pipeline run folder (export under <run-dir>/export)")
        p.add_argument("--export-dir", default=None, help="export root (default <run-dir>/export)")
        p.add_argument("--model-name", default=None, help="model under the export root (default: the only one)")
        p.add_argument("--version", type=int, default=None, help="version to start from (default: latest)")
        if name == "add":
            p.add_argument("--items", required=True, help="JSON lines file, one item (all item features) per line")
            p.add_argument("--batch-size", type=int, default=1024)
    return parser


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    from recsys_ssl.paths import RunLayout

    export_dir = args.export_dir or RunLayout(args.run_dir).export
    try:
        path = version_dir(resolve_model_dir(export_dir, args.model_name), args.version)
        if args.command == "info":
            print(json.dumps(read_manifest(path), indent=2))
        else:
            add_items(path, args.items, batch_size=args.batch_size)
    except (FileNotFoundError, ValueError) as error:
        print(f"recsys-ssl index: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
