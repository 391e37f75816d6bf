"""A private Ray head for tests: its own temp dir and ports, loopback only, stopped by PID (never `ray stop`)."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from conftest import free_port




def processes_of(marker: str) -> list[int]:
    """Processes whose command line contains ``marker``, plus all their descendants (this process excluded)."""
    children: dict[int, list[int]] = {}
    roots = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace")
            ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
        if marker in cmdline:
            roots.append(int(entry))
    found, stack = set(), list(roots)
    while stack:
        pid = stack.pop()
        if pid not in found:
            found.add(pid)
            stack.extend(children.get(pid, []))
    return sorted(found)


class PrivateRayHead:
    def __init__(self, num_cpus: int = 4):
        self.temp_dir = tempfile.mkdtemp(prefix="rlpipe-rt-", dir="/tmp")
        # Every port Ray would otherwise take from a fixed default (the dashboard agent's 52365 above all): two
        # Ray instances on one machine, or one that is still shutting down, must not collide.
        self.gcs_port, self.dashboard_port, agent_port = free_port(), free_port(), free_port()
        # Token authentication, as on a shared cluster: the head and every client read the same token file.
        token = Path(self.temp_dir) / "auth_token"
        token.write_text(secrets.token_hex(32))
        token.chmod(0o600)
        self.env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
                        RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token))
        self.env.pop("RAY_ADDRESS", None)
        self.ray = str(Path(sys.executable).with_name("ray"))
        subprocess.run(
            [self.ray, "start", "--head", f"--port={self.gcs_port}", "--node-ip-address=127.0.0.1",
             "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard_port}", f"--num-cpus={num_cpus}",
             f"--dashboard-agent-listen-port={agent_port}", f"--temp-dir={self.temp_dir}", "--disable-usage-stats"],
            check=True, env=self.env, capture_output=True, timeout=120)
        self.dashboard = f"http://127.0.0.1:{self.dashboard_port}"

    def pids(self) -> list[int]:
        """Every process of this head: those whose command line names its temp dir (gcs_server, raylet, dashboard)
        and all their descendants (workers and agents rename themselves, e.g. ``ray::DashboardAgent``)."""
        return processes_of(self.temp_dir)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after a grace period (gcs_server and raylet may ignore SIGTERM)."""
        for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 2.0)):
            for pid in self.pids():
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.time() + grace
            while self.pids() and time.time() < deadline:
                time.sleep(0.2)
