"""free_port never hands one process the same port twice (the dev stack's tests pick five at once)."""

from __future__ import annotations

from adpulse.cli.processes import free_port


def test_ports_picked_in_a_row_are_all_different() -> None:
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
