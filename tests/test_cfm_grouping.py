"""``ssl.cfm_grouping``: CFM's masking groups ranked by plug-in, adjusted or normalized MI."""

from __future__ import annotations

import dataclasses

import model_fixtures as mf
import numpy as np
import pytest

from recsys_ssl import artifacts, augment
from recsys_ssl import config as cfg
from recsys_ssl.model import TwoTowerModel


def test_the_model_masks_with_the_chosen_grouping():
    data = mf.training_data()
    names = data.cfm_groups["features"]
    k = len(names)
    # Three measures that disagree: plug-in ranks by index, adjusted by reverse index, normalized mixes.
    plugin = np.array([[0.0 if i == j else 1.0 / (1 + i + j) for j in range(k)] for i in range(k)])
    adjusted = plugin[::-1, ::-1].copy()
    normalized = np.roll(plugin, 1, axis=1)
    groups = artifacts.cfm_groups(names, plugin, 2, {"plugin": plugin, "adjusted": adjusted, "normalized": normalized})
    data = dataclasses.replace(data, cfm_groups=groups)
    items = data.spec.item_features
    for grouping in cfg.CFM_GROUPINGS:
        config = cfg.replace(mf.tiny_config("ssl", "cfm"), ssl={"cfm_grouping": grouping})
        model = TwoTowerModel(data.spec, config, data.vocabularies, data.item_frequencies, data.cfm_groups)
        expected = augment.cfm_group_matrix(
            [f.name for f in items], groups["by_grouping"][grouping]["ranked_partners"], 2, model._maskable
        )
        np.testing.assert_array_equal(np.asarray(model._mask_inputs.cfm_groups), np.asarray(expected), err_msg=grouping)
    assert groups["by_grouping"]["adjusted"]["ranked_partners"] != groups["ranked_partners"]


def test_a_bad_grouping_or_an_old_groups_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nmethod: ssl\naugmentation: cfm\nssl: {cfm_grouping: mutual}\n")
    with pytest.raises(cfg.ConfigError, match=r"bad.yaml: ssl.cfm_grouping: 'mutual' is not one of"):
        cfg.load_config(bad)
    old = {"features": ["a", "b"], "group_size": 1, "ranked_partners": {"a": ["b"], "b": ["a"]}, "groups": {}}
    assert artifacts.cfm_ranked_partners(old, "plugin") == old["ranked_partners"]
    with pytest.raises(ValueError, match="run the MI job again"):
        artifacts.cfm_ranked_partners(old, "adjusted")
