"""The apply-batch script is its parts, in `PARTS`'s order, with every mark filled in."""

from __future__ import annotations

from importlib.resources import files

from stream.batch import ROW, SCRIPT_ROW, SCRIPT_WIDTHS, make_row, script_rows
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
    assert "for row = 1, row_count do" in APPLY_BATCH


def test_marks_name_fields_of_the_row() -> None:
    assert fill_marks("x = @AT_event_id@") == f"x = {SCRIPT_ROW.index('event_id')}"
    assert fill_marks("x = @AT_customer_id@") == f"x = {SCRIPT_ROW.index('customer_id')}"


def test_script_rows_cut_each_row_to_its_kind() -> None:
    """Each row goes to the script as the first `SCRIPT_WIDTHS[kind]` columns of `SCRIPT_ROW`
    (all of them for a kind not listed), values kept, rows one after the other."""
    assert sorted(SCRIPT_ROW) == sorted(ROW)
    assert SCRIPT_ROW[0] == "kind"
    filled = {name: f"{name}-value" for name in ROW if name != "kind"}
    rows: list[str | int] = []
    expected: list[str | int] = []
    for kind in ("k", "c", "r", "b", "l", "p", "n"):
        row = make_row(kind=kind, **filled)
        rows += row
        width = SCRIPT_WIDTHS.get(kind, len(SCRIPT_ROW))
        expected += [kind, *(filled[name] for name in SCRIPT_ROW[1:width])]
    assert script_rows(rows) == expected
    assert SCRIPT_WIDTHS["k"] == 7
    assert set(SCRIPT_ROW[: SCRIPT_WIDTHS["k"]]) == {
        "kind", "event_id", "minute", "channel", "campaign", "grouped_channel", "click_id"
    }  # fmt: skip


def test_the_loop_reads_a_row_by_its_kind() -> None:
    """The script's loop unpacks a kind's own width and gives every other column its absent
    value; a kind not listed unpacks all."""
    loop = APPLY_BATCH[APPLY_BATCH.index("for row = 1, row_count do") :]
    width = SCRIPT_WIDTHS["k"]
    assert f"= unpack(events, j + 1, j + {width - 1})\n" in loop
    assert f"= unpack(events, j + 1, j + {len(SCRIPT_ROW) - 1})\n" in loop
    assert "widths, j, last = {k = 7," in APPLY_BATCH
