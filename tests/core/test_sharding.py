"""Shards: every item in exactly one share, decided by its content hash alone."""

from __future__ import annotations

import hashlib

import pytest

from clipclust.errors import InputError
from clipclust.core.sharding import Shard, parse_shard

KEYS = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(2000)]


def test_shards_partition_the_items_evenly():
    shares = [Shard(i, 4).take(KEYS, str) for i in range(1, 5)]
    assert sorted(k for share in shares for k in share) == sorted(KEYS)
    assert all(400 < len(share) < 600 for share in shares), [len(s) for s in shares]
    assert Shard(1, 1).take(KEYS, str) == KEYS


def test_adding_items_never_moves_an_item_to_another_shard():
    before = {i: set(Shard(i, 3).take(KEYS[:1000], str)) for i in range(1, 4)}
    after = {i: set(Shard(i, 3).take(KEYS, str)) for i in range(1, 4)}
    assert all(before[i] <= after[i] for i in before)


@pytest.mark.parametrize("text, expected", [("1/4", Shard(1, 4)), (" 4/4 ", Shard(4, 4)), ("", None), (None, None)])
def test_parse(text, expected):
    assert parse_shard(text) == expected


@pytest.mark.parametrize("text", ["0/4", "5/4", "1/0", "2", "a/b", "1/2/3", "-1/4"])
def test_bad_shards_say_what_is_expected(text):
    with pytest.raises(InputError, match=r"expected i/n with 1 <= i <= n, e\.g\. 1/4"):
        parse_shard(text)
