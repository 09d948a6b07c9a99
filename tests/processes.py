"""adpulse processes started for a test, as real subprocesses, and stopped afterwards."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TypeVar

from tests.services import free_port

STOP_TIMEOUT = 30.0


class ProcessError(RuntimeError):
    def __init__(self, name: str, reason: str, log: Path) -> None:
        tail = log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"
        super().__init__(f"{name} {reason}; last lines of {log}:\n{tail}")


class AdpulseProcess:
    """`adpulse <command> ...` in a subprocess, with its log in a file."""

    def __init__(
        self,
        command: str,
        args: list[str],
        log: Path,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.command = command
        self.log_path = log
        environment = {k: v for k, v in os.environ.items() if not k.startswith("ADPULSE_")}
        environment.update(env or {})
        self._log = log.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "adpulse", command, *args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=environment,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_http(self, url: str, timeout: float = 30.0) -> None:
        """Wait until `url` answers; on failure stop the process and raise with its log."""
        try:
            self._wait_http(url, timeout)
        except ProcessError:
            self.process.kill()
            self.process.wait()
            self._log.close()
            raise

    def _wait_http(self, url: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ProcessError(
                    self.command, f"exited with {self.process.returncode}", self.log_path
                )
            try:
                with urllib.request.urlopen(url, timeout=2):
                    return
            except urllib.error.HTTPError:
                return
            except OSError:
                time.sleep(0.05)
        raise ProcessError(self.command, f"did not answer {url} within {timeout} s", self.log_path)

    def terminate(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM, wait for the exit code; SIGKILL if it does not stop in time."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise ProcessError(
                self.command, f"ignored SIGTERM for {timeout} s", self.log_path
            ) from None
        finally:
            self._log.close()


class Tracker(AdpulseProcess):
    def __init__(
        self,
        *,
        kafka: str,
        topic: str,
        spool_dir: Path,
        log: Path,
        env: Mapping[str, str] | None = None,
        extra: list[str] | None = None,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [
            "--port", str(self.port), "--kafka", kafka, "--topic", topic,
            "--spool-dir", str(spool_dir), "--partitions", "4", *(extra or []),
        ]  # fmt: skip
        super().__init__("tracker", args, log, env)
        self.wait_http(f"{self.url}/healthz")


class Exporter(AdpulseProcess):
    def __init__(
        self,
        *,
        redis_url: str,
        log: Path,
        extra: list[str] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/metrics"
        self.base = f"http://127.0.0.1:{self.port}"
        args = ["--port", str(self.port), "--redis-url", redis_url, *(extra or [])]
        super().__init__("exporter", args, log, env)
        self.wait_http(self.url)


class Worker(AdpulseProcess):
    """`adpulse worker` with a short session and small batches, for tests; `kill()` is SIGKILL."""

    def __init__(
        self,
        *,
        kafka: str,
        topic: str,
        redis_url: str,
        log: Path,
        group: str,
        extra: list[str] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.port = free_port()
        self.metrics_url = f"http://127.0.0.1:{self.port}/metrics"
        args = [
            "--kafka", kafka, "--topic", topic, "--redis-url", redis_url, "--group", group,
            "--port", str(self.port), "--batch-size", "200", "--batch-within", "0.02",
            "--session-timeout", "2", "--shutdown-timeout", "5", *(extra or []),
        ]  # fmt: skip
        super().__init__("worker", args, log, env)
        self.wait_http(self.metrics_url)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()
        self._log.close()

    def metrics(self) -> str:
        with urllib.request.urlopen(self.metrics_url, timeout=5) as response:
            text: str = response.read().decode()
        return text


Started = TypeVar("Started", bound=AdpulseProcess)


def exiting_cleanly(process: Started) -> Iterator[Started]:
    """For a fixture: `process`, terminated afterwards; it must have exited 0 (a process that
    crashed or failed to stop cleanly fails the test, with its log)."""
    try:
        yield process
    finally:
        code = process.terminate()
    assert code == 0, process.log()
