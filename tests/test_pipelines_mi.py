"""The mutual-information Beam job against an independent, definition-level computation."""

import collections
import json
import math

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner import fn_runner
from apache_beam.testing import test_pipeline as beam_test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from pipelines import mi_counts, mutual_info, sources
from pipelines import options as options_lib
from recsys_ssl import artifacts
from recsys_ssl import features as features_lib

SPEC = features_lib.spec_from_dict(
    {
        "name": "tiny",
        "query_key": "query_id",
        "item_key": "item_id",
        "query_features": [{"name": "query_id", "kind": "categorical"}],
        "item_features": [
            {"name": "item_id", "kind": "categorical"},
            {"name": "a", "kind": "categorical"},
            {"name": "b", "kind": "multi_categorical", "max_len": 4},
            {"name": "c", "kind": "multi_categorical", "max_len": 3},
            {"name": "d", "kind": "categorical"},
        ],
    }
)
FEATURES = SPEC.mi_features  # a, b, c, d


def random_items(n, seed):
    rng = np.random.default_rng(seed)
    a = [f"a{x}" if x else "" for x in rng.integers(0, 5, n)]  # "" (missing) is a value of its own
    b = [[f"b{x}" for x in rng.integers(0, 6, rng.integers(0, 4))] for _ in range(n)]  # duplicates, empties
    c = [[f"c{x}" for x in rng.integers(0, 3, rng.integers(0, 3))] for _ in range(n)]
    d = [f"d{(int(x[1:]) if x else 0) + rng.integers(0, 2)}" for x in a]  # correlated with a
    return {"item_id": [f"i{i}" for i in range(n)], "a": a, "b": b, "c": c, "d": d}


def write_parquet(items, path, row_group_size=97):
    table = pa.table(
        {k: pa.array(v, pa.list_(pa.string()) if k in ("b", "c") else pa.string()) for k, v in items.items()}
    )
    pq.write_table(table, path, row_group_size=row_group_size)


def naive_mi(x, y, weights):
    """The definition, one item at a time: mass w/(|A||B|) per value pair of the sets A x B."""

    def value_set(v):
        if isinstance(v, str):
            return [v]
        return sorted(set(v)) or ["<empty>"]

    joint = collections.Counter()
    for xi, yi, w in zip(x, y, weights):
        first, second = value_set(xi), value_set(yi)
        for p in first:
            for q in second:
                joint[(p, q)] += w / (len(first) * len(second))
    total = sum(joint.values())
    px, py = collections.Counter(), collections.Counter()
    for (p, q), m in joint.items():
        px[p] += m
        py[q] += m
    return sum(
        m / total * math.log((m / total) / (px[p] / total * py[q] / total)) for (p, q), m in joint.items() if m > 0
    )


def local_pipeline(**kwargs):
    """Beam's TestPipeline on the in-process FnApiRunner (fast; the CLI uses 2 processes)."""
    return beam_test_pipeline.TestPipeline(
        runner=fn_runner.FnApiRunner(),
        options=PipelineOptions(["--direct_running_mode=in_memory", "--direct_num_workers=1"]),
        blocking=True,
        **kwargs,
    )


def run_mi(tmp_path, source, weighted=False, pairs=None, group_size=None):
    out = str(tmp_path / "mi")
    settings = mutual_info.MISettings(
        out_dir=out,
        dataset=None,
        spec_dict={"name": "tiny"},
        inputs={},
        features=tuple(FEATURES),
        group_size=group_size,
        weighted=weighted,
        options={},
    )
    with local_pipeline() as p:
        manifest = p | mutual_info.MutualInformation(SPEC, source, settings, batch_size=64, pairs=pairs)
        assert_that(manifest | beam.Map(lambda m: (m["job"], m["counts"]["features"])), equal_to([("mi", 4)]))
    return out


def test_mi_matches_the_definition_on_random_single_and_multi_valued_data(tmp_path):
    items = random_items(700, seed=1)
    write_parquet(items, tmp_path / "items.parquet")
    out = run_mi(tmp_path, sources.Source("parquet", files=str(tmp_path / "items.parquet")))
    features, mi = artifacts.read_mi(out)
    assert features == FEATURES
    ones = [1.0] * 700
    for i, x in enumerate(FEATURES):
        for j, y in enumerate(FEATURES):
            if i != j:
                assert mi[i, j] == pytest.approx(naive_mi(items[x], items[y], ones), abs=1e-9), (x, y)
    assert mi[0, 3] > mi[0, 1]  # the planted a-d correlation
    # the diagonal is each feature's entropy, and NMI = MI / sqrt(H_i H_j)
    entropy_b = naive_mi(items["b"], items["b"], ones)  # not H(b) for a multi-valued b ...
    assert mi[1, 1] != pytest.approx(entropy_b)  # ... the diagonal is the marginal entropy instead
    p = collections.Counter(items["a"])
    assert mi[0, 0] == pytest.approx(-sum(c / 700 * math.log(c / 700) for c in p.values()), abs=1e-12)
    nmi = np.asarray(json.loads(artifacts.read_text(artifacts.join(out, artifacts.MI_JSON)))["nmi"])
    assert nmi[0, 3] == pytest.approx(mi[0, 3] / math.sqrt(mi[0, 0] * mi[3, 3]))
    groups = artifacts.read_cfm_groups(out)
    assert groups["group_size"] == 2 and groups["groups"]["a"] == ["a", "d"]
    manifest = artifacts.read_manifest(out)
    assert manifest["counts"]["items"] == 700 and manifest["counts"]["malformed_items"] == 0


def test_weighting_by_training_frequency(tmp_path):
    items = random_items(300, seed=2)
    write_parquet(items, tmp_path / "items.parquet")
    rng = np.random.default_rng(3)
    pair_items = [f"i{x}" for x in rng.integers(0, 150, 2000)]  # half the items never appear
    (tmp_path / "pairs.csv").write_text(
        "query_id,item_id\n" + "".join(f"q{k % 9},{i}\n" for k, i in enumerate(pair_items))
    )
    out = run_mi(
        tmp_path,
        sources.Source("parquet", files=str(tmp_path / "items.parquet")),
        weighted=True,
        pairs=sources.Source("csv", files=str(tmp_path / "pairs.csv")),
    )
    counts = collections.Counter(pair_items)
    weights = [float(counts[i]) for i in items["item_id"]]
    _, mi = artifacts.read_mi(out)
    assert mi[0, 3] == pytest.approx(naive_mi(items["a"], items["d"], weights), abs=1e-9)
    assert mi[1, 2] == pytest.approx(naive_mi(items["b"], items["c"], weights), abs=1e-9)


def test_sum_cells_combine_is_order_free():
    items = random_items(200, seed=4)
    table = pa.table(
        {k: pa.array(v, pa.list_(pa.string()) if k in ("b", "c") else pa.string()) for k, v in items.items()}
    )
    vocabularies = [mi_counts.vocabulary(mi_counts.distinct_values(table.column(f))) for f in FEATURES]
    fn = mutual_info.SumCellsFn()
    per_key = collections.defaultdict(list)
    for start in range(0, 200, 50):
        for key, cells in mi_counts.batch_cell_masses(table.slice(start, 50), FEATURES, vocabularies):
            per_key[key].append(cells)
    for key, parts in per_key.items():
        left = fn.add_input(fn.add_input(fn.create_accumulator(), parts[0]), parts[1])
        right = fn.add_input(fn.add_input(fn.create_accumulator(), parts[3]), parts[2])
        merged = fn.extract_output(fn.merge_accumulators([right, fn.compact(left)]))
        whole = mi_counts.mass_and_entropy_terms(
            next(c for k, c in mi_counts.batch_cell_masses(table, FEATURES, vocabularies) if k == key)
        )
        assert merged == pytest.approx(whole, rel=1e-12)


def test_a_bad_row_goes_to_the_dead_letter_and_the_job_succeeds(tmp_path):
    lines = ["item_id,a,b,c,d", "i0,a1,b1|b2,c1,d1", "i1,a2,,c2,d2", "i2,a1,b2,,d1", "i3,a2,b1,c1", "i4,a2,b2,c2,d2"]
    (tmp_path / "items.csv").write_text("\n".join(lines) + "\n")  # i3 has 4 fields of 5
    out = str(tmp_path / "mi")
    settings = mutual_info.MISettings(
        out_dir=out,
        dataset=None,
        spec_dict={},
        inputs={},
        features=tuple(FEATURES),
        group_size=None,
        weighted=False,
        options={},
    )
    p = local_pipeline()
    _ = p | mutual_info.MutualInformation(SPEC, sources.Source("csv", files=str(tmp_path / "items.csv")), settings, 64)
    result = p.run()
    assert options_lib.counters(result)["items_malformed_rows"] == 1
    dead = [json.loads(line) for line in (tmp_path / "mi" / "dead_letter" / "items.jsonl").read_text().splitlines()]
    assert len(dead) == 1 and dead[0]["text"] == "i3,a2,b1,c1" and "expected 5 fields" in dead[0]["reason"]
    assert dead[0]["line"] == 5 and dead[0]["source"].endswith("items.csv")
    counts = artifacts.read_manifest(out)["counts"]
    assert (counts["items"], counts["malformed_items"]) == (4, 1)
    _, mi = artifacts.read_mi(out)
    good = {"a": ["a1", "a2", "a1", "a2"], "d": ["d1", "d2", "d1", "d2"]}
    assert mi[0, 3] == pytest.approx(naive_mi(good["a"], good["d"], [1.0] * 4), abs=1e-12)  # = log 2


def test_tfrecord_items_with_a_malformed_example(tmp_path):
    from recsys_ssl.tf_setup import tf

    def example(**features):
        feature = {}
        for key, value in features.items():
            if isinstance(value, int):
                feature[key] = tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))
            else:
                values = [value] if isinstance(value, str) else value
                feature[key] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[v.encode() for v in values]))
        return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()

    path = str(tmp_path / "items.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
        writer.write(example(item_id="i0", a="a1", b=["b1", "b2"], c=[], d="d1"))
        writer.write(example(item_id="i1", a=7, b=["b1"], c=["c1"], d="d2"))  # a is an int: malformed
        writer.write(example(item_id="i2", a=["a1", "a2"], b=[], c=["c1"], d="d1"))  # two values for a
        writer.write(example(item_id="i3", a="a2", b=["b2"], c=["c1"], d="d2"))
    shard = sources.Shard("tfrecord", path)
    with local_pipeline() as p:
        read = (
            p
            | beam.Create([shard])
            | beam.ParDo(
                sources.ReadShardFn(SPEC, ["item_id", "a", "b", "c", "d"], ["item_id"], 64, "items")
            ).with_outputs(sources.DEAD_LETTER, main="batches")
        )
        rows = read.batches | beam.FlatMap(
            lambda t: [(r["item_id"], r["a"], tuple(r["b"]), tuple(r["c"])) for r in t.to_pylist()]
        )
        assert_that(rows, equal_to([("i0", "a1", ("b1", "b2"), ()), ("i3", "a2", ("b2",), ("c1",))]), label="good")
        bad = read.dead_letter | beam.Map(lambda r: (r["row"], r["reason"].split(" ")[0]))
        assert_that(bad, equal_to([(1, "not"), (2, "several")]), label="bad")


@pytest.mark.timeout(120)
def test_planted_groups_of_the_synthetic_catalog(tmp_path):
    from recsys_ssl.datasets import synthetic_catalog

    spec = features_lib.load_spec("synthetic_catalog")
    items = synthetic_catalog.generate_items(5000, seed=0)
    table = pa.table(
        {
            f.name: (
                pa.array([[x.decode() for x in v] for v in items[f.name]], pa.list_(pa.string()))
                if f.multi_valued
                else pa.array([x.decode() for x in items[f.name]], pa.string())
            )
            for f in spec.item_features
        }
    )
    pq.write_table(table, tmp_path / "items.parquet", row_group_size=1000)
    out = str(tmp_path / "mi")
    settings = mutual_info.MISettings(
        out_dir=out,
        dataset=None,
        spec_dict={},
        inputs={},
        features=tuple(spec.mi_features),
        group_size=None,
        weighted=False,
        options={},
    )
    with local_pipeline() as p:
        _ = p | mutual_info.MutualInformation(
            spec, sources.Source("parquet", files=str(tmp_path / "items.parquet")), settings, 2048
        )
    ranked = artifacts.read_cfm_groups(out)["ranked_partners"]
    for group in synthetic_catalog.PLANTED_GROUPS:
        for feature in group:
            assert ranked[feature][0] in group, (feature, ranked[feature])


def test_mi_cli_on_csv_files(tmp_path, capsys):
    spec = {
        "name": "cli",
        "query_key": "q",
        "item_key": "item",
        "query_features": [{"name": "q", "kind": "categorical"}],
        "item_features": [
            {"name": "item", "kind": "categorical"},
            {"name": "colour", "kind": "categorical"},
            {"name": "shade", "kind": "categorical"},
            {"name": "words", "kind": "multi_categorical", "max_len": 3, "separator": ";"},
        ],
    }
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    rows = [
        ("i1", "red", "dark", "a;b"),
        ("i2", "red", "dark", ""),
        ("i3", "blue", "light", "a"),
        ("i4", "blue", "light", "b;b"),
    ]
    (tmp_path / "items.csv").write_text("item,colour,shade,words\n" + "".join(",".join(r) + "\n" for r in rows))
    argv = [
        "--items-file",
        str(tmp_path / "items.csv"),
        "--spec",
        str(tmp_path / "spec.json"),
        "--run-dir",
        str(tmp_path / "run"),
        "--group-size",
        "2",
        "--direct_running_mode=in_memory",
    ]
    assert mutual_info.main(argv) == 0
    features, mi = artifacts.read_mi(tmp_path / "run" / "mi")
    assert features == ["colour", "shade", "words"]
    assert mi[0, 1] == pytest.approx(math.log(2), abs=1e-12)  # shade is a copy of colour
    words = [["a", "b"], [], ["a"], ["b", "b"]]
    assert mi[0, 2] == pytest.approx(naive_mi(["red", "red", "blue", "blue"], words, [1.0] * 4), abs=1e-12)
    assert artifacts.read_cfm_groups(tmp_path / "run" / "mi")["groups"]["colour"] == ["colour", "shade"]
    assert "[mi] wrote" in capsys.readouterr().out


# -- chance-corrected dependence ---------------------------------------------------------------------
def naive_expected_mi(a, b):
    """E[MI] under the permutation model, from its definition (Vinh et al. 2010, eq. 24-25)."""
    n = sum(a)
    total = 0.0
    for ar in a:
        for bc in b:
            for k in range(max(1, ar + bc - n), min(ar, bc) + 1):
                log_p = (
                    math.lgamma(ar + 1)
                    + math.lgamma(bc + 1)
                    + math.lgamma(n - ar + 1)
                    + math.lgamma(n - bc + 1)
                    - math.lgamma(n + 1)
                    - math.lgamma(k + 1)
                    - math.lgamma(ar - k + 1)
                    - math.lgamma(bc - k + 1)
                    - math.lgamma(n - ar - bc + k + 1)
                )
                total += math.exp(log_p) * k / n * math.log(n * k / (ar * bc))
    return total


def test_expected_mi_matches_its_definition():
    rng = np.random.default_rng(5)
    for _ in range(5):
        n = int(rng.integers(50, 400))
        a = np.bincount(rng.integers(0, rng.integers(2, 60), n))
        b = np.bincount(rng.zipf(1.6, n) % int(rng.integers(2, 40)))
        a, b = a[a > 0], b[b > 0]
        assert mi_counts.expected_mutual_information(a, b) == pytest.approx(
            naive_expected_mi(a.tolist(), b.tolist()), rel=1e-9, abs=1e-12
        )
    # Stirling's series above the table: log(x!) to 1e-10.
    x = np.arange(0, 5000)
    np.testing.assert_allclose(mi_counts.log_factorial(x), [math.lgamma(v + 1) for v in x], rtol=0, atol=1e-9)


MOVIES = features_lib.spec_from_dict(
    {
        "name": "movies",
        "query_key": "query_id",
        "item_key": "item_id",
        "query_features": [{"name": "query_id", "kind": "categorical"}],
        "item_features": [
            {"name": "item_id", "kind": "categorical"},
            {"name": "title", "kind": "categorical"},
            {"name": "title_shuffled", "kind": "categorical"},
            {"name": "year", "kind": "categorical"},
            {"name": "decade", "kind": "categorical"},
        ],
    }
)


def test_adjusted_mi_removes_the_bias_toward_many_valued_features(tmp_path):
    """MovieLens' shape, hand-made: nearly unique titles, a year, and the decade the year determines.

    Plug-in MI ranks the title first for the year (a title "predicts" anything: pure estimation
    bias), and a shuffled copy of the title keeps a large plug-in MI with the title; the adjusted
    MI of both is ~0, and the year's first partner becomes its decade.
    """
    rng = np.random.default_rng(7)
    n = 600
    titles = [f"t{rng.integers(0, 550)}" for _ in range(n)]  # ~420 distinct over 600 items
    years = [int(y) for y in rng.integers(1950, 2000, n)]
    items = {
        "item_id": [f"i{i}" for i in range(n)],
        "title": titles,
        "title_shuffled": list(rng.permutation(titles)),
        "year": [str(y) for y in years],
        "decade": [f"{y // 10 * 10}s" for y in years],
    }
    pq.write_table(pa.table({k: pa.array(v, pa.string()) for k, v in items.items()}), tmp_path / "items.parquet")
    out = str(tmp_path / "mi")
    features = ("title", "title_shuffled", "year", "decade")
    settings = mutual_info.MISettings(
        out_dir=out,
        dataset=None,
        spec_dict={"name": "movies"},
        inputs={},
        features=features,
        group_size=2,
        weighted=False,
        options={},
    )
    with local_pipeline() as p:
        _ = p | mutual_info.MutualInformation(
            MOVIES, sources.Source("parquet", files=str(tmp_path / "items.parquet")), settings, batch_size=128
        )
    data = json.loads((tmp_path / "mi" / artifacts.MI_JSON).read_text())
    mi, ami, emi = (np.array(data[key]) for key in ("mi", "ami", "emi"))
    t, ts, y, d = range(4)
    assert mi[t, ts] > 2.0 and abs(ami[t, ts]) < 0.05  # the shuffled copy: large plug-in MI, ~0 adjusted
    assert mi[y, t] > mi[y, d] and ami[y, d] > 0.5 > 0.05 > abs(ami[y, t])
    # Independent numpy: E[MI] from the value counts, AMI from its definition.
    counts = {f: np.unique(items[f], return_counts=True)[1] for f in features}
    expected = mi_counts.expected_mutual_information(counts["year"], counts["title"])
    assert emi[y, t] == pytest.approx(naive_expected_mi(counts["year"].tolist(), counts["title"].tolist()), rel=1e-9)
    assert emi[y, t] == pytest.approx(expected, rel=1e-12)
    h = np.diag(mi)
    assert ami[y, d] == pytest.approx((mi[y, d] - emi[y, d]) / ((h[y] + h[d]) / 2 - emi[y, d]), rel=1e-12)
    groups = artifacts.read_cfm_groups(out)
    assert groups["groups"]["year"][1] in ("title", "title_shuffled")  # plug-in: a title (either copy)
    assert groups["by_grouping"]["adjusted"]["groups"]["year"] == ["year", "decade"]
    assert artifacts.cfm_ranked_partners(groups, "adjusted")["year"][0] == "decade"
    assert (tmp_path / "mi" / artifacts.AMI_CSV).read_text().startswith("feature,title,title_shuffled,year,decade\n")
