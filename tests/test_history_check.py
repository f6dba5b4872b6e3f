"""``bench/history_check.py``'s data: the history feature never leaks a label or the carve-out,
checked on a hand-made interactions table against the rule written out by hand."""

from __future__ import annotations

import csv
import importlib.util
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _module():
    spec = importlib.util.spec_from_file_location("history_check", ROOT / "bench" / "history_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rows():
    # user a: 12 apps (ceil(10%) = 2 held out); user b: 3 apps (1 held out); user c: 1 app (kept).
    apps = {"a": [str(i) for i in range(12)], "b": ["5", "7", "9"], "c": ["3"]}
    return [{"user_id": u, "item_id": i} for u, items in apps.items() for i in items]


def test_carve_holds_out_ceil_10pct_per_user_and_is_deterministic():
    history_check = _module()
    held_out, kept = history_check.carve(_rows())
    assert history_check.carve(_rows()) == (held_out, kept)
    per_user = {u: sum(1 for user, _ in held_out if user == u) for u in "abc"}
    assert per_user == {"a": 2, "b": 1, "c": 0}
    for user, app in held_out:
        assert app not in kept[user]


def test_history_excludes_the_rows_own_app_and_every_held_out_app(tmp_path):
    history_check = _module()
    rows = _rows()
    held_out, kept = history_check.carve(rows)
    path = tmp_path / "interactions.csv"
    history_check.write_interactions(rows, path, with_history=True)
    written = list(csv.DictReader(path.open()))
    assert [(r["user_id"], r["item_id"]) for r in written] == [(r["user_id"], r["item_id"]) for r in rows]
    for row in written:
        user, app, history = row["user_id"], row["item_id"], row["history"].split("|") if row["history"] else []
        held_out_apps = {a for u, a in held_out if u == user}
        assert row["split"] == ("test" if app in held_out_apps else "train")
        assert not held_out_apps & set(history)  # the carve-out never reaches a query feature
        if row["split"] == "train":
            assert sorted(history) == sorted(a for a in kept[user] if a != app)  # the others, never itself
        else:
            assert sorted(history) == sorted(kept[user])  # all the user's training apps


def test_without_history_the_columns_are_those_of_the_spec(tmp_path):
    history_check = _module()
    path = tmp_path / "interactions.csv"
    history_check.write_interactions(_rows(), path, with_history=False)
    assert path.read_text().splitlines()[0] == "user_id,item_id,split"


def test_another_carve_seed_holds_out_other_apps_by_the_same_rule():
    history_check = _module()
    first, _ = history_check.carve(_rows(), 0)
    other, kept = history_check.carve(_rows(), 1)
    assert other != first and len(other) == len(first) == 3
    assert all(app not in kept[user] for user, app in other)
