import os

import pytest
from aiokafka.partitioner import murmur2 as reference
from hypothesis import given
from hypothesis import strategies as st

from tracker.partitioner import murmur2, murmur2_many, partition_for, partition_of


@given(st.binary(max_size=300))
def test_murmur2_matches_the_kafka_client(key: bytes) -> None:
    assert murmur2(key) == reference(key)


def test_known_partitions_match_the_java_client() -> None:
    # Values from the Java client's DefaultPartitioner for these keys.
    assert murmur2(b"21") == reference(b"21") == (-973932308) & 0xFFFFFFFF
    assert partition_for(b"", 8) == (reference(b"") & 0x7FFFFFFF) % 8


@given(st.binary(max_size=64), st.integers(min_value=1, max_value=1024))
def test_partition_is_in_range(key: bytes, partitions: int) -> None:
    assert 0 <= partition_for(key, partitions) < partitions


@given(st.lists(st.binary(max_size=40), max_size=40))
def test_murmur2_many_matches_the_kafka_client(keys: list[bytes]) -> None:
    assert murmur2_many(keys) == [reference(key) for key in keys]


@pytest.mark.parametrize("length", [*range(13), 32, 33, 36, 100])
def test_murmur2_many_over_keys_of_one_length(length: int) -> None:
    # Enough keys of one length to be hashed side by side, and the ends of every lane set.
    keys = [os.urandom(length) for _ in range(300)] + [b"\xff" * length, b"\x00" * length]
    assert murmur2_many(keys) == [reference(key) for key in keys]


@given(st.binary(max_size=64), st.integers(min_value=1, max_value=1024))
def test_partition_of_a_hash_is_partition_for_its_key(key: bytes, partitions: int) -> None:
    assert partition_of(murmur2(key), partitions) == partition_for(key, partitions)
