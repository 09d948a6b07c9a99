"""The tracker's `--kafka-file`: what it accepts as bootstrap servers, and what it refuses."""

from __future__ import annotations

from pathlib import Path

import pytest

from tracker.server import MAX_BOOTSTRAP_FILE_BYTES, BootstrapFileError, read_bootstrap_file


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:9092\n", "127.0.0.1:9092"),
        (" a.example:1, b.example:65535 ", "a.example:1,b.example:65535"),
        ("[::1]:9092", "[::1]:9092"),
    ],
)
def test_bootstrap_servers_read_from_the_file(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "kafka"
    path.write_text(text)
    assert read_bootstrap_file(path) == expected


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "'' is not host:port"),
        (b"localhost", "'localhost' is not host:port"),
        (b"localhost:http", "is not host:port"),
        (b"localhost:0", "port 0 out of range"),
        (b"host name:9092", "is not host:port"),
        (b"h\xc3\xb4te:9092", "not ASCII"),
        (b"h:1," * (MAX_BOOTSTRAP_FILE_BYTES // 4 + 1), f"longer than {MAX_BOOTSTRAP_FILE_BYTES}"),
    ],
)
def test_what_is_not_an_address_is_refused_naming_the_setting(
    tmp_path: Path, content: bytes, reason: str
) -> None:
    path = tmp_path / "kafka"
    path.write_bytes(content)
    with pytest.raises(BootstrapFileError) as raised:
        read_bootstrap_file(path)
    assert reason in str(raised.value)
    assert "--kafka-file" in str(raised.value)


def test_a_missing_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(BootstrapFileError, match="No such file"):
        read_bootstrap_file(tmp_path / "absent")
