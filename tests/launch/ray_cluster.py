"""A private Ray head for tests: its own temp dir and ports, loopback only, stopped by PID (never `ray stop`)."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def free_port() -> int:
    # Outside Ray's worker port range (10002-19999), as Ray requires for its own GCS / dashboard ports.
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if not 10002 <= port <= 19999:
            return port


class PrivateRayHead:
    def __init__(self, num_cpus: int = 4):
        self.temp_dir = tempfile.mkdtemp(prefix="rlpipe-rt-", dir="/tmp")
        self.gcs_port, self.dashboard_port = free_port(), free_port()
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
             f"--temp-dir={self.temp_dir}", "--disable-usage-stats"],
            check=True, env=self.env, capture_output=True, timeout=120)
        self.dashboard = f"http://127.0.0.1:{self.dashboard_port}"

    def pids(self) -> list[int]:
        """Every process whose command line names this head's temp dir (gcs_server, raylet, dashboard, workers)."""
        out = []
        for pid in os.listdir("/proc"):
            if pid.isdigit() and int(pid) != os.getpid():
                try:
                    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
                except OSError:
                    continue
                if self.temp_dir in cmdline:
                    out.append(int(pid))
        return out

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
