"""Start the pipeline's processes as children, watch them, and stop every one of them.

Used by the main job: each child is ``python -m streams.cli <command>`` with the parent's
settings in its environment, its own metrics port, and its output in a log file under
the state directory. Children are killed with the parent (Linux parent-death signal), so
Ctrl-C or a crash of the main job leaves nothing running.
"""

from __future__ import annotations

import ctypes
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from streams.errors import PipelineError


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


@dataclass
class Child:
    name: str
    args: list[str]
    metrics_port: int
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/ready",
                                        timeout=1) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def scrape(self) -> str:
        with urllib.request.urlopen(self.metrics_url, timeout=5) as resp:
            return str(resp.read().decode())


@dataclass
class Supervisor:
    """The children of one main-job run."""

    env: dict[str, str]
    log_dir: Path
    children: list[Child] = field(default_factory=list)

    def start(self, name: str, *args: str, metrics_port: int, **env: str) -> Child:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        child = Child(name, list(args), metrics_port, self.log_dir / f"{name}.log")
        with open(child.log, "ab") as out:
            child.proc = subprocess.Popen(
                [sys.executable, "-m", "streams.cli", *args], stdout=out,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=self.env | env | {"PRIVACY_PIPELINE_METRICS_PORT": str(metrics_port)},
                preexec_fn=_die_with_parent)
        self.children.append(child)
        return child

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        pending = list(self.children)
        while pending and time.monotonic() < deadline:
            self.check()
            pending = [c for c in pending if not c.ready()]
            time.sleep(0.2)  # polling readiness endpoints, bounded by the deadline
        if pending:
            raise PipelineError(f"not ready within {timeout:.0f}s: "
                                f"{', '.join(c.name for c in pending)} (logs in {self.log_dir})")

    def check(self) -> None:
        """Raise if a child died: the run cannot be trusted without it."""
        for child in self.children:
            if child.proc is not None and child.proc.poll() is not None:
                tail = child.log.read_text(errors="replace").strip().splitlines()[-1:]
                raise PipelineError(f"{child.name} exited with {child.proc.returncode}: "
                                    f"{tail[0] if tail else '(no output)'} (log: {child.log})")

    def stop(self, timeout: float = 30.0) -> None:
        for child in self.children:
            if child.proc is not None and child.proc.poll() is None:
                child.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for child in self.children:
            if child.proc is None:
                continue
            try:
                child.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.proc.kill()
                child.proc.wait()

