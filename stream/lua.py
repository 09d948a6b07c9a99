"""The apply-batch Lua script, assembled from its parts in ``stream/apply_batch/``.

One EVALSHA applies a whole batch or nothing: dedupe (event id, lead id for leads; a
conversion of an order already counted restates it, see `stream.orders`, or is a duplicate when
it changes nothing), attribution lookups (click registry, coupon registry), click registration,
the counter increments and the spend replacement. Because the script does the per-event work, a
click and its conversion in the same batch attribute correctly, and a retried batch is counted
once. It mirrors `aggregate.Aggregate`, the reference the tests compare it with; key names
follow `keys.KeySpace`. Its arguments are built by `stream.batch_arguments.encode_batch`, which
lists them.

Event, order, lead and caller ids and click ids reach the script as 64-bit fingerprints
(`stream.fingerprints`, computed by `encode_batch`) and are kept in generations
(`keys.KeySpace.generation`) of small buckets Redis encodes compactly (`keys`, "Remembered
ids"), read and written with one variadic command per bucket and generation for the whole
batch.

The script is one Lua chunk kept in parts by concern (`PARTS`, in the order they run; a later
part uses the locals of the earlier ones): the arguments and the spend check, generations of
remembered ids, their dictionaries, the batch's look-ups, the channel and campaign caps, the
counting helpers, redelivery, the events themselves, and the writes into the buckets. Its Lua
reads a row's positions and its kind's width from `batch.SCRIPT_ROW` and `batch.SCRIPT_WIDTHS`
(the ``@UNPACK_ROW@``, ``@EXTRA_WIDTHS@``, ``@AT_name@`` and ``@EXTRA_name@`` marks), and pairs
the placing numbers the worker sends with the rows' ids column by column of
`fingerprints.PLACED` (``@PLACE_LOCALS@``, ``@PLACE_ROW@``, ``@PLACE_MISMATCH@``), so the two
cannot disagree.

Returns ``{applied, duplicates, late, unlisted, other_campaigns, redelivered}`` (restatements
count as applied, and in the stats hash's ``restated``; forged signed click ids in its
``click_ids_rejected``); unlisted: events counted
under "unlisted" because the channel set was full; other_campaigns: events counted under
campaign "other" because their channel's campaign set for the month was full.

Lua numbers are doubles: a sum is never carried past 4e15, so every figure stays an exact
integer; single amounts are at most `batch.MAX_AMOUNT_MICROS`, which decoding checks.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Final

from stream.batch import ABSENT_ROW, COMMON_COLUMNS, ROW, SCRIPT_ROW, SCRIPT_WIDTHS
from stream.batch_arguments import EncodedBatch, encode_batch
from stream.fingerprints import PLACED
from stream.keys import CLUSTER_PARTS
from stream.lag import DELAY_EDGE_MINUTES

__all__ = [
    "APPLY_BATCH",
    "PARTS",
    "SPEND_CONFLICT",
    "EncodedBatch",
    "assemble",
    "encode_batch",
    "fill_marks",
]

# The script's parts, files ``stream/apply_batch/{name}.lua``, in the order they run.
PARTS: Final = (
    "arguments",
    "generations",
    "dictionaries",
    "lookups",
    "admission",
    "counting",
    "redelivery",
    "events",
    "buckets",
)


def assemble(parts: tuple[str, ...] = PARTS) -> str:
    """The script's text with its marks: the parts, a blank line between two.

    The leading newline is the script's as it was when it was one string, so that its text (and
    the SHA1 Redis caches it under) did not change when it was cut into parts.
    """
    folder = files("stream").joinpath("apply_batch")
    return "\n" + "\n".join(
        folder.joinpath(f"{name}.lua").read_text(encoding="utf-8") for name in parts
    )


# The row fields the script reads by name: each must be in `batch.ROW`.
_READS: Final = frozenset(
    {"kind", "minute", "event_id", "channel", "coupon", "value_micros", "campaign"}
    | {"click_id", "order_id", "lead_id", "grouped_channel", "status", "customer_id"}
    | {"caller", "answered", "qualified", "carried_minute"}
)


def _lua_value(value: str | int) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def unpack_row() -> str:
    """Lua reading row ``row`` (its common columns at ``j`` in ``events``, the rest at
    ``extra_at`` in ``extras``, see `batch.script_rows`) into locals named as `batch.SCRIPT_ROW`'s
    columns: the values its kind's row carries (`batch.SCRIPT_WIDTHS`), the absent value
    (`batch.ABSENT_ROW`) for the others; ``extra_at`` moves on to the next row's."""
    common, rest = SCRIPT_ROW[:COMMON_COLUMNS], SCRIPT_ROW[COMMON_COLUMNS:]
    kinds_of: dict[int, list[str]] = {}
    for kind, width in SCRIPT_WIDTHS.items():  # the most frequent kind first
        kinds_of.setdefault(width - COMMON_COLUMNS, []).append(kind)
    lines = [
        f"local {', '.join(common)} = unpack(events, j, j + {COMMON_COLUMNS - 1})",
        "local at = extra_at",
        f"extra_at = extra_at + (extra_widths[kind] or {len(rest)})",
        f"local {', '.join(rest)}",
    ]
    for number, (width, kinds) in enumerate(kinds_of.items()):
        test = " or ".join(f"kind == '{kind}'" for kind in kinds)
        lines.append(f"{'if' if number == 0 else 'elseif'} {test} then")
        if width == 1:
            lines.append(f"  {rest[0]} = extras[at]")
        elif width:
            lines.append(f"  {', '.join(rest[:width])} = unpack(extras, at, at + {width - 1})")
        absent = rest[width:]
        values = ", ".join(_lua_value(ABSENT_ROW[name]) for name in absent)
        lines.append(f"  {', '.join(absent)} = {values}")
    lines.append("else")
    lines.append(f"  {', '.join(rest)} = unpack(extras, at, at + {len(rest) - 1})")
    lines.append("end")
    return "\n  ".join(lines)


def place_locals() -> str:
    """Lua declaring, per column of `fingerprints.PLACED`, its list of placing numbers from
    ARGV[22] (``placed_{column}``) and its cursor (``next_{column}``)."""
    return "\n  ".join(
        [
            "local places = cmsgpack.unpack(ARGV[22])",
            f"local {', '.join(f'placed_{name}' for name in PLACED)} = "
            + ", ".join(f"places[{number}]" for number in range(1, len(PLACED) + 1)),
            f"local {', '.join(f'next_{name}' for name in PLACED)} = "
            + ", ".join("1" for _ in PLACED),
        ]
    )


def place_row() -> str:
    """Lua giving each fingerprint of row ``j`` (its common columns in ``events``, its extras at
    ``at``, ``width`` of them, in ``extras``) its placing number, column by column of
    `fingerprints.PLACED` as `fingerprints.script_arguments` lists them: an id absent ("") or beyond
    its row's width takes none. The common columns' ids stay in locals named after them."""
    lines: list[str] = []
    depth = 0
    for name in PLACED:
        offset = SCRIPT_ROW.index(name)
        take = (
            f"if {name} ~= '' then place_values[{name}] = placed_{name}[next_{name}]; "
            f"next_{name} = next_{name} + 1 end"
        )
        if offset < COMMON_COLUMNS:
            lines += (f"local {name} = events[j + {offset}]", take)
            continue
        # Extras columns come in increasing order: each test nests in the one before it.
        lines.append("  " * depth + f"if width > {offset - COMMON_COLUMNS} then")
        depth += 1
        lines += ("  " * depth + f"local {name} = extras[at + {offset - COMMON_COLUMNS}]",
                  "  " * depth + take)  # fmt: skip
    lines += ("  " * level + "end" for level in range(depth - 1, -1, -1))
    return "\n    ".join(lines)


def place_mismatch() -> str:
    """Lua true when a list of placing numbers was not read to its end (`place_row`)."""
    return " or ".join(f"next_{name} ~= #placed_{name} + 1" for name in PLACED)


def fill_marks(source: str) -> str:
    """`source` with its marks filled in: the row's names, positions and widths from
    `batch.SCRIPT_ROW`, `batch.COMMON_COLUMNS` and `batch.SCRIPT_WIDTHS`, the delay edges from
    `lag`, cluster mode's part count from `keys` (the customer part)."""
    missing = _READS - set(ROW)
    if missing:
        raise ValueError(f"the apply-batch script reads {sorted(missing)}, not in batch.ROW")
    if not all(name.isidentifier() for name in ROW):
        raise ValueError(f"batch.ROW names must be Lua identifiers: {ROW}")
    widths = ", ".join(
        f"{kind} = {width - COMMON_COLUMNS}" for kind, width in SCRIPT_WIDTHS.items()
    )
    source = (
        source.replace("@UNPACK_ROW@", unpack_row())
        .replace("@PLACE_LOCALS@", place_locals())
        .replace("@PLACE_ROW@", place_row())
        .replace("@PLACE_MISMATCH@", place_mismatch())
        .replace("@EXTRA_WIDTHS@", widths)
        .replace("@EXTRA_ALL@", str(len(SCRIPT_ROW) - COMMON_COLUMNS))
        .replace("@ROW_WIDTH@", str(COMMON_COLUMNS))
        .replace("@DELAY_EDGES@", ", ".join(str(edge) for edge in DELAY_EDGE_MINUTES))
        .replace("@CLUSTER_PARTS@", str(CLUSTER_PARTS))
    )
    for offset, name in enumerate(SCRIPT_ROW):
        if offset < COMMON_COLUMNS:
            source = source.replace(f"@AT_{name}@", str(offset))
        else:
            source = source.replace(f"@EXTRA_{name}@", str(offset - COMMON_COLUMNS))
    if "@" in source:
        raise ValueError(f"the apply-batch script names a row field not in batch.ROW: {source}")
    return source


APPLY_BATCH: Final = fill_marks(assemble())
SPEND_CONFLICT: Final = -1
