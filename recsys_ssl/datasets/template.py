"""The template of the project's TFDS builders (:class:`PairedBuilder`), above its two writers.

A builder fills in ``spec()`` and ``read()``; the template writes the examples with TFDS's
writer, with the fast in-process writer (:mod:`recsys_ssl.datasets.example_writer`: the same
examples, serialized once per item and query), or through Beam
(:mod:`recsys_ssl.datasets.beam_generate`: the fast writer's records, written by Beam
transforms) when the download config carries Beam options.
The shared tables, splits and feature dicts it uses live in :mod:`recsys_ssl.datasets._common`,
below all three.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from recsys_ssl import features as features_lib
from recsys_ssl.datasets._common import (
    ITEMS,
    ITEMS_SPLIT,
    PAIRS_SPLITS,
    VERSION,
    Tables,
    item_examples,
    items_features,
    num_rows,
    pair_examples,
    pairs_features,
    to_str_columns,
)


class LocalBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A builder that never downloads: raw inputs come from ``manual_dir`` or are generated.

    ``skip_registration``: TFDS already registers a ``movielens``; ours are reached through
    :func:`recsys_ssl.datasets.inputs.load_dataset`, never ``tfds.load``.
    """

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls):
        # TFDS's own lookup goes through `importlib_resources` (not installed) for packages
        # like ours; the builder's file is all it needs (to look for url checksums: none).
        import inspect

        from etils import epath

        return epath.Path(inspect.getfile(cls))


class PairedBuilder(LocalBuilder, skip_registration=True):
    """The template of the project's builders: ``_info``, ``_split_generators`` and
    ``_generate_examples`` written once; a builder fills in :meth:`spec` (the features) and
    :meth:`read` (the rows), and optionally :meth:`static_metadata` and ``HOMEPAGE``.

    A pairs config writes ``train`` / ``train_10pct`` / ``test`` (the non-empty ones: TFDS
    cannot write an empty split; the empty ones are listed in the metadata's ``empty_splits``
    and :meth:`inputs.Dataset.pairs` serves them empty); an items config writes ``items``.
    The dataset's description is the builder module's docstring.
    """

    VERSION = VERSION
    HOMEPAGE: str | None = None

    def spec(self) -> features_lib.FeatureSpec:
        raise NotImplementedError

    def read(self, dl_manager: Any) -> Tables:
        raise NotImplementedError

    def static_metadata(self) -> dict:
        """Metadata known before reading (written with the dataset info)."""
        return {}

    def text_columns(self, columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """String columns for the writer in use: bytes as they are for the fast writer and Beam
        (datasets/example_writer.py takes str or bytes), str for TFDS's (:func:`to_str_columns`)."""
        own_writer = getattr(self, "_fast", False) or getattr(self, "_beam", False)
        return columns if own_writer else to_str_columns(columns)

    def is_items(self) -> bool:
        return self.builder_config.kind == ITEMS

    def _info(self) -> tfds.core.DatasetInfo:
        spec = self.spec()
        return tfds.core.DatasetInfo(
            builder=self,
            description=sys.modules[type(self).__module__].__doc__,
            features=items_features(spec) if self.is_items() else pairs_features(spec),
            metadata=tfds.core.MetadataDict(self.static_metadata()),
            homepage=self.HOMEPAGE,
            disable_shuffling=True,
        )

    def _download_and_prepare(self, dl_manager: Any, download_config: Any) -> None:
        # Beam options in the DownloadConfig: generate with Beam (datasets/beam_generate.py).
        self._beam = bool(download_config.beam_runner or download_config.beam_options)
        self._fast = self._fast_writer(download_config)
        if self._beam:
            self._write_beam(dl_manager, download_config)
        elif self._fast:
            self._write_fast(dl_manager, download_config)
        else:
            super()._download_and_prepare(dl_manager, download_config)

    def _split_generators(self, dl_manager: Any):  # TFDS's own writer (RECSYS_SSL_EXAMPLE_WRITER=tfds)
        tables = self.read(dl_manager)
        self.info.metadata.update(tables.metadata)
        if self.is_items():
            return {ITEMS_SPLIT: self._generate_examples(item_examples(tables.items))}
        return self._pair_generators(tables)

    def _pair_generators(self, tables: Tables) -> dict:
        return {
            split: self._generate_examples(pair_examples(tables.pairs, split, tables.queries, tables.items))
            for split in self._pair_metadata(tables)
        }

    def _pair_metadata(self, tables: Tables) -> list[str]:
        """Adds the pair counts, head share and empty splits to the metadata; returns the non-empty splits."""
        table = tables.pairs
        counts = self.info.metadata.setdefault("counts", {})
        split_counts = table.split_counts()
        counts.update(split_counts, pairs=table.num_pairs, head_share=table.head_share(num_rows(tables.items)))
        empty = [split for split in PAIRS_SPLITS if split_counts[split] == 0]
        self.info.metadata["empty_splits"] = empty
        return [split for split in PAIRS_SPLITS if split not in empty]

    def _fast_writer(self, download_config: Any) -> bool:
        """Whether to write with datasets/example_writer.py: in-process, local files, no example cap."""
        from recsys_ssl.datasets import example_writer

        return (
            not self._beam
            and download_config.max_examples_per_split is None
            and example_writer.is_local(self.data_path)
            and example_writer.enabled()
        )

    def _write_fast(self, dl_manager: Any, download_config: Any) -> None:
        """The splits written by datasets/example_writer.py (the same examples as TFDS's writer)."""
        from recsys_ssl.datasets import example_writer as ew

        tables = self.read(dl_manager)
        self.info.metadata.update(tables.metadata)
        multi = ew.multi_valued_of(self.info.features)
        shard_config = download_config.get_shard_config()
        # The query table first: it may share arrays with the item table, which is released as it goes.
        query_blobs = None if self.is_items() else ew.row_blobs(tables.queries, multi, "queries")
        item_blobs = ew.row_blobs(tables.items, multi, "items", release=True)
        tables.items = {"": range(len(item_blobs))}  # the blobs hold the item table now
        if self.is_items():
            infos = [ew.write_split(self, ITEMS_SPLIT, ew.item_records(item_blobs), shard_config)]
        else:
            # A PairsTable, or a SpilledPairs (datasets/spilled_pairs.py) whose files go when written.
            pairs, infos = tables.pairs, []
            try:
                for split in self._pair_metadata(tables):
                    parts = pairs.split_parts(split, ew.CHUNK)  # in key order, as TFDS's writer orders them
                    batches = (ew.pair_records(part, rows, query_blobs, item_blobs, multi) for part, rows in parts)
                    infos.append(ew.write_split(self, split, batches, shard_config))
            finally:
                getattr(pairs, "close", lambda: None)()
        self.info.set_splits(tfds.core.SplitDict(infos))

    def _write_beam(self, dl_manager: Any, download_config: Any) -> None:
        """The splits generated and written by a Beam pipeline (datasets/beam_generate.py: the
        fast writer's examples); the split sizes are known once it ran."""
        from recsys_ssl.datasets import beam_generate
        from recsys_ssl.datasets import example_writer as ew

        tables = self.read(dl_manager)
        self.info.metadata.update(tables.metadata)
        splits = [ITEMS_SPLIT] if self.is_items() else list(PAIRS_SPLITS)
        templates = {split: self._get_filename_template(split_name=split) for split in splits}
        multi = ew.multi_valued_of(self.info.features)
        written = beam_generate.generate(tables, multi, templates, download_config.get_shard_config(), download_config)
        self.info.set_splits(
            tfds.core.SplitDict([ew.split_info(s, templates[s], *written[s]) for s in splits if s in written])
        )
        if not self.is_items():
            # head_share: in-process only (it needs the train split's item counts in one place)
            counts = self.info.metadata.setdefault("counts", {})
            counts.update({s: int(self.info.splits[s].num_examples) if s in written else 0 for s in PAIRS_SPLITS})
            counts.update(pairs=int(len(tables.pairs.item_rows)), head_share=None)
            self.info.metadata["empty_splits"] = [s for s in PAIRS_SPLITS if s not in written]

    def _generate_examples(self, examples):  # the example iterators are made in _split_generators
        yield from examples
