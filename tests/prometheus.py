"""A real `prometheus` for tests: its config, backfilled history, the process and its HTTP API.

Nothing here imports pytest: a missing binary raises `BinaryNotFound` and the caller decides
whether that skips or fails.

    history = [Sample("adpulse_spend_total", {"channel": "email", ...}, 20.0, moment), ...]
    backfill(history, data_dir, tmp_path)           # blocks Prometheus loads at startup
    with PrometheusServer(config, data_dir, log) as prometheus:
        prometheus.api.wait_for("up", lambda result: len(result) == 4, timeout=20)
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from adpulse.cli.processes import BinaryNotFound, free_port

PROMETHEUS_INSTALL_HINT = "apt-get install prometheus"
STOP_TIMEOUT = 20.0

Series = list[dict[str, Any]]
"""An instant query's result: [{"metric": {label: value}, "value": [timestamp, "text"]}, ...]."""


def binary(name: str) -> str:
    """The path of `prometheus` or `promtool`, else `BinaryNotFound` with the install command."""
    found = shutil.which(name)
    if found is None:
        raise BinaryNotFound(name, PROMETHEUS_INSTALL_HINT)
    return found


class PrometheusQueryError(RuntimeError):
    def __init__(self, expression: str, error: str) -> None:
        super().__init__(f"Prometheus refused {expression!r}: {error}")
        self.expression = expression
        self.error = error


class PrometheusApi:
    def __init__(self, url: str) -> None:
        self.url = url

    def _get(self, path: str, **parameters: str) -> Any:
        query = urllib.parse.urlencode(parameters)
        try:
            with urllib.request.urlopen(f"{self.url}{path}?{query}", timeout=10) as response:
                document: dict[str, Any] = json.load(response)
        except urllib.error.HTTPError as error:
            with error:
                document = json.load(error)
        if document.get("status") != "success":
            raise PrometheusQueryError(parameters.get("query", path), str(document.get("error")))
        return document["data"]

    def query(self, expression: str) -> Series:
        """The instant vector of `expression` now; `PrometheusQueryError` if it does not run."""
        data = self._get("/api/v1/query", query=expression)
        if data["resultType"] != "vector":
            raise PrometheusQueryError(expression, f"a {data['resultType']}, not a vector")
        result: Series = data["result"]
        return result

    def rules(self) -> list[dict[str, Any]]:
        """Every rule of every group, as /api/v1/rules describes it."""
        groups: list[dict[str, Any]] = self._get("/api/v1/rules")["groups"]
        return [rule for group in groups for rule in group["rules"]]

    def wait_for(
        self,
        expression: str,
        condition: Callable[[Series], bool],
        *,
        timeout: float,
        interval: float = 0.2,
    ) -> Series:
        """Query until `condition(result)` holds; on timeout the error shows the last result."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(expression)
            if condition(result):
                return result
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{expression}: condition not met in {timeout:.0f}s: {result}")
            time.sleep(interval)


@dataclass(frozen=True)
class Sample:
    """One counter sample for the OpenMetrics backfill: `name` ends in `_total`."""

    name: str
    labels: Mapping[str, str]
    value: float
    moment: datetime


def openmetrics(samples: Iterable[Sample]) -> str:
    """OpenMetrics text of counter samples, families together and in time order within each."""
    by_family: dict[str, list[Sample]] = {}
    for sample in samples:
        by_family.setdefault(sample.name.removesuffix("_total"), []).append(sample)
    lines = []
    for family, members in by_family.items():
        lines.append(f"# TYPE {family} counter")
        for sample in sorted(members, key=lambda s: (sorted(s.labels.items()), s.moment)):
            labels = ",".join(f'{key}="{value}"' for key, value in sorted(sample.labels.items()))
            lines.append(
                f"{sample.name}{{{labels}}} {sample.value} {sample.moment.timestamp():.3f}"
            )
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


def backfill(samples: Iterable[Sample], data_dir: Path, work_dir: Path) -> None:
    """Write `samples` as TSDB blocks into `data_dir`, for a Prometheus started on it later."""
    source = work_dir / "history.om"
    source.write_text(openmetrics(samples))
    data_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [binary("promtool"), "tsdb", "create-blocks-from", "openmetrics", "--quiet",
         str(source), str(data_dir)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip


class PrometheusServer:
    """`prometheus` on a free port with `config` and `data_dir`; a context manager."""

    def __init__(self, config: Path, data_dir: Path, log: Path, *, port: int | None = None) -> None:
        self.config = config
        self.data_dir = data_dir
        self.log_path = log
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.api = PrometheusApi(self.url)
        self._process: subprocess.Popen[bytes] | None = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def start(self, timeout: float = 30.0) -> None:
        with self.log_path.open("ab") as sink:
            self._process = subprocess.Popen(
                [binary("prometheus"), f"--config.file={self.config}",
                 f"--storage.tsdb.path={self.data_dir}",
                 # The backfilled history goes back a week; keep it.
                 "--storage.tsdb.retention.time=30d",
                 f"--web.listen-address=127.0.0.1:{self.port}"],
                stdout=sink, stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while not self._ready():
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"prometheus exited with {self._process.returncode}:\n{self.log()}"
                )
            if time.monotonic() >= deadline:
                self.stop()
                raise RuntimeError(f"prometheus not ready within {timeout} s:\n{self.log()}")
            time.sleep(0.05)

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                return int(response.status) == 200
        except OSError:
            return False

    def stop(self) -> int:
        """SIGTERM and wait; SIGKILL if it does not stop in time. The exit code."""
        process = self._process
        if process is None:
            return 0
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            return process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            return process.wait()

    def __enter__(self) -> PrometheusServer:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
