"""Which export version is served: integrity-checked loading, failure records, hot reload.

A version folder ``<model_dir>/<n>`` is *complete* when its manifest is there
(:func:`recsys_ssl.index.versions`). Before a complete version is swapped in,
:func:`load_checked` proves it whole:

1. the folder name equals the manifest's ``version`` (a ``cp -r 1 9`` is not version 9);
2. the item embeddings hash to the manifest's ``embedding_checksum``;
3. the query model's output dimension equals the index's;
4. a smoke query (the all-unknown query, plus a few item vectors used as queries) returns
   ``min(k, corpus)`` distinct item ids of the corpus, whose scores equal the dot products
   with the checked embeddings (a ScaNN ``dataset.npy`` of garbage fails here).

A version that fails is recorded with TF Serving's status vocabulary (``state: END``,
``error_code``, ``error_message``) and is tried again only when its files change (their
paths, sizes and mtimes: :func:`fingerprint`), not on every poll. The poller serves the
highest version that loads; requests see the old or the new version whole (one reference
swap).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import threading
import time
from typing import Callable

import numpy as np

from recsys_ssl import index as index_lib
from recsys_ssl.retrieve import Retriever


class IntegrityError(Exception):
    """A version whose files are present but wrong. ``code`` is TF Serving's error code."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@dataclasses.dataclass
class FailedVersion:
    version: int
    fingerprint: tuple
    error_code: str
    error_message: str

    def status(self) -> dict:
        return {
            "version": str(self.version),
            "state": "END",
            "status": {"error_code": self.error_code, "error_message": self.error_message},
        }


def fingerprint(path: pathlib.Path) -> tuple:
    """(relative path, size, mtime_ns) of every file under a version folder: changes when any file does."""
    entries = []
    for root, _, files in os.walk(path):
        for name in files:
            full = pathlib.Path(root, name)
            try:
                stat = full.stat()
            except OSError:  # removed while we looked: the next poll sees the new state
                continue
            entries.append((str(full.relative_to(path)), stat.st_size, stat.st_mtime_ns))
    return tuple(sorted(entries))


def smoke_instance(signature: list[dict]) -> dict:
    """A query of unknown values for every feature (answered from the out-of-vocabulary rows)."""
    return {f["name"]: ([] if f["kind"] == "multi_categorical" else "") for f in signature}


def load_checked(path: pathlib.Path, smoke_items: int = 4) -> Retriever:
    """Loads one version and proves it whole (module docstring); raises IntegrityError."""
    manifest = index_lib.read_manifest(path)
    if str(manifest.get("version")) != path.name:
        raise IntegrityError(
            "FAILED_PRECONDITION",
            f"{path}: the manifest says version {manifest.get('version')!r}, "
            f"the folder is {path.name!r} (a copied version folder?)",
        )
    try:
        retriever = Retriever(path)
    except Exception as error:  # missing or unreadable files: say which, in one line
        raise IntegrityError(
            "NOT_FOUND" if isinstance(error, FileNotFoundError) else "DATA_LOSS",
            f"{path}: cannot load: {type(error).__name__}: {error}",
        ) from None
    expected = manifest.get("embedding_checksum")
    embeddings = retriever.index.embeddings
    if expected and index_lib.embedding_checksum(embeddings) != expected:
        raise IntegrityError(
            "DATA_LOSS",
            f"{path / index_lib.INDEX_DIR / index_lib.EMBEDDINGS_FILE}: the item "
            f"embeddings do not match the manifest's embedding_checksum",
        )
    _smoke_search(path, retriever, smoke_items)
    return retriever


def _smoke_search(path: pathlib.Path, retriever: Retriever, smoke_items: int) -> None:
    index = retriever.index
    try:
        query = retriever.embed_queries([smoke_instance(retriever.query_signature)])
    except Exception as error:
        raise IntegrityError(
            "FAILED_PRECONDITION", f"{path}: the query model fails on a smoke query: {type(error).__name__}: {error}"
        ) from None
    if query.shape != (1, index.dim):
        raise IntegrityError(
            "FAILED_PRECONDITION",
            f"{path}: the query model outputs {list(query.shape[1:])}-d "
            f"embeddings, the index holds {index.dim}-d items",
        )
    rows = np.linspace(0, index.size - 1, num=min(smoke_items, index.size)).astype(int)
    queries = np.concatenate([query, index.embeddings[rows]]).astype(np.float32)
    k = min(retriever.k, index.size)
    try:
        ids, scores = index.search(queries, k)
    except Exception as error:
        raise IntegrityError(
            "DATA_LOSS", f"{path}: the ScaNN searcher fails a smoke search: {type(error).__name__}: {error}"
        ) from None
    row_of = index.searcher.docid_to_id
    for q, got_ids, got_scores in zip(queries, ids, scores):
        if len(got_ids) != k or len(set(got_ids)) != k or any(i not in row_of for i in got_ids):
            raise IntegrityError(
                "DATA_LOSS",
                f"{path}: a smoke search returned {len(got_ids)} ids, "
                f"{len(set(got_ids))} distinct, expected {k} ids of the corpus",
            )
        exact = index.embeddings[[row_of[i] for i in got_ids]] @ q
        if not np.allclose(got_scores, exact, atol=1e-3, rtol=1e-3):
            raise IntegrityError(
                "DATA_LOSS",
                f"{path}: the ScaNN searcher's scores disagree with "
                f"{index_lib.EMBEDDINGS_FILE} (max difference "
                f"{float(np.max(np.abs(got_scores - exact))):.3g})",
            )


class ModelState:
    """The version being served, the versions that failed, and a poller for newer ones.

    ``on_reload(ok: bool, version: int)`` is called after every load attempt (metrics).
    """

    def __init__(
        self,
        model_dir,
        poll_seconds: float = 5.0,
        log: Callable[[str], None] = print,
        on_reload: Callable[[bool, int], None] | None = None,
    ):
        self.model_dir = pathlib.Path(model_dir)
        self.log = log
        self.on_reload = on_reload or (lambda ok, version: None)
        self.failed: dict[int, FailedVersion] = {}
        self.retriever: Retriever | None = None
        self._lock = threading.Lock()  # one load at a time (poller vs. an explicit refresh)
        self.refresh()
        if self.retriever is None:
            found = index_lib.versions(self.model_dir)
            if not found:
                raise FileNotFoundError(
                    f"{self.model_dir}: no complete export version (a numbered folder with {index_lib.MANIFEST})"
                )
            raise ValueError("no version loads: " + "; ".join(f.error_message for f in self.failed.values()))
        self.model_name = self.retriever.manifest["model_name"]
        self._stop = threading.Event()
        if poll_seconds > 0:
            threading.Thread(target=self._poll, args=(poll_seconds,), daemon=True, name="version-poller").start()

    @property
    def version(self) -> int:
        return self.retriever.version

    def refresh(self) -> bool:
        """Swaps in the highest complete version above the served one that loads; True if it did.

        Versions that failed before are skipped until their files change.
        """
        with self._lock:
            served = self.retriever.version if self.retriever else 0
            for version in sorted(index_lib.versions(self.model_dir), reverse=True):
                if version <= served:
                    return False
                path = self.model_dir / str(version)
                print_ = fingerprint(path)
                known = self.failed.get(version)
                if known is not None and known.fingerprint == print_:
                    continue
                start = time.perf_counter()
                try:
                    retriever = load_checked(path)
                except Exception as error:  # recorded and reported; the served version stays
                    code = error.code if isinstance(error, IntegrityError) else "UNKNOWN"
                    message = (
                        str(error) if isinstance(error, IntegrityError) else f"{path}: {type(error).__name__}: {error}"
                    )
                    self.failed[version] = FailedVersion(version, print_, code, message)
                    self.log(f"version {version} not loaded ({code}): {message}")
                    self.on_reload(False, version)
                    continue
                self.failed.pop(version, None)
                self.retriever = retriever  # one reference swap: requests see old or new, whole.
                self.log(
                    f"now serving version {version} ({retriever.index.size} items, "
                    f"loaded and checked in {time.perf_counter() - start:.2f}s)"
                )
                self.on_reload(True, version)
                return True
            return False

    def _poll(self, seconds: float) -> None:
        while not self._stop.wait(seconds):
            try:
                self.refresh()
            except Exception as error:  # e.g. the model folder vanished: keep serving, say so once a poll
                self.log(f"could not look for newer versions: {type(error).__name__}: {error}")

    def statuses(self, version: str | None = None) -> list[dict] | None:
        """TF Serving's model_version_status entries: the served version first, then failed ones.

        With ``version``, only that version's entry (None when it is neither served nor failed).
        """
        served = {
            "version": str(self.retriever.version),
            "state": "AVAILABLE",
            "status": {"error_code": "OK", "error_message": ""},
        }
        entries = [served] + [f.status() for f in sorted(self.failed.values(), key=lambda f: -f.version)]
        if version is None:
            return entries
        chosen = [e for e in entries if e["version"] == version]
        return chosen or None

    def stop(self) -> None:
        self._stop.set()
