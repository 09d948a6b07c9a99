"""The apply-batch script is its parts, in `PARTS`'s order, with every mark filled in."""

from __future__ import annotations

from importlib.resources import files

from stream.batch import COMMON_COLUMNS, ROW, SCRIPT_ROW, SCRIPT_WIDTHS, make_row, script_rows
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
    at = SCRIPT_ROW.index("customer_id") - COMMON_COLUMNS
    assert fill_marks("x = @EXTRA_customer_id@") == f"x = {at}"


def test_script_rows_cut_each_row_to_its_kind() -> None:
    """Each row goes to the script as the first `SCRIPT_WIDTHS[kind]` columns of `SCRIPT_ROW`
    (all of them for a kind not listed), values kept: the common columns of every row in one
    list, the rest of each row that has more in another, rows in order."""
    assert sorted(SCRIPT_ROW) == sorted(ROW)
    assert SCRIPT_ROW[0] == "kind"
    filled = {name: f"{name}-value" for name in ROW if name != "kind"}
    rows: list[str | int] = []
    common: list[str | int] = []
    rest: list[str | int] = []
    for kind in ("k", "c", "r", "b", "l", "p", "n", "k"):
        rows += make_row(kind=kind, **filled)
        width = SCRIPT_WIDTHS.get(kind, len(SCRIPT_ROW))
        script_row = [kind, *(filled[name] for name in SCRIPT_ROW[1:width])]
        common += script_row[:COMMON_COLUMNS]
        rest += script_row[COMMON_COLUMNS:]
    assert script_rows(rows) == [common, rest]
    assert script_rows([]) == [[], []]
    assert SCRIPT_WIDTHS["k"] == SCRIPT_WIDTHS["b"] == COMMON_COLUMNS == 7
    assert set(SCRIPT_ROW[:COMMON_COLUMNS]) == {
        "kind", "event_id", "minute", "channel", "campaign", "grouped_channel", "click_id"
    }  # fmt: skip


def test_the_loop_reads_a_row_by_its_kind() -> None:
    """The script's loop unpacks a kind's own width and gives every other column its absent
    value; a kind not listed unpacks all."""
    loop = APPLY_BATCH[APPLY_BATCH.index("for row = 1, row_count do") :]
    assert f"= unpack(events, j, j + {COMMON_COLUMNS - 1})\n" in loop
    rest = len(SCRIPT_ROW) - COMMON_COLUMNS
    assert f"= unpack(extras, at, at + {rest - 1})\n" in loop
    conversion = SCRIPT_WIDTHS["c"] - COMMON_COLUMNS
    assert f"= unpack(extras, at, at + {conversion - 1})\n" in loop
    assert "extra_widths = nil, nil, 0, {k = 0," in APPLY_BATCH
