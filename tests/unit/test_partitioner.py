from aiokafka.partitioner import murmur2 as reference
from hypothesis import given
from hypothesis import strategies as st

from tracker.partitioner import murmur2, partition_for


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
