"""Readers and writers of the batch jobs' artifacts (statistics and mutual information).

The Beam jobs (``pipelines/``) write these files; the model and the evaluation read them
through this module, which imports neither TensorFlow nor Beam (a path with a scheme such as
``gs://`` goes through Beam's ``FileSystems``, imported only then).

Layout (see docs/batch-jobs.md)::

    <run_dir>/stats/manifest.json              job, dataset, spec, inputs, counts, versions, created
    <run_dir>/stats/vocab/<feature>.txt        one value per line, most frequent first, ties by value
    <run_dir>/stats/item_frequencies.tsv       item_id<TAB>count over TRAIN pairs, count desc then id asc
    <run_dir>/stats/dead_letter/               bad rows, one JSON object per line
    <run_dir>/mi/manifest.json
    <run_dir>/mi/mi_matrix.json                {"features", "mi", "nmi", "emi", "ami", "unit": "nats", "diagonal": ...}
    <run_dir>/mi/mi_matrix.csv, nmi_matrix.csv, ami_matrix.csv
    <run_dir>/mi/cfm_groups.json               {"features", "group_size", "ranked_partners", "groups",
                                                "by_grouping": {"plugin" | "adjusted" | "normalized": {...}}}
"""

from __future__ import annotations

import csv
import datetime
import io
import json
import os
import platform
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

MANIFEST = "manifest.json"
VOCAB_DIR = "vocab"
ITEM_FREQUENCIES = "item_frequencies.tsv"
DEAD_LETTER_DIR = "dead_letter"
MI_JSON = "mi_matrix.json"
MI_CSV = "mi_matrix.csv"
NMI_CSV = "nmi_matrix.csv"
AMI_CSV = "ami_matrix.csv"
CFM_GROUPS = "cfm_groups.json"

# MI values closer than this count as a tie when ranking partners, so that the ranking (and
# the CFM groups) do not depend on float summation order, which differs between runners.
RANK_DECIMALS = 12


# -- files (local paths or any Beam filesystem) ---------------------------------------------
def _is_remote(path: str) -> bool:
    return "://" in str(path)


def join(*parts: str | os.PathLike) -> str:
    """Joins path parts with '/' (works for local paths and gs://, hdfs://, s3:// URLs)."""
    head, *rest = [str(p) for p in parts]
    for part in rest:
        head = head.rstrip("/") + "/" + part.lstrip("/")
    return head


def write_text(path: str | os.PathLike, text: str) -> None:
    """Writes ``text`` (UTF-8) to ``path``, creating parent folders for local paths."""
    path = str(path)
    if _is_remote(path):
        from apache_beam.io.filesystems import FileSystems

        with FileSystems.create(path) as handle:
            handle.write(text.encode("utf-8"))
        return
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8", newline="") as handle:
        handle.write(text)
    os.replace(tmp, path)  # readers never see a half-written artifact


def read_text(path: str | os.PathLike) -> str:
    path = str(path)
    if _is_remote(path):
        from apache_beam.io.filesystems import FileSystems

        with FileSystems.open(path) as handle:
            return handle.read().decode("utf-8")
    with open(path, encoding="utf-8", newline="") as handle:
        return handle.read()


def exists(path: str | os.PathLike) -> bool:
    path = str(path)
    if _is_remote(path):
        from apache_beam.io.filesystems import FileSystems

        return FileSystems.exists(path)
    return os.path.exists(path)


# -- manifests ------------------------------------------------------------------------------
def versions() -> dict[str, str]:
    """Versions of the stack that produced an artifact (no heavy import: package metadata)."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for package in ("recsys_ssl", "apache-beam", "numpy", "pyarrow"):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = "not installed"
    return out


def make_manifest(
    job: str,
    *,
    dataset: str | None,
    spec: Mapping[str, Any] | None,
    inputs: Mapping[str, Any],
    counts: Mapping[str, Any],
    options: Mapping[str, Any] | None = None,
    created: str | None = None,
) -> dict[str, Any]:
    return {
        "job": job,
        "dataset": dataset,
        "spec": spec,
        "inputs": dict(inputs),
        "counts": dict(counts),
        "options": dict(options or {}),
        "versions": versions(),
        "created": created or datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def read_manifest(directory: str | os.PathLike) -> dict[str, Any]:
    return json.loads(read_text(join(directory, MANIFEST)))


# -- statistics -----------------------------------------------------------------------------
def vocab_text(values: Iterable[str]) -> str:
    return "".join(f"{v}\n" for v in values)


def item_frequencies_text(pairs: Iterable[tuple[str, int]]) -> str:
    return "".join(f"{item}\t{count}\n" for item, count in pairs)


def read_vocabulary(stats_dir: str | os.PathLike, feature: str) -> list[str]:
    """The vocabulary of one feature, most frequent first (no padding/missing value "")."""
    text = read_text(join(stats_dir, VOCAB_DIR, f"{feature}.txt"))
    return text.split("\n")[:-1] if text else []


def read_vocabularies(stats_dir: str | os.PathLike) -> dict[str, list[str]]:
    """feature -> vocabulary, for every feature listed in the stats manifest."""
    manifest = read_manifest(stats_dir)
    return {feature: read_vocabulary(stats_dir, feature) for feature in manifest["counts"]["vocab_sizes"]}


def read_item_frequencies(stats_dir: str | os.PathLike) -> dict[str, int]:
    """item id -> number of TRAIN pairs with that item (every corpus item; 0 when unseen)."""
    out: dict[str, int] = {}
    for line_number, line in enumerate(read_text(join(stats_dir, ITEM_FREQUENCIES)).split("\n"), 1):
        if not line:
            continue
        item, sep, count = line.rpartition("\t")
        if not sep:
            raise ValueError(
                f"{join(stats_dir, ITEM_FREQUENCIES)}:{line_number}: expected item<TAB>count, got {line!r}"
            )
        out[item] = int(count)
    return out


# -- mutual information ---------------------------------------------------------------------
def default_group_size(num_features: int) -> int:
    """|F_m| = round(k/2) (Python's round: half to even), at least 1."""
    return max(1, int(round(num_features / 2)))


def rank_partners(features: Sequence[str], mi: np.ndarray) -> dict[str, list[str]]:
    """seed -> every other feature by MI with the seed, descending; ties by feature name."""
    mi = np.round(np.asarray(mi, dtype=np.float64), RANK_DECIMALS)
    ranked = {}
    for i, seed in enumerate(features):
        others = [(-mi[i, j], name) for j, name in enumerate(features) if j != i]
        ranked[seed] = [name for _, name in sorted(others)]
    return ranked


GROUPINGS = ("plugin", "adjusted", "normalized")  # the dependence measure CFM groups rank by


def cfm_groups(
    features: Sequence[str],
    mi: np.ndarray,
    group_size: int | None = None,
    by_grouping: Mapping[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """The CFM masking groups: for each seed, the seed and its ``group_size - 1`` top partners.

    The top level ranks by ``mi``; ``by_grouping`` ({measure: matrix}) adds the same ranked by
    each measure under ``"by_grouping"`` (what ``ssl.cfm_grouping`` chooses from).
    """
    features = list(features)
    size = default_group_size(len(features)) if group_size is None else int(group_size)
    if not 1 <= size <= len(features):
        raise ValueError(f"group_size must be in [1, {len(features)}], got {size}")

    def ranked_groups(matrix) -> dict[str, Any]:
        ranked = rank_partners(features, matrix)
        return {"ranked_partners": ranked, "groups": {seed: [seed] + ranked[seed][: size - 1] for seed in features}}

    out = {"features": features, "group_size": size, **ranked_groups(mi)}
    if by_grouping:
        out["by_grouping"] = {name: ranked_groups(matrix) for name, matrix in by_grouping.items()}
    return out


def cfm_ranked_partners(groups: Mapping[str, Any], grouping: str = "plugin") -> dict[str, list[str]]:
    """The ranked partners of ``cfm_groups.json`` under one measure (``GROUPINGS``)."""
    if grouping not in GROUPINGS:
        raise ValueError(f"ssl.cfm_grouping must be one of {list(GROUPINGS)}, got {grouping!r}")
    if grouping == "plugin":
        return groups["ranked_partners"]
    if grouping not in groups.get("by_grouping", {}):
        raise ValueError(
            f"cfm_groups.json has no {grouping!r} grouping (written by an older `recsys-ssl mi`); run the MI job again"
        )
    return groups["by_grouping"][grouping]["ranked_partners"]


def _matrix_csv(features: Sequence[str], matrix: np.ndarray) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["feature", *features])
    for name, row in zip(features, matrix):
        writer.writerow([name, *(repr(float(v)) for v in row)])
    return buffer.getvalue()


def mi_files(
    features: Sequence[str],
    mi: np.ndarray,
    nmi: np.ndarray,
    entropy: np.ndarray,
    group_size: int | None = None,
    emi: np.ndarray | None = None,
    ami: np.ndarray | None = None,
) -> dict[str, str]:
    """relative path -> text of the MI artifacts (the manifest is written separately).

    emi / ami: expected MI under independence and adjusted MI (both or neither).
    """
    features = list(features)
    matrix = {
        "features": features,
        "mi": np.asarray(mi, dtype=float).tolist(),
        "nmi": np.asarray(nmi, dtype=float).tolist(),
        "entropy": np.asarray(entropy, dtype=float).tolist(),
        "unit": "nats",
        "diagonal": "mi[i][i] is the entropy H(V_i); nmi[i][i] = 1 (0 for a constant feature)",
        "normalisation": "nmi = mi / sqrt(H_i * H_j), 0 where an entropy is 0",
    }
    files = {MI_CSV: _matrix_csv(features, mi), NMI_CSV: _matrix_csv(features, nmi)}
    by_grouping = None
    if ami is not None:
        matrix["emi"] = np.asarray(emi, dtype=float).tolist()
        matrix["ami"] = np.asarray(ami, dtype=float).tolist()
        matrix["adjustment"] = (
            "emi: E[MI] of independent features with the same value counts (permutation model); "
            "ami = (mi - emi) / ((H_i + H_j) / 2 - emi) (Vinh et al. 2010)"
        )
        files[AMI_CSV] = _matrix_csv(features, ami)
        by_grouping = {"plugin": mi, "adjusted": ami, "normalized": nmi}
    files[MI_JSON] = json.dumps(matrix, indent=1) + "\n"
    files[CFM_GROUPS] = json.dumps(cfm_groups(features, mi, group_size, by_grouping), indent=1) + "\n"
    return files


def write_files(directory: str | os.PathLike, files: Mapping[str, str]) -> None:
    for relative, text in files.items():
        write_text(join(directory, relative), text)


def read_mi(mi_dir: str | os.PathLike) -> tuple[list[str], np.ndarray]:
    """(features, MI matrix [k, k] in nats; the diagonal holds each feature's entropy)."""
    data = json.loads(read_text(join(mi_dir, MI_JSON)))
    return list(data["features"]), np.asarray(data["mi"], dtype=np.float64)


def read_cfm_groups(mi_dir: str | os.PathLike) -> dict[str, Any]:
    """{"features", "group_size", "ranked_partners": {seed: [...]}, "groups": {seed: [seed, ...]}}."""
    return json.loads(read_text(join(mi_dir, CFM_GROUPS)))


def dumps_json(obj: Any) -> str:
    return json.dumps(obj, indent=1, sort_keys=False, default=str) + "\n"
