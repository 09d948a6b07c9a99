"""The dev stack's children as the broker replacement (`broker_recycling`) moves them.

A replacement runs a second broker and a second worker beside the first ones for a moment, so
a name ("broker", "worker") may stand for two children: the oldest is the one in service until
the replacement retires it. Kept apart from `devstack` so that the stack's module stays short.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from adpulse.cli.broker_recycling import write_bootstrap_file
from adpulse.cli.devcheck import DevStackError
from adpulse.cli.processes import ServiceStartError, StartCancelled, free_port

if TYPE_CHECKING:
    from adpulse.cli.devstack import Component, DevSettings

# Seconds a component may take to answer after it is spawned.
START_DEADLINE = 60.0


class SwapControl:
    """What `BrokerRecycler` needs of the dev stack (`StackControl`), mixed into `DevStack`."""

    settings: DevSettings
    started: list[Component]
    stop_requested: threading.Event
    kafka: str
    kafka_file: Path
    tracker_log_mark: int

    def broker_component(self, port: int) -> Component:
        raise NotImplementedError

    def worker_component(self, port: int, kafka: str) -> Component:
        raise NotImplementedError

    def _env(self, component: Component) -> dict[str, str] | None:
        raise NotImplementedError

    def process_id(self, name: str) -> int | None:
        """The oldest running component `name`'s process id."""
        component = next((c for c in self.started if c.name == name), None)
        running = component.process.process if component else None
        return running.pid if running is not None and running.poll() is None else None

    def start_successor(self, name: str, kafka: str) -> str | None:
        """A second broker on a free port, or a second worker reading `kafka` (its `/metrics`
        on the stack's worker port, shared with the first: `--share-port`); its address once it
        answers, None if a stop was requested meanwhile (the stop stops it too)."""
        if name == "broker":
            port = free_port()
            component = self.broker_component(port)
        else:
            port = self.settings.worker_port
            component = self.worker_component(port, kafka)
        self.started.append(component)
        return f"{self.settings.host}:{port}" if self.launch(component) else None

    def launch(self, component: Component) -> bool:
        """Start `component` and wait until it answers; False when a stop was requested
        meanwhile, which is not an error: the watch loop sees it next and stops everything."""
        component.process.spawn(component.argv, env=self._env(component))
        if component.ready is not None:
            try:
                component.process.wait_ready(component.ready, START_DEADLINE, self.stop_requested)
            except StartCancelled:
                return False
            except ServiceStartError as error:
                raise DevStackError(str(error)) from error
        return True

    def retire(self, name: str, newest: bool = False) -> None:
        """Stop the oldest (or the newest) component `name` and forget it."""
        found = [c for c in self.started if c.name == name]
        if found:
            component = found[-1] if newest else found[0]
            self.started.remove(component)
            # Memory storage has nothing to flush, and Tansu drains clients for seconds.
            component.process.terminate(0.0 if name == "broker" else component.grace)

    def hand_over_metrics(self) -> None:
        """Stop the oldest worker serving `/metrics` (SIGHUP, with `--share-port`) when a newer
        one serves on the same port: scrapes then reach one process's counters only."""
        workers = [c for c in self.started if c.name == "worker"]
        oldest = workers[0].process.process if len(workers) > 1 else None
        if oldest is not None and oldest.poll() is None:
            oldest.send_signal(signal.SIGHUP)

    def move_tracker(self, kafka: str) -> None:
        """Point the tracker at the broker at `kafka`: its `--kafka-file`, read on SIGHUP."""
        write_bootstrap_file(self.kafka_file, kafka)
        self.kafka = kafka
        tracker = next((c for c in self.started if c.name == "tracker"), None)
        if tracker is not None and tracker.process.process is not None:
            self.tracker_log_mark = tracker.process.log_path.stat().st_size
            tracker.process.process.send_signal(signal.SIGHUP)

    def tracker_moved(self, kafka: str) -> bool:
        """True once the tracker's log says it produces to `kafka` (or there is no tracker);
        the tracker logs it as a warning, shown at every log level but ERROR."""
        tracker = next((c for c in self.started if c.name == "tracker"), None)
        if tracker is None or not tracker.process.running:
            return True
        with tracker.process.log_path.open("rb") as log:
            log.seek(self.tracker_log_mark)
            return f"now producing to the broker at {kafka} ".encode() in log.read()
