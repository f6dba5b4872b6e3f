"""The feature spec: loading, defaults and errors that name the file and the field."""

import json

import pytest

from recsys_ssl import features
from recsys_ssl.features import SpecError, load_spec, spec_from_dict
from recsys_ssl.paths import SPECS_DIR


def _minimal(**overrides):
    raw = {
        "name": "tiny",
        "query_key": "user",
        "item_key": "item",
        "query_features": [{"name": "user", "kind": "categorical"}],
        "item_features": [
            {"name": "item", "kind": "categorical", "embedding_dim": 8},
            {"name": "tags", "kind": "multi_categorical", "max_len": 3},
        ],
    }
    raw.update(overrides)
    return raw


@pytest.mark.parametrize("path", sorted(SPECS_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_specs_load(path):
    spec = load_spec(path)
    assert spec.item_key in spec.item_feature_names
    assert spec.feature(spec.item_key).is_id
    assert spec.item_key not in spec.mi_features


def test_defaults_and_lookups():
    spec = spec_from_dict(_minimal())
    tags = spec.feature("tags")
    assert tags.multi_valued and tags.max_len == 3 and tags.pooling == "mean"
    assert tags.vocab == features.Vocabulary()  # statistics-job vocabulary by default
    assert spec.feature("item").is_id and not tags.is_id
    assert spec.mi_features == ["tags"]
    assert spec.feature("item").csv_column == "item"


def test_explicit_id_false_is_kept():
    raw = _minimal()
    raw["item_features"][0]["id"] = False
    assert not spec_from_dict(raw).feature("item").is_id


def test_bare_name_resolves_to_data_specs():
    assert load_spec("synthetic_catalog").name == "synthetic_catalog"


def test_json_spec(tmp_path):
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(_minimal()))
    assert load_spec(path).name == "tiny"


@pytest.mark.parametrize(
    "mutate, field, words",
    [
        (lambda r: r["item_features"][1].update(kind="multi"), "item_features[1](tags).kind", "not one of"),
        (lambda r: r["item_features"][1].pop("max_len"), "item_features[1](tags).max_len", "positive integer"),
        (lambda r: r["item_features"][0].update(max_len=3), "item_features[0](item).max_len", "only multi_categorical"),
        (lambda r: r["item_features"][0].update(embedding_dim=0), "item_features[0](item).embedding_dim", "positive"),
        (lambda r: r["item_features"][0].update(colour="red"), "item_features[0].colour", "unknown field"),
        (
            lambda r: r["item_features"][0].update(vocab={"source": "magic"}),
            "item_features[0](item).vocab.source",
            "not one of",
        ),
        (
            lambda r: r["item_features"][0].update(vocab={"source": "hash"}),
            "item_features[0](item).vocab.buckets",
            "positive",
        ),
        (lambda r: r["item_features"][0].update(vocab=["a", ""]), "item_features[0](item).vocab.values", "padding"),
        (lambda r: r.update(item_key="nope"), "item_key", "not one of"),
        (lambda r: r.update(item_key="tags"), "item_key", "single-valued"),
        (
            lambda r: r["query_features"].append({"name": "item", "kind": "categorical"}),
            "item_features(item).name",
            "duplicate",
        ),
        (lambda r: r.update(item_features=[]), "item_features", "non-empty"),
        (lambda r: r.update(extra=1), "extra", "unknown field"),
        (
            lambda r: r["query_features"][0].update(shares_embedding="nope"),
            "query_features(user).shares_embedding",
            "not one of the item_features",
        ),
        (
            lambda r: r["query_features"][0].update(shares_embedding="item"),
            "query_features(user).shares_embedding",
            "embedding_dim 32 differs from item's 8",
        ),
        (
            lambda r: r["item_features"][1].update(shares_embedding="item"),
            "item_features(tags).shares_embedding",
            "only query features",
        ),
    ],
)
def test_errors_name_file_and_field(tmp_path, mutate, field, words):
    raw = _minimal()
    mutate(raw)
    path = tmp_path / "bad.yaml"
    path.write_text(json.dumps(raw))  # JSON is valid YAML
    with pytest.raises(SpecError) as error:
        load_spec(path)
    message = str(error.value)
    assert message.startswith(f"{path}: {field}:"), message
    assert words in message


def test_invalid_yaml_names_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: [unclosed\n")
    with pytest.raises(SpecError, match="broken.yaml: not valid YAML"):
        load_spec(path)


def test_check_columns_names_missing_column():
    spec = spec_from_dict(_minimal())
    with pytest.raises(SpecError, match=r"items.csv: column 'tags'"):
        features.check_columns(spec, ["item"], spec.item_features, "items.csv")
