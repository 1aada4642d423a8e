"""Helpers of the team-server tests: real `acepilot team-server` processes on loopback.

`TeamServer` starts `python -m acepilot.server.cli -vv team-server ...` on a free
127.0.0.1 port with its output in a log file (-vv: the most verbose logging,
so the privacy checks read everything the server could write), waits for
/readyz, and stops it with SIGTERM. `copy_registry` gives each test module
its own registry holding a copy of the tiny model (tests register more
versions into it); `register_version` commits another version of it.
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from acepilot.server.registry import Registry
from acepilot.server.team.tokens import TokenStore, default_db

CLI = [sys.executable, "-m", "acepilot.server.cli"]
MODEL = "tiny"
REPO = Path(__file__).resolve().parents[3]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def copy_registry(source: Path, target: Path) -> Path:
    """A registry at `target` with `tiny` v1 (copied from the session's built registry)."""
    (target / MODEL).mkdir(parents=True)
    shutil.copytree(source / MODEL / "v1", target / MODEL / "v1")
    Registry(target).set_production(MODEL, "v1")
    return target


def register_version(root: Path, *, corrupt: str | None = None) -> str:
    """Commit a copy of v1 as the next version; returns it (production is left alone).

    corrupt="sha256": the graph file is changed after the commit (its hash no
    longer matches the manifest). corrupt="graph": a graph onnxruntime cannot
    load, committed with a matching hash.
    """
    registry = Registry(root)
    source = registry.entry(MODEL, "v1")
    with registry.stage(MODEL) as staging:
        for name in source.files:
            shutil.copy2(source.file_path(name), staging / name)
        if corrupt == "graph":
            (staging / source.manifest["graph"]["file"]).write_bytes(b"not an onnx graph")
        keep = {k: v for k, v in source.manifest.items() if k not in ("files", "version")}
        entry = registry.commit(staging, MODEL, keep)
    if corrupt == "sha256":
        graph = entry.graph_path
        data = bytearray(graph.read_bytes())
        data[len(data) // 2] ^= 0xFF
        graph.write_bytes(bytes(data))
    return entry.version


def new_token(root: Path, name: str) -> str:
    return TokenStore(default_db(root)).create(name)


class TeamServer:
    """One `acepilot team-server` process (see the module docstring)."""

    def __init__(
        self,
        registry: Path,
        log_path: Path,
        *args: str,
        port: int | None = None,
        nofile: int | None = None,
        metrics_token: str | None = None,
    ) -> None:
        """`nofile`: the process's open-file limit (RLIMIT_NOFILE), to reach it in tests.

        `metrics_token`: sent by `metrics()` (for a server run with --metrics-token).
        """
        self.registry = registry
        self.metrics_token = metrics_token
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        command = [
            *CLI,
            "-vv",
            "team-server",
            "--registry",
            str(registry),
            "--model",
            MODEL,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--threads",
            "1",
            *args,
        ]
        self._log = log_path.open("ab")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}

        def limit_files() -> None:
            if nofile is not None:
                hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, hard))

        self.process = subprocess.Popen(
            command,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env=env,
            preexec_fn=limit_files if nofile is not None else None,
        )

    def wait_ready(self, timeout: float = 180) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"team-server exited:\n{self.log_text()[-3000:]}")
            try:
                response = httpx.get(self.url + "/readyz", timeout=2)
                if response.status_code == 200:
                    return dict(response.json())
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"team-server not ready in {timeout} s:\n{self.log_text()[-3000:]}")

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def metrics(self) -> dict[str, float]:
        headers = auth(self.metrics_token) if self.metrics_token else {}
        response = httpx.get(self.url + "/metrics", headers=headers, timeout=10)
        assert response.status_code == 200, response.text
        return parse_metrics(response.text)

    def rss_bytes(self) -> int:
        """The server process's resident memory now (Linux /proc)."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS in /proc/PID/status")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._log.close()


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text -> {'name{labels}': value} (labels as written by the server)."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        values[key] = float(value)
    return values


def metric(values: dict[str, float], name: str, **labels: str) -> float:
    """The value of one series (0 when absent); labels match in any order."""
    for key, value in values.items():
        match = re.match(r"^([^{]+)(?:\{(.*)\})?$", key)
        if not match or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(2) or ""))
        if found == labels:
            return value
    return 0.0


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def complete(url: str, token: str, **body: Any) -> httpx.Response:
    return httpx.post(
        url + "/v1/completions", headers=auth(token), content=json.dumps(body), timeout=60
    )
