"""Where a topic read ends: a slow answer is never taken for the end of a partition."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, cast

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from stream.topic_reads import TopicReadError, _end

TP = TopicPartition("adpulse.events", 3)


@dataclass
class Record:
    offset: int


@dataclass
class Answers:
    """A consumer whose fetches answer from a script: a list of offsets, or nothing (slow)."""

    answers: list[list[int]]
    seeks: list[int] = field(default_factory=list)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append(offset)

    async def getmany(self, tp: TopicPartition, timeout_ms: int) -> dict[TopicPartition, Any]:
        offsets = self.answers.pop(0) if self.answers else []
        return {tp: [Record(offset) for offset in offsets]} if offsets else {}


def end(answers: Answers, first: int, listed: int) -> int:
    return asyncio.run(_end(cast(AIOKafkaConsumer, answers), TP, first, listed))


def test_the_end_is_after_the_last_batch_even_when_the_first_fetches_are_slow() -> None:
    # Tansu lists the last batch's first offset + 1; the batch holds 40..49.
    answers = Answers([[], [], list(range(40, 50))])
    assert end(answers, first=0, listed=41) == 50
    assert answers.seeks == [40, 40, 40]


def test_a_partition_whose_last_records_never_arrive_is_an_error_not_an_early_end() -> None:
    with pytest.raises(TopicReadError, match="partition 3's last records did not arrive"):
        end(Answers([]), first=0, listed=41)


def test_an_empty_partition_needs_no_fetch() -> None:
    answers = Answers([])
    assert end(answers, first=7, listed=7) == 7
    assert answers.seeks == []
