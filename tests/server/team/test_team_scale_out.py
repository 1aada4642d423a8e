"""Scale-out: two team-server replicas behind nginx, routed by the Authorization header.

The replicas share the registry and the token database; nginx hashes the
Authorization header (consistent hashing), so each developer always lands
on the replica that holds their KV cache. Checked: both replicas serve, and
every token's requests all went to one replica (per-token counters of each
replica's /metrics). The nginx configuration is the one of
docs/team-server.md, with loopback ports and temporary paths.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from team_helpers import TeamServer, complete, free_port, metric, new_token

NGINX = shutil.which("nginx") or next(
    (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
)
pytestmark = pytest.mark.skipif(
    NGINX is None, reason="nginx is not installed (scripts/install-system-deps.sh installs it)"
)

CONFIG = """
worker_processes 1;
daemon off;
{user}
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;

    limit_conn_zone $binary_remote_addr zone=per_ip:10m;
    limit_req_zone  $binary_remote_addr zone=per_ip_rate:10m rate=50r/s;

    upstream acepilot {{
        # KV affinity: one developer (one token) always reaches the same replica.
        hash $http_authorization consistent;
        server 127.0.0.1:{first} max_fails=3 fail_timeout=10s;
        server 127.0.0.1:{second} max_fails=3 fail_timeout=10s;
        keepalive 32;
    }}
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 1m;
        client_header_timeout 10s;
        client_body_timeout 10s;
        keepalive_timeout 30s;
        send_timeout 30s;
        large_client_header_buffers 4 16k;
        limit_conn per_ip 64;
        limit_req zone=per_ip_rate burst=100 nodelay;

        location = /metrics {{
            allow 127.0.0.1;
            deny all;
            proxy_pass http://acepilot;
        }}
        location / {{
            proxy_pass http://acepilot;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;          # server-sent events go out token by token
            proxy_read_timeout 300s;
        }}
    }}
}}
"""


@pytest.fixture(scope="module")
def replicas(
    team_registry: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[TeamServer]]:
    logs = tmp_path_factory.mktemp("team-replicas")
    servers = [TeamServer(team_registry, logs / f"replica-{i}.log") for i in range(2)]
    try:
        for server in servers:
            server.wait_ready()
        yield servers
    finally:
        for server in servers:
            server.stop()


@pytest.fixture(scope="module")
def balancer(replicas: list[TeamServer], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    directory = tmp_path_factory.mktemp("nginx")
    port = free_port()
    (directory / "nginx.conf").write_text(
        CONFIG.format(
            dir=directory,
            port=port,
            first=replicas[0].port,
            second=replicas[1].port,
            user="user root;" if os.geteuid() == 0 else "",
        )
    )
    assert NGINX is not None
    process = subprocess.Popen(
        [
            NGINX,
            "-p",
            str(directory),
            "-c",
            str(directory / "nginx.conf"),
            "-e",
            str(directory / "error.log"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, (directory / "error.log").read_text()
            try:
                if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "nginx did not start"
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(10)


def test_both_replicas_serve_and_each_token_sticks_to_one(
    replicas: list[TeamServer], balancer: str, team_registry: Path
) -> None:
    names = [f"dev-{i}" for i in range(12)]
    tokens = {name: new_token(team_registry, name) for name in names}
    for _ in range(3):
        for token in tokens.values():
            response = complete(balancer, token, prompt="def f(x):\n", max_tokens=4, temperature=0)
            assert response.status_code == 200
    stream = httpx.post(
        balancer + "/v1/completions",
        headers={"Authorization": f"Bearer {tokens['dev-0']}"},
        json={"prompt": "x", "max_tokens": 8, "stream": True},
    )
    assert stream.status_code == 200 and stream.text.rstrip().endswith("data: [DONE]")

    counts = [r.metrics() for r in replicas]
    per_replica = [0, 0]
    for name in names:
        seen = [metric(values, "acepilot_token_requests_total", token=name) for values in counts]
        assert sorted(seen) == [0, 3 + (name == "dev-0")], f"{name} was split: {seen}"
        per_replica[seen.index(max(seen))] += 1
    assert all(per_replica), f"one replica got every token: {per_replica}"
    # The KV cache followed the token: repeated prompts were served from it.
    assert all(metric(values, "acepilot_reused_prompt_tokens_total") > 0 for values in counts)
