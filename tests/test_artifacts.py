"""recsys_ssl.artifacts: round trips of the batch jobs' artifacts and the CFM group rule."""

import json

import numpy as np
import pytest

from recsys_ssl import artifacts


def test_default_group_size_is_round_half_of_k():
    assert [artifacts.default_group_size(k) for k in (1, 2, 4, 5, 10, 11)] == [1, 1, 2, 2, 5, 6]


def test_ranked_partners_by_mi_desc_ties_by_name():
    features = ["d", "b", "c", "a"]
    mi = np.array(
        [
            [1.0, 0.5, 0.5, 0.1],
            [0.5, 1.0, 0.2, 0.2],
            [0.5, 0.2, 1.0, 0.3],
            [0.1, 0.2, 0.3, 1.0],
        ]
    )
    ranked = artifacts.rank_partners(features, mi)
    assert ranked["d"] == ["b", "c", "a"]  # b and c tie at 0.5: by name
    assert ranked["b"] == ["d", "a", "c"]  # a and c tie at 0.2
    # float noise below 1e-12 is a tie too, so runners that sum in another order agree
    mi[0, 2] = mi[2, 0] = 0.5 + 1e-15
    assert artifacts.rank_partners(features, mi)["d"] == ["b", "c", "a"]


def test_cfm_groups_hold_the_seed_and_its_top_partners():
    features = ["x", "y", "z", "w"]
    mi = np.array([[2, 1.0, 0.1, 0.0], [1.0, 2, 0.0, 0.3], [0.1, 0.0, 2, 0.9], [0.0, 0.3, 0.9, 2]])
    groups = artifacts.cfm_groups(features, mi)
    assert groups["group_size"] == 2
    assert groups["groups"] == {"x": ["x", "y"], "y": ["y", "x"], "z": ["z", "w"], "w": ["w", "z"]}
    assert artifacts.cfm_groups(features, mi, group_size=3)["groups"]["x"] == ["x", "y", "z"]
    with pytest.raises(ValueError, match="group_size"):
        artifacts.cfm_groups(features, mi, group_size=5)


def test_mi_files_round_trip(tmp_path):
    features = ["a", "b", "c"]
    mi = np.array([[1.5, 0.25, 0.0], [0.25, 0.7, 0.1], [0.0, 0.1, 0.3]])
    nmi = mi / np.sqrt(np.outer(np.diag(mi), np.diag(mi)))
    artifacts.write_files(tmp_path, artifacts.mi_files(features, mi, nmi, np.diag(mi)))
    read_features, read_mi = artifacts.read_mi(tmp_path)
    assert read_features == features
    np.testing.assert_array_equal(read_mi, mi)  # repr() floats: exact
    assert json.loads((tmp_path / artifacts.MI_JSON).read_text())["nmi"][0][1] == pytest.approx(nmi[0, 1])
    assert artifacts.read_cfm_groups(tmp_path)["groups"]["a"] == ["a", "b"]
    csv_lines = (tmp_path / artifacts.MI_CSV).read_text().splitlines()
    assert csv_lines[0] == "feature,a,b,c" and csv_lines[1].startswith("a,1.5,0.25,")
    assert json.loads((tmp_path / artifacts.MI_JSON).read_text())["unit"] == "nats"


def test_stats_readers(tmp_path):
    artifacts.write_text(tmp_path / "vocab" / "tags.txt", artifacts.vocab_text(["x", "y z", "w"]))
    artifacts.write_text(tmp_path / "vocab" / "empty.txt", artifacts.vocab_text([]))
    artifacts.write_text(
        tmp_path / artifacts.ITEM_FREQUENCIES, artifacts.item_frequencies_text([("i2", 5), ("i 1", 0)])
    )
    manifest = artifacts.make_manifest(
        "stats", dataset=None, spec=None, inputs={}, counts={"vocab_sizes": {"tags": 3, "empty": 0}}
    )
    artifacts.write_text(tmp_path / artifacts.MANIFEST, artifacts.dumps_json(manifest))
    assert artifacts.read_vocabularies(tmp_path) == {"tags": ["x", "y z", "w"], "empty": []}
    assert artifacts.read_item_frequencies(tmp_path) == {"i2": 5, "i 1": 0}
    assert artifacts.read_manifest(tmp_path)["versions"]["apache-beam"].startswith("2.77")
    (tmp_path / artifacts.ITEM_FREQUENCIES).write_text("i3 7\n")
    with pytest.raises(ValueError, match="item_frequencies.tsv:1"):
        artifacts.read_item_frequencies(tmp_path)
