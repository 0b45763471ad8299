"""The example services in integration/services/ start healthy and answer on their ports."""

from __future__ import annotations

import json
import socket
import urllib.request
from pathlib import Path

from systemd_harness import InstalledService, InstallService, run, wait_for


def http_get(port: int, path: str = "/", timeout: float = 3) -> tuple[int, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
        return r.status, r.read().decode()


def try_http_get(port: int, path: str = "/") -> tuple[int, str] | None:
    try:
        return http_get(port, path)
    except OSError:
        return None


def redis_cmd(port: int, *args: str, timeout: float = 3) -> str:
    """Minimal RESP client: send one command, return the raw reply (stripped)."""
    payload = f"*{len(args)}\r\n" + "".join(f"${len(a)}\r\n{a}\r\n" for a in args)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(payload.encode())
        data = b""
        while not data.endswith(b"\r\n"):
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    return data.decode().strip()  # whole reply, e.g. "+PONG" or "$2\r\nv1"


def try_redis_ping(port: int) -> str | None:
    try:
        return redis_cmd(port, "PING")
    except OSError:
        return None


def assert_active(svc: InstalledService) -> int:
    state = svc.prop("ActiveState")
    assert state == "active", svc.diagnostics()
    pid = int(svc.prop("MainPID"))
    assert pid > 0 and Path(f"/proc/{pid}").exists(), svc.diagnostics()
    return pid


def test_nginx_static_site(install_service: InstallService) -> None:
    svc = install_service("as-nginx")
    svc.start()
    assert_active(svc)
    status, body = wait_for(lambda: try_http_get(8081, "/"), what="nginx on :8081")
    assert status == 200
    assert "autosandbox example site" in body
    status, body = http_get(8081, "/health.json")
    assert json.loads(body) == {"service": "as-nginx", "ok": True}
    assert Path("/var/log/as-nginx/access.log").stat().st_size > 0
    # wrk can drive it (used by benchmarks)
    cp = run(["wrk", "-t1", "-c2", "-d1s", "http://127.0.0.1:8081/"], timeout=30)
    assert cp.returncode == 0, cp.stderr
    assert "Requests/sec" in cp.stdout


def test_pyapp_state_and_logs(install_service: InstallService) -> None:
    svc = install_service("as-pyapp")
    svc.start()
    pid = assert_active(svc)
    status, body = wait_for(lambda: try_http_get(8082, "/health"), what="pyapp on :8082")
    assert status == 200 and json.loads(body) == {"status": "ok"}
    _, body = http_get(8082, "/")
    first = json.loads(body)
    assert first["app"] == "as-pyapp" and first["pid"] == pid
    _, body = http_get(8082, "/")
    assert json.loads(body)["hits"] == first["hits"] + 1
    state = json.loads(Path("/var/lib/as-pyapp/state.json").read_text())
    assert state["hits"] == first["hits"] + 1
    assert "listening on 127.0.0.1:8082" in Path("/var/log/as-pyapp/app.log").read_text()
    # state survives a restart
    run(["systemctl", "restart", svc.unit], check=True)
    wait_for(lambda: try_http_get(8082, "/health"), what="pyapp back after restart")
    _, body = http_get(8082, "/")
    assert json.loads(body)["hits"] == first["hits"] + 2


def test_redis_ping(install_service: InstallService) -> None:
    svc = install_service("as-redis")
    svc.start()
    assert_active(svc)
    assert svc.prop("Type") == "notify"
    assert wait_for(lambda: try_redis_ping(6380), what="redis on :6380") == "+PONG"
    assert redis_cmd(6380, "SET", "as-key", "v1") == "+OK"
    assert redis_cmd(6380, "GET", "as-key").split("\r\n") == ["$2", "v1"]
    cp = run(["redis-cli", "-p", "6380", "INFO", "server"])
    assert "tcp_port:6380" in cp.stdout


def test_forking_service(install_service: InstallService) -> None:
    svc = install_service("as-forking")
    svc.start()
    pid = assert_active(svc)
    assert svc.prop("Type") == "forking"
    assert int(Path("/run/as-forking/as-forking.pid").read_text()) == pid
    svc.stop()
    assert svc.prop("ActiveState") == "inactive"
    assert not Path(f"/proc/{pid}").exists()


def test_notify_service(install_service: InstallService) -> None:
    svc = install_service("as-notify")
    svc.start()
    pid = assert_active(svc)
    assert svc.prop("Type") == "notify"
    assert svc.prop("StatusText") == f"as-notify ready, pid {pid}"
