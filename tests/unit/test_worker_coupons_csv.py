"""`adpulse coupons import`: the CSV is checked whole before anything is written."""

from __future__ import annotations

from pathlib import Path

import pytest

from adpulse.cli.commands.coupons import CouponFileError, read_csv


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "coupons.csv"
    path.write_text(text, encoding="utf-8")
    return path


def test_rows_are_normalised(tmp_path: Path) -> None:
    path = write(tmp_path, "code,channel\nsave10,Email\n\n PODCAST , Paid Search\n")
    assert read_csv(path) == [("SAVE10", "email"), ("PODCAST", "paid_search")]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "the first line must be the header code,channel"),
        ("coupon,channel\nA,email\n", "the first line must be the header code,channel"),
        ("code,channel\n", "no coupon rows"),
        ("code,channel\nA,email\nB\n", "line 3: expected 2 columns, got 1"),
        ("code,channel\nA,email\nBAD CODE,email\n", "line 3: coupon 'BAD CODE'"),
        ("code,channel\nA,email\nA,social\n", "line 3: A is given twice, for email and social"),
    ],
)
def test_bad_files_name_the_line_and_reason(tmp_path: Path, text: str, reason: str) -> None:
    with pytest.raises(CouponFileError, match=reason):
        read_csv(write(tmp_path, text))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CouponFileError, match="cannot read"):
        read_csv(tmp_path / "nope.csv")
