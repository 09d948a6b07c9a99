"""The apply-batch script is its parts, in `PARTS`'s order, with every mark filled in."""

from __future__ import annotations

from importlib.resources import files

from stream.batch import ROW
from stream.lua import APPLY_BATCH, PARTS, assemble, fill_marks


def _part(name: str) -> str:
    return files("stream").joinpath("apply_batch", f"{name}.lua").read_text(encoding="utf-8")


def test_every_part_file_is_listed_once() -> None:
    shipped = {
        entry.name.removesuffix(".lua")
        for entry in files("stream").joinpath("apply_batch").iterdir()
        if entry.name.endswith(".lua")
    }
    assert sorted(PARTS) == sorted(shipped)
    assert len(set(PARTS)) == len(PARTS)


def test_parts_assemble_in_order_with_marks_filled() -> None:
    at = 0
    for name in PARTS:
        filled = fill_marks(_part(name))
        found = APPLY_BATCH.find(filled, at)
        assert found == at + 1, f"{name} is not where the order puts it"
        at = found + len(filled)
    assert at == len(APPLY_BATCH)
    assert "@" in assemble()
    assert "@" not in APPLY_BATCH
    assert f"for j = 1, #events, {len(ROW)} do" in APPLY_BATCH


def test_marks_name_fields_of_the_row() -> None:
    assert fill_marks("x = @AT_event_id@") == f"x = {ROW.index('event_id')}"
