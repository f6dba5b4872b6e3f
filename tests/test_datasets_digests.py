"""Every shipped builder writes the same examples as the code before the shared builder template.

tests/data/builder_digests.json was recorded by ``tests/builder_digests.py`` on the pre-template
code (commit "builder digests"); each split's digest covers every example's bytes in file order
(feature map entries sorted: protobuf's map order changes per process, see datasets/digest.py).
"""

import json
import pathlib

import builder_digests
import pytest

from recsys_ssl.datasets import digest

EXPECTED = json.loads((pathlib.Path(__file__).parent / "data" / "builder_digests.json").read_text())


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return builder_digests.digests(builder_digests.build_all(tmp_path_factory.mktemp("digests")))


def test_every_builder_config_is_covered(built):
    assert sorted(built) == sorted(EXPECTED)
    assert len(EXPECTED) == 2 * (1 + len(builder_digests.MOVIELENS) + 2)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_examples_are_byte_for_byte_the_recorded_ones(built, name):
    assert built[name] == EXPECTED[name]


def test_digest_sees_a_changed_value_but_not_the_map_order():
    a = b"\n\x1c" + b"\n\x0c\n\x01a\x12\x07\n\x05\n\x03xyz" + b"\n\x0c\n\x01b\x12\x07\n\x05\n\x03uvw"
    swapped = b"\n\x1c" + b"\n\x0c\n\x01b\x12\x07\n\x05\n\x03uvw" + b"\n\x0c\n\x01a\x12\x07\n\x05\n\x03xyz"
    changed = a.replace(b"xyz", b"xyZ")
    assert digest.canonical(a) == digest.canonical(swapped) != digest.canonical(changed)
