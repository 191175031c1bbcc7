"""One local MLflow tracking server for tests: `mlflow server` on 127.0.0.1 with a SQLite
store and a local artifact folder, in its own process group (stopped by that group's id).

The server runs from its own virtualenv (`make mlflow-server` makes `.venv-mlflow/`: MLflow's
server pins an older pyarrow than the project's); the project itself needs only the client
(requirements-mlflow.txt). `LocalMLflow(mlflow, folder).start()` waits until the server
answers /health and returns it with its `url`; `close()` stops it. Also a context manager.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

from mer.testing.local_processes import free_ports

START_DEADLINE_S = 240  # the first start imports MLflow's server and builds the SQLite schema
STOP_GRACE_S = 5  # after SIGTERM, then SIGKILL


class LocalMLflow:
    def __init__(self, mlflow: Path, folder: Path) -> None:
        self.mlflow = Path(mlflow)
        self.folder = Path(folder)
        self.port = free_ports(1)[0]
        self.url = f"http://127.0.0.1:{self.port}"
        self._proc: subprocess.Popen | None = None
        self._log = None

    def start(self) -> LocalMLflow:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._log = open(self.folder / "server.log", "w")
        self._proc = subprocess.Popen(
            [
                str(self.mlflow),
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                "1",
                "--backend-store-uri",
                f"sqlite:///{self.folder / 'mlflow.db'}",
                "--artifacts-destination",
                str(self.folder / "artifacts"),
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the server and its workers
        )
        deadline = time.monotonic() + START_DEADLINE_S
        while not self._healthy():
            if self._proc.poll() is not None:
                self.close()
                raise RuntimeError(f"mlflow server exited: {self.log_tail()}")
            if time.monotonic() > deadline:
                self.close()
                raise RuntimeError(
                    f"mlflow server not up in {START_DEADLINE_S} s: {self.log_tail()}"
                )
            time.sleep(1)
        return self

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=5) as r:
                return r.status == 200
        except OSError:
            return False

    def log_tail(self, chars: int = 3000) -> str:
        return (self.folder / "server.log").read_text()[-chars:]

    def close(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGTERM)
            try:
                # Its graceful stop took 20-35 s on 2 loaded cores; the store is disposable.
                self._proc.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> LocalMLflow:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()
