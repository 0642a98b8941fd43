"""Start uvicorn servers as subprocesses on 127.0.0.1, watch their memory, stop them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

__all__ = ["Server", "free_port"]

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _status_kb(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            found.append(int(entry.name))
    return found


class Server:
    """One ``uvicorn --factory`` process (with ``workers`` > 1, a supervisor and its workers)."""

    def __init__(
        self, factory: str, env: dict[str, str], *, health: str, workers: int = 1, name: str = ""
    ) -> None:
        self.factory = factory
        self.port = free_port()
        self.health = health
        self.workers = workers
        self.name = name or factory
        self.env = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = ROOT / "bench" / "results" / f"server-{self.name}-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> Server:
        cmd = [
            sys.executable, "-m", "uvicorn", "--factory", self.factory,
            "--host", "127.0.0.1", "--port", str(self.port),
            "--no-access-log", "--log-level", "warning",
        ]  # fmt: skip
        if self.workers > 1:
            cmd += ["--workers", str(self.workers)]
        self.log.parent.mkdir(parents=True, exist_ok=True)
        out = self.log.open("wb")
        self.proc = subprocess.Popen(cmd, env=self.env, cwd=ROOT, stdout=out, stderr=out)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: see {self.log}")
            try:
                with urllib.request.urlopen(self.url + self.health, timeout=1) as r:
                    if r.status == 200 and self._all_workers_up():
                        return self
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not start in {timeout}s: see {self.log}")

    def _all_workers_up(self) -> bool:
        return self.workers == 1 or len(self.pids()) > self.workers

    def pids(self) -> list[int]:
        if self.proc is None:
            return []
        tree, frontier = [self.proc.pid], [self.proc.pid]
        while frontier:
            kids = [k for p in frontier for k in _children(p)]
            tree += kids
            frontier = kids
        return tree

    def rss_mb(self) -> float:
        """Current resident memory of the whole process tree (VmRSS), MiB."""
        return round(sum(_status_kb(p, "VmRSS") for p in self.pids()) / 1024, 1)

    def peak_rss_mb(self) -> float:
        """Peak resident memory (VmHWM) summed over the process tree, MiB."""
        return round(sum(_status_kb(p, "VmHWM") for p in self.pids()) / 1024, 1)

    def peak_rss_per_worker_mb(self) -> float:
        """The largest peak resident memory (VmHWM) of one serving process, MiB.

        With ``workers`` > 1 uvicorn's supervisor only forks; each worker serves alone.
        """
        if self.proc is None:
            return 0.0
        serving = _children(self.proc.pid) if self.workers > 1 else [self.proc.pid]
        return round(max((_status_kb(p, "VmHWM") for p in serving), default=0) / 1024, 1)

    def loop_cpu_s(self) -> float:
        """CPU seconds (user + system) of the serving process's main thread: its event loop.

        Threads of its own (the database's) are not in it. One worker only.
        """
        if self.proc is None:
            return 0.0
        pid = self.proc.pid
        fields = Path(f"/proc/{pid}/task/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of stat(5)
        return (utime + stime) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
