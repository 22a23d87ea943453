"""Run `ftjob-operator` as a real process against an API server, and read its log afterwards.

The log is scanned for tracebacks and ERROR/CRITICAL lines: a test fails on any that it did not declare
as expected, so a crash swallowed by kopf (which keeps running after a handler fails) cannot pass
unnoticed.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

import urllib3

PROBLEM = re.compile(r"Traceback \(most recent call last\)|\[(ERROR|CRITICAL)\s*\]|\b(ERROR|CRITICAL)\b")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def operator_command() -> list[str]:
    """The installed console script when it sits beside this interpreter, else the module."""
    script = Path(sys.executable).parent / "ftjob-operator"
    if script.exists():
        return [str(script)]
    found = shutil.which("ftjob-operator")
    return [found] if found else [sys.executable, "-m", "ftjob_operator.main"]


class OperatorProcess:
    """One operator process; `start` may be called again after `kill` or `stop` (the log accumulates)."""

    def __init__(
        self, kubeconfig: Path, log_path: Path, args: Sequence[str] = (), env: dict[str, str] | None = None
    ):
        self.kubeconfig = kubeconfig
        self.log_path = log_path
        self.args = list(args)
        self.extra_env = dict(env or {})
        self.liveness_port = free_port()
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 30.0) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBERNETES_", "FTJOB_"))}
        env.update({"KUBECONFIG": str(self.kubeconfig), "PYTHONUNBUFFERED": "1"}, **self.extra_env)
        command = [
            *operator_command(),
            "--liveness-port",
            str(self.liveness_port),
            "--metrics-port",
            "0",
            *self.args,
        ]
        self._log = self.log_path.open("ab")
        self._process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        self._wait_live(timeout)

    def _wait_live(self, timeout: float) -> None:
        http = urllib3.PoolManager()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running:
                raise RuntimeError(f"the operator exited early:\n{self.log_text()[-4000:]}")
            try:
                response = http.request(
                    "GET", f"http://127.0.0.1:{self.liveness_port}/healthz", timeout=1.0, retries=False
                )
                if response.status == 200:
                    return
            except urllib3.exceptions.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"the operator was not live after {timeout} s:\n{self.log_text()[-4000:]}")

    def kill(self) -> None:
        """SIGKILL: no cleanup, no chance to finish anything, like an OOM kill or a lost node."""
        if self._process is not None and self.running:
            self._process.send_signal(signal.SIGKILL)
            self._process.wait(10)
        self._close_log()

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM and wait, as the kubelet stops a pod; SIGKILL if it takes too long."""
        code: int | None = None
        if self._process is not None:
            if self.running:
                self._process.send_signal(signal.SIGTERM)
                try:
                    code = self._process.wait(timeout)
                except subprocess.TimeoutExpired:
                    self._process.kill()
                    code = self._process.wait(10)
            else:
                code = self._process.returncode
        self._close_log()
        return code

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def problems(self, expected: Sequence[str | re.Pattern[str]] = ()) -> list[str]:
        """Log lines reporting an error or a traceback that match none of the `expected` patterns.

        A traceback is reported by its first line; its body lines are not reported again.
        """
        allowed = [re.compile(p) if isinstance(p, str) else p for p in expected]
        found = []
        for line in self.log_text().splitlines():
            if PROBLEM.search(line) and not any(p.search(line) for p in allowed):
                found.append(line)
        return found
