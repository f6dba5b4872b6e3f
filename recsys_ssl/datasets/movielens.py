"""``movielens``: MovieLens 100K / 1M from the GroupLens raw files (TFDS ``manual_dir``).

Nothing is downloaded: the raw files are read from ``manual_dir`` (default
``<raw data root>/movielens-100k`` or ``movielens-1m``, see ``recsys_ssl.paths``).

Configs (paired, as TFDS's own ``movielens/*``): ``{100k,1m}-user-item`` and
``{100k,1m}-item-item`` hold pairs (splits ``train``, ``train_10pct``, ``test``);
``{100k,1m}-items`` holds the item corpus (every movie of u.item / movies.dat once).

Features (all strings; names follow TFDS's ``movielens/*`` where they overlap):
  items: ``movie_id``, ``movie_genres`` (multi), ``movie_release_year`` ("" when unknown, e.g.
    100K item 267), ``movie_release_decade`` ("1990s"), ``movie_title_tokens`` (multi: the
    lower-cased words of the title without its "(year)").
  users: ``user_id``, ``bucketized_user_age`` (TFDS's buckets 1, 18, 25, 35, 45, 50, 56: the
    largest bucket <= age), ``user_gender`` ("M"/"F"), ``user_occupation_text``,
    ``user_zip_prefix`` (first 3 characters of the zip code).
  user -> item pairs also carry ``user_recent_movie_ids`` (multi): the user's last 10 movies
    before the interaction, newest first; a test pair sees only its user's train part
    (:func:`recent_movies`). Item -> item queries are the seed movie's features.

Tasks and splits (../shared/bench/PROTOCOL.md): every rating is one implicit interaction.
Per user, interactions are sorted by (timestamp, movie id); the last ceil(0.2 n_u) are the
user's *test part*, the rest the train part.
  user-item: user -> movie; an interaction is in test iff it is in its user's test part.
  item-item: each user's consecutive interactions give seed -> next pairs (n_u - 1 per user),
    query features ``seed_movie_*``; a pair goes to test iff its TARGET interaction is in the
    user's test part (so the pair from the last train movie to the first test movie is a test
    pair, and no test pair's target was seen in training for that user). A pair's timestamp is
    its target's.
``train_10pct`` is a uniform 10% sample of train (seeded), with the same test set.

Validation carve-out (``{100k,1m}-{user-item,item-item}-val``, for tuning): the project's
one carve-out rule (:func:`_common.validation_split`, the same that ``inputs`` applies to every
other dataset's ``<name>-val``) applied WITHIN the protocol's train part. The protocol's test
interactions are left out entirely; of each user's train part, the last ceil(10% n) by
(timestamp, movie id) are the validation "test" split and the rest its "train" split (the item
corpus is the same). MovieLens builds it as its own config because ``user_recent_movie_ids``
must be recomputed: a validation pair may only see the validation-train part of the history.
Tuning on it never sees the protocol's test set.

Bad input: a missing raw file raises FileNotFoundError naming the file and the manual_dir;
a malformed row (wrong number of fields, non-integer id, duplicate id) raises ValueError
naming file and line. Ratings of unknown users or movies are dropped and counted in the
metadata (``dropped``) and the build summary.
"""

from __future__ import annotations

import collections
import dataclasses
import pathlib
import re
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from recsys_ssl import features as features_lib
from recsys_ssl import paths
from recsys_ssl.datasets import _common, template

RAW_DIRS = {"100k": "movielens-100k", "1m": "movielens-1m"}
RAW_FILES = {"100k": ("u.data", "u.item", "u.user"), "1m": ("ratings.dat", "movies.dat", "users.dat")}
TASKS = ("user-item", "item-item")
SPECS = {"user-item": "movielens_user_item", "item-item": "movielens_item_item"}
AGE_BUCKETS = (1, 18, 25, 35, 45, 50, 56)
ML100K_GENRES = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)
# ml-1m's users.dat codes occupations; the texts of its README (as TFDS's movielens/1m-*).
ML1M_OCCUPATIONS = (
    "other/not specified",
    "academic/educator",
    "artist",
    "clerical/admin",
    "college/grad student",
    "customer service",
    "doctor/health care",
    "executive/managerial",
    "farmer",
    "homemaker",
    "K-12 student",
    "lawyer",
    "programmer",
    "retired",
    "sales/marketing",
    "scientist",
    "self-employed",
    "technician/engineer",
    "tradesman/craftsman",
    "unemployed",
    "writer",
)
SEED = 0  # of the 10% train sample and the write order
RECENT_FEATURE = "user_recent_movie_ids"  # user -> item query feature: the user's latest movies
RECENT_LENGTH = 10

MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download the MovieLens archives from https://grouplens.org/datasets/movielens/ and unpack them
(their license forbids redistribution, so nothing here downloads them):
  ml-100k.zip -> <raw data root>/movielens-100k/{u.data,u.item,u.user}
  ml-1m.zip   -> <raw data root>/movielens-1m/{ratings.dat,movies.dat,users.dat}
The raw data root is --data-dir, else $RECSYS_SSL_DATA, else ../shared/data.
"""

_YEAR_IN_TITLE = re.compile(r"\s*\((\d{4})\)\s*$")
_DATE_YEAR = re.compile(r"^\d{1,2}-[A-Za-z]{3}-(\d{4})$")
_WORD = re.compile(r"\w+(?:'\w+)*")


def title_tokens(title: str) -> list[str]:
    """Lower-cased words of a title without its trailing "(year)": 'Toy Story (1995)' -> ['toy', 'story']."""
    return _WORD.findall(_YEAR_IN_TITLE.sub("", title).lower())


def title_year(title: str) -> str:
    match = _YEAR_IN_TITLE.search(title)
    return match.group(1) if match else ""


def decade(year: str) -> str:
    return f"{year[:3]}0s" if year else ""


def age_bucket(age: int) -> str:
    """TFDS's bucketized_user_age: the largest of (1, 18, 25, 35, 45, 50, 56) <= age (1 below 18)."""
    return str(max([b for b in AGE_BUCKETS if b <= age] or [AGE_BUCKETS[0]]))


class RawFileError(ValueError):
    """A malformed row of a raw file; the message names the file and the line."""


def _parse_int(value: str, path: pathlib.Path, line_no: int, field: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise RawFileError(f"{path}:{line_no}: {field} must be an integer, got {value!r}") from None


def _rows(path: pathlib.Path, separator: str, num_fields: int, encoding: str, counts: collections.Counter):
    """Yields (line_no, fields) of a raw file; a row with another field count raises RawFileError."""
    with open(path, encoding=encoding, newline="") as f:
        for line_no, line in enumerate(f, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                counts[f"blank_lines:{path.name}"] += 1
                continue
            fields = line.split(separator)
            if len(fields) != num_fields:
                raise RawFileError(
                    f"{path}:{line_no}: expected {num_fields} fields separated by {separator!r}, "
                    f"got {len(fields)}: {line[:200]!r}"
                )
            yield line_no, fields


@dataclasses.dataclass
class RawMovieLens:
    """The parsed raw files.

    items / users: feature -> [n] object array (str, or list of str for multi-valued), rows in file order.
    user_rows, item_rows, timestamps: [num_interactions] int64 (rows into users / items).
    item_ids: [num_items] int64 movie ids (the tie-breaker of the protocol's sort).
    dropped: reason -> count of ratings not kept. skipped: non-data lines skipped (blank lines).
    """

    items: dict[str, np.ndarray]
    users: dict[str, np.ndarray]
    user_rows: np.ndarray
    item_rows: np.ndarray
    timestamps: np.ndarray
    item_ids: np.ndarray
    dropped: dict[str, int]
    skipped: dict[str, int]


def _check_files(version: str, manual_dir: pathlib.Path) -> list[pathlib.Path]:
    files = [manual_dir / name for name in RAW_FILES[version]]
    for path in files:
        if not path.is_file():
            raise FileNotFoundError(
                f"MovieLens {version}: raw file {path.name} not found in manual_dir {manual_dir} "
                f"(expected {', '.join(RAW_FILES[version])}).\n{MANUAL_DOWNLOAD_INSTRUCTIONS}"
            )
    return files


def _columns(records: list[dict]) -> dict[str, np.ndarray]:
    out = {}
    for name in records[0] if records else ():
        column = np.empty(len(records), dtype=object)
        column[:] = [r[name] for r in records]
        out[name] = column
    return out


def _movie(movie_id: int, genres: list[str], year: str, title: str) -> dict:
    return {
        "movie_id": str(movie_id),
        "movie_genres": genres,
        "movie_release_year": year,
        "movie_release_decade": decade(year),
        "movie_title_tokens": title_tokens(title),
    }


def _user(user_id: int, age: int, gender: str, occupation: str, zip_code: str) -> dict:
    return {
        "user_id": str(user_id),
        "bucketized_user_age": age_bucket(age),
        "user_gender": gender,
        "user_occupation_text": occupation,
        "user_zip_prefix": zip_code[:3],
    }


def _add_unique(index: dict, key: int, path: pathlib.Path, line_no: int, what: str) -> None:
    if key in index:
        raise RawFileError(f"{path}:{line_no}: duplicate {what} {key} (first on line {index[key][1]})")
    index[key] = (len(index), line_no)


def read_raw(version: str, manual_dir: str | pathlib.Path) -> RawMovieLens:
    """Parses the raw files of ml-100k or ml-1m (latin-1) in ``manual_dir``."""
    manual_dir = pathlib.Path(manual_dir)
    ratings_path, movies_path, users_path = _check_files(version, manual_dir)
    skipped: collections.Counter = collections.Counter()
    movies, movie_index = _read_movies(version, movies_path, skipped)
    users, user_index = _read_users(version, users_path, skipped)
    rating_sep = "\t" if version == "100k" else "::"
    dropped: collections.Counter = collections.Counter()
    user_rows, item_rows, timestamps = [], [], []
    for line_no, fields in _rows(ratings_path, rating_sep, 4, "latin-1", skipped):
        user_id = _parse_int(fields[0], ratings_path, line_no, "user id")
        movie_id = _parse_int(fields[1], ratings_path, line_no, "movie id")
        _parse_int(fields[2], ratings_path, line_no, "rating")
        timestamp = _parse_int(fields[3], ratings_path, line_no, "timestamp")
        if movie_id not in movie_index:
            dropped[f"unknown movie id (not in {movies_path.name})"] += 1
            continue
        if user_id not in user_index:
            dropped[f"unknown user id (not in {users_path.name})"] += 1
            continue
        user_rows.append(user_index[user_id][0])
        item_rows.append(movie_index[movie_id][0])
        timestamps.append(timestamp)

    return RawMovieLens(
        items=_columns(movies),
        users=_columns(users),
        user_rows=np.asarray(user_rows, dtype=np.int64),
        item_rows=np.asarray(item_rows, dtype=np.int64),
        timestamps=np.asarray(timestamps, dtype=np.int64),
        item_ids=np.asarray(list(movie_index), dtype=np.int64),
        dropped=dict(dropped),
        skipped=dict(skipped),
    )


def _read_movies(version: str, movies_path: pathlib.Path, skipped: collections.Counter) -> tuple[list, dict]:
    """(movie rows, movie id -> (row, line number)) of u.item / movies.dat."""
    movies, movie_index = [], {}
    sep, n_movie = ("|", 5 + len(ML100K_GENRES)) if version == "100k" else ("::", 3)
    for line_no, fields in _rows(movies_path, sep, n_movie, "latin-1", skipped):
        movie_id = _parse_int(fields[0], movies_path, line_no, "movie id")
        _add_unique(movie_index, movie_id, movies_path, line_no, "movie id")
        title = fields[1]
        if version == "100k":
            flags = fields[5:]
            if any(flag not in ("0", "1") for flag in flags):
                raise RawFileError(f"{movies_path}:{line_no}: genre flags must be 0/1, got {flags}")
            genres = [g for g, flag in zip(ML100K_GENRES, flags) if flag == "1"]
            match = _DATE_YEAR.match(fields[2].strip())
            year = match.group(1) if match else ""
        else:
            genres = [g for g in fields[2].split("|") if g]
            year = title_year(title)
        movies.append(_movie(movie_id, genres, year, title))
    return movies, movie_index


def _read_users(version: str, users_path: pathlib.Path, skipped: collections.Counter) -> tuple[list, dict]:
    """(user rows, user id -> (row, line number)) of u.user / users.dat."""
    users, user_index = [], {}
    for line_no, fields in _rows(users_path, "|" if version == "100k" else "::", 5, "latin-1", skipped):
        user_id = _parse_int(fields[0], users_path, line_no, "user id")
        _add_unique(user_index, user_id, users_path, line_no, "user id")
        if version == "100k":
            age, gender, occupation, zip_code = (
                _parse_int(fields[1], users_path, line_no, "age"),
                fields[2],
                fields[3],
                fields[4],
            )
        else:
            gender, zip_code = fields[1], fields[4]
            age = _parse_int(fields[2], users_path, line_no, "age")
            code = _parse_int(fields[3], users_path, line_no, "occupation")
            if not 0 <= code < len(ML1M_OCCUPATIONS):
                raise RawFileError(
                    f"{users_path}:{line_no}: occupation code {code} is not in 0..{len(ML1M_OCCUPATIONS) - 1}"
                )
            occupation = ML1M_OCCUPATIONS[code]
        users.append(_user(user_id, age, gender, occupation, zip_code))
    return users, user_index


def train_part(raw: RawMovieLens) -> RawMovieLens:
    """``raw`` restricted to the interactions of the protocol's train part (the validation carve-out's input)."""
    _, is_test, _ = _common.temporal_split(raw.user_rows, raw.timestamps, raw.item_ids[raw.item_rows])
    keep = ~is_test
    return dataclasses.replace(
        raw, user_rows=raw.user_rows[keep], item_rows=raw.item_rows[keep], timestamps=raw.timestamps[keep]
    )


def recent_movies(raw: RawMovieLens, order: np.ndarray, is_test: np.ndarray, length: int = RECENT_LENGTH) -> np.ndarray:
    """Each interaction's ``user_recent_movie_ids``: the user's last ``length`` visible movies, newest first.

    Visible = what a request at that moment could know. A train interaction sees the user's
    interactions strictly before it (protocol order); a test interaction sees only the user's
    train part (the protocol scores a user's whole test part from the train history), so all
    of a user's test pairs carry the same history, the one the evaluator embeds.
    order, is_test: :func:`_common.temporal_split`'s protocol order and test flags for ``raw``.
    Returns: [num_interactions] object array of lists of movie-id strings (original order).
    """
    movie_ids = raw.items["movie_id"][raw.item_rows[order]]
    users = raw.user_rows[order]
    train_sorted = ~is_test[order]
    n = len(order)
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]]) if n else np.zeros(0, np.int64)
    out = np.empty(n, dtype=object)
    for start, end in zip(starts, np.r_[starts[1:], n]):
        num_train = int(np.count_nonzero(train_sorted[start:end]))  # the train part is a prefix
        for rank in range(end - start):
            visible = min(rank, num_train)
            out[order[start + rank]] = list(movie_ids[start + max(0, visible - length) : start + visible][::-1])
    return out


def user_item_pairs(
    raw: RawMovieLens,
    seed: int = SEED,
    recent_length: int = RECENT_LENGTH,
    test_fraction: float = _common.TEST_FRACTION,
) -> _common.PairsTable:
    """The protocol split of user -> movie interactions, each with the user's recent movies."""
    order, is_test, _ = _common.temporal_split(
        raw.user_rows, raw.timestamps, raw.item_ids[raw.item_rows], test_fraction
    )
    return _common.PairsTable(
        raw.user_rows,
        raw.item_rows,
        raw.timestamps,
        _common.make_splits(is_test, seed),
        pair_columns={RECENT_FEATURE: recent_movies(raw, order, is_test, recent_length)},
    )


def item_item_pairs(
    raw: RawMovieLens, seed: int = SEED, test_fraction: float = _common.TEST_FRACTION
) -> _common.PairsTable:
    """Seed -> next movie pairs per user; a pair is test iff its target is in the user's test part."""
    order, is_test, _ = _common.temporal_split(
        raw.user_rows, raw.timestamps, raw.item_ids[raw.item_rows], test_fraction
    )
    users = raw.user_rows[order]
    same_user = users[1:] == users[:-1]  # consecutive interactions of one user
    seeds, targets = order[:-1][same_user], order[1:][same_user]
    return _common.PairsTable(
        raw.item_rows[seeds],
        raw.item_rows[targets],
        raw.timestamps[targets],
        _common.make_splits(is_test[targets], seed),
    )


def seed_columns(items: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The item table as the item-item query side: movie_x -> seed_movie_x."""
    return {f"seed_{name}": column for name, column in items.items()}


@dataclasses.dataclass
class MovieLensConfig(tfds.core.BuilderConfig):
    """``release``: 100k or 1m; ``task``: user-item, item-item, or items (the corpus).

    (Not ``version``: that field of BuilderConfig is the dataset's x.y.z version.)
    """

    release: str = "100k"
    task: str = "user-item"
    validation: bool = False  # the carve-out: split the protocol's train part again (module docstring)


def items_config_name(pairs_config_name: str) -> str:
    return pairs_config_name.split("-", 1)[0] + _common.ITEMS_SUFFIX  # "-val" configs share the corpus


def spec_for(task: str) -> features_lib.FeatureSpec:
    return features_lib.load_spec(paths.SPECS_DIR / f"{SPECS[task]}.yaml")


def default_manual_dir(version: str, raw_data_dir: str | None = None) -> pathlib.Path:
    return paths.raw_data_root(raw_data_dir) / RAW_DIRS[version]


class Movielens(template.PairedBuilder, skip_registration=True):
    """MovieLens from GroupLens raw files: pairs configs and ``-items`` corpus configs."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
    HOMEPAGE = "https://grouplens.org/datasets/movielens/"
    BUILDER_CONFIGS = [
        MovieLensConfig(
            name=f"{release}-{task}", release=release, task=task, description=f"MovieLens {release}: {task}"
        )
        for release in RAW_DIRS
        for task in TASKS + ("items",)
    ] + [
        MovieLensConfig(
            name=f"{release}-{task}-val",
            release=release,
            task=task,
            validation=True,
            description=f"MovieLens {release}: {task}, validation carve-out of the train part",
        )
        for release in RAW_DIRS
        for task in TASKS
    ]
    DEFAULT_CONFIG_NAME = "100k-user-item"

    def spec(self) -> features_lib.FeatureSpec:
        return spec_for("user-item" if self.is_items() else self.builder_config.task)

    def is_items(self) -> bool:
        return self.builder_config.task == "items"

    def static_metadata(self) -> dict:
        config = self.builder_config
        return dict(spec=SPECS.get(config.task, SPECS["user-item"]), release=config.release, task=config.task)

    def read(self, dl_manager: Any) -> _common.Tables:
        config = self.builder_config
        manual_dir = getattr(dl_manager, "_manual_dir", None)
        if manual_dir is None or not pathlib.Path(manual_dir).is_dir():
            raise FileNotFoundError(
                f"MovieLens {config.release}: manual_dir {manual_dir} does not exist; it must hold "
                f"{', '.join(RAW_FILES[config.release])}.\n{MANUAL_DOWNLOAD_INSTRUCTIONS}"
            )
        raw = read_raw(config.release, pathlib.Path(manual_dir))
        metadata = {}
        if config.validation:
            held_out = len(raw.user_rows)
            raw = train_part(raw)
            metadata["validation_held_out_test"] = held_out - int(len(raw.user_rows))
        counts = {
            "interactions": int(len(raw.user_rows)),
            "users": len(raw.users["user_id"]),
            "items": len(raw.item_ids),
        }
        metadata.update(counts=counts, dropped=raw.dropped, skipped=raw.skipped, manual_dir=str(manual_dir))
        items = {name: raw.items[name] for name in self.info.features.keys() if name in raw.items}
        if config.task == "items":
            return _common.Tables(items, metadata)
        fraction = _common.VALIDATION_FRACTION if config.validation else _common.TEST_FRACTION
        if config.task == "user-item":
            table, queries = user_item_pairs(raw, test_fraction=fraction), raw.users
        else:
            table, queries = item_item_pairs(raw, test_fraction=fraction), seed_columns(raw.items)
        return _common.Tables(items, metadata, queries, table)
