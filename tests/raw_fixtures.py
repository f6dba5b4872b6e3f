"""Tiny raw-format fixtures (MovieLens 100K / 1M, interactions CSVs) that tests write themselves.

Reusable by any test: ``write_ml100k(tmp_path / "movielens-100k")`` writes u.data, u.item,
u.user in GroupLens's format (``|`` / tab separated, latin-1); ``write_ml1m`` the ``::``
separated ml-1m files; ``write_interactions_csv`` a small CSV catalog with its spec. Each
returns what it wrote, so that tests compute their expectations independently.
"""

from __future__ import annotations

import pathlib

import yaml

from recsys_ssl.datasets import interactions_csv
from recsys_ssl.datasets.movielens import ML100K_GENRES  # the u.item format's genre columns

# (movie id, title, release date, genres). Movie 4 has no release date (as 100K's item 267);
# movie 5's title has a latin-1 character.
ML100K_MOVIES = [
    (1, "Toy Story (1995)", "01-Jan-1995", ["Animation", "Children's", "Comedy"]),
    (2, "GoldenEye (1995)", "01-Jan-1995", ["Action", "Adventure", "Thriller"]),
    (3, "Shawshank Redemption, The (1994)", "01-Jan-1994", ["Drama"]),
    (4, "unknown", "", ["unknown"]),
    (5, "Bel Ami (Amélie) (1981)", "15-Mar-1981", ["Comedy", "Romance"]),
    (6, "Heat (1995)", "01-Jan-1995", ["Action", "Crime", "Thriller"]),
]
# (user id, age, gender, occupation, zip)
ML100K_USERS = [
    (1, 24, "M", "technician", "85711"),
    (2, 53, "F", "other", "94043"),
    (3, 17, "M", "student", "T8H1N"),
]


def ml100k_ratings() -> list[tuple[int, int, int, int]]:
    """(user, movie, rating, timestamp): user 1 has 6 ratings (2 test), users 2 and 3 have 5 (1 test).

    User 1's movies 2 and 3 share a timestamp: the protocol breaks the tie by movie id.
    Time order: user 1: 1 2 3 4 | 5 6, user 2: 1 2 3 4 | 5, user 3: 2 1 3 4 | 5 (| = test from here).
    """
    return [
        (1, 1, 5, 100),
        (1, 3, 4, 300),
        (1, 2, 3, 300),
        (1, 4, 2, 400),
        (1, 5, 1, 500),
        (1, 6, 3, 600),
        (2, 5, 4, 50),
        (2, 4, 4, 40),
        (2, 3, 3, 30),
        (2, 2, 2, 20),
        (2, 1, 1, 10),
        (3, 2, 5, 7),
        (3, 1, 4, 8),
        (3, 3, 3, 9),
        (3, 5, 3, 11),
        (3, 4, 2, 10),
    ]


def write_ml100k(
    folder: pathlib.Path, ratings=None, extra_rating_lines: tuple[str, ...] = (), extra_item_lines: tuple[str, ...] = ()
) -> pathlib.Path:
    """Writes u.data, u.item, u.user in ml-100k's raw format; returns the folder."""
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ratings = ml100k_ratings() if ratings is None else ratings
    lines = [f"{u}\t{m}\t{r}\t{t}" for u, m, r, t in ratings] + list(extra_rating_lines)
    (folder / "u.data").write_text("\n".join(lines) + "\n", encoding="latin-1")
    item_lines = []
    for movie_id, title, date, genres in ML100K_MOVIES:
        flags = "|".join("1" if g in genres else "0" for g in ML100K_GENRES)
        url = "" if title == "unknown" else f"http://us.imdb.com/M/title-exact?{movie_id}"
        item_lines.append(f"{movie_id}|{title}|{date}||{url}|{flags}")
    item_lines += list(extra_item_lines)
    (folder / "u.item").write_bytes(("\n".join(item_lines) + "\n").encode("latin-1"))
    (folder / "u.user").write_text("\n".join("|".join(map(str, u)) for u in ML100K_USERS) + "\n", encoding="latin-1")
    return folder


# ml-1m: movies.dat MovieID::Title::Genres, users.dat UserID::Gender::Age::Occupation::Zip,
# ratings.dat UserID::MovieID::Rating::Timestamp.
ML1M_MOVIES = [
    (1, "Toy Story (1995)", "Animation|Children's|Comedy"),
    (2, "Jumanji (1995)", "Adventure|Children's|Fantasy"),
    (3, "Cité des enfants perdus, La (1995)", "Adventure|Sci-Fi"),
]
ML1M_USERS = [(1, "F", 1, 10, "48067"), (2, "M", 56, 16, "70072")]
# user 1: movies 1 3 | 2 by time, user 2: 3 1 | 2 (| = test from here).
ML1M_RATINGS = [
    (1, 1, 5, 978300760),
    (1, 2, 3, 978302109),
    (1, 3, 3, 978301968),
    (2, 3, 5, 978298413),
    (2, 1, 5, 978299000),
    (2, 2, 4, 978300174),
]


def write_ml1m(folder: pathlib.Path, extra_rating_lines: tuple[str, ...] = ()) -> pathlib.Path:
    """Writes ratings.dat, movies.dat, users.dat in ml-1m's raw format (latin-1); returns the folder."""
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "movies.dat").write_bytes(
        ("\n".join("::".join(map(str, m)) for m in ML1M_MOVIES) + "\n").encode("latin-1")
    )
    (folder / "users.dat").write_text("\n".join("::".join(map(str, u)) for u in ML1M_USERS) + "\n", encoding="latin-1")
    lines = ["::".join(map(str, r)) for r in ML1M_RATINGS] + list(extra_rating_lines)
    (folder / "ratings.dat").write_text("\n".join(lines) + "\n", encoding="latin-1")
    return folder


CSV_SPEC = {
    "name": "tiny_csv",
    "query_key": "user",
    "item_key": "sku",
    "timestamp": "ts",
    "query_features": [{"name": "user", "kind": "categorical"}, {"name": "region", "kind": "categorical"}],
    "item_features": [
        {"name": "sku", "kind": "categorical"},
        {"name": "brand", "kind": "categorical"},
        {"name": "colors", "kind": "multi_categorical", "max_len": 3, "separator": ";"},
        {"name": "item_tags", "kind": "multi_categorical", "max_len": 2, "column": "tags"},
    ],
}
CSV_ITEMS = [  # sku, brand, colors (';'), tags ('|')
    ("a1", "acme", "red;blue", "new|sale"),
    ("b2", "bolt", "", "sale"),
    ("c3", "acme", "green", ""),
    ("d4", "core", "red;green;blue;black", "new"),
]
CSV_QUERIES = [("u1", "eu"), ("u2", "us"), ("u3", "eu")]
# user, sku, ts, split. u1: 5 rows -> 1 test (d4 @ 50), u2: 3 rows -> 1 test (a1 @ 9), u3: 1 row -> test.
CSV_INTERACTIONS = [
    ("u1", "a1", 10, "train"),
    ("u1", "b2", 20, "train"),
    ("u1", "c3", 30, "train"),
    ("u1", "a1", 40, "train"),
    ("u1", "d4", 50, "test"),
    ("u2", "c3", 5, "train"),
    ("u2", "a1", 9, "test"),
    ("u2", "b2", 7, "train"),
    ("u3", "d4", 1, "test"),
]


def write_interactions_csv(
    folder: pathlib.Path,
    with_queries: bool = True,
    interactions=None,
    extra_interaction_lines: tuple[str, ...] = (),
    spec: dict | None = None,
) -> dict:
    """Writes interactions.csv, items.csv, queries.csv (optional) and spec.yaml; returns their paths.

    Without a queries file the interactions file carries the ``region`` query feature per row.
    """
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    region = dict(CSV_QUERIES)
    rows = CSV_INTERACTIONS if interactions is None else interactions
    header = "user,sku,ts,split" + ("" if with_queries else ",region")
    lines = [header] + [f"{u},{s},{t},{sp}" + ("" if with_queries else f",{region[u]}") for u, s, t, sp in rows]
    (folder / "interactions.csv").write_text("\n".join(lines + list(extra_interaction_lines)) + "\n")
    (folder / "items.csv").write_text("\n".join(["sku,brand,colors,tags"] + [",".join(r) for r in CSV_ITEMS]) + "\n")
    paths = {"interactions": folder / "interactions.csv", "items": folder / "items.csv", "spec": folder / "spec.yaml"}
    if with_queries:
        (folder / "queries.csv").write_text("\n".join(["user,region"] + [",".join(q) for q in CSV_QUERIES]) + "\n")
        paths["queries"] = folder / "queries.csv"
    (folder / "spec.yaml").write_text(yaml.safe_dump(spec or CSV_SPEC, sort_keys=False))
    return paths


def interactions_csv_configs(folder: pathlib.Path, name: str, split_column=None, with_queries=True, **write_kwargs):
    """Writes the CSV catalog to ``folder`` and returns its (pairs, items) configs called ``name``."""
    files = write_interactions_csv(folder, with_queries=with_queries, **write_kwargs)
    return interactions_csv.make_configs(
        name,
        files["interactions"],
        files["items"],
        files["spec"],
        queries=files.get("queries"),
        split_column=split_column,
    )
