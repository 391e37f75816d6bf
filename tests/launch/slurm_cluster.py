"""A private single-node Slurm for tests: munged, slurmctld and slurmd from Debian's packages, every file in one
temp dir, loopback only, non-default ports, stopped by their pid files."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

CONF = """\
ClusterName=rlpipetest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={dir}/munge.sock
StateSaveLocation={dir}/state
SlurmdSpoolDir={dir}/spool
SlurmctldPidFile={dir}/slurmctld.pid
SlurmdPidFile={dir}/slurmd.pid
SlurmctldLogFile={dir}/slurmctld.log
SlurmdLogFile={dir}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""


def available() -> bool:
    return all(shutil.which(b) for b in ("slurmctld", "slurmd", "munged", "sbatch")) and os.geteuid() == 0


class PrivateSlurm:
    def __init__(self, root: Path, ctld_port: int = 16817, slurmd_port: int = 16818):
        self.dir = root
        for sub in ("state", "spool"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        key = root / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        subprocess.run(["munged", "--force", f"--socket={root}/munge.sock", f"--key-file={key}",
                        f"--pid-file={root}/munged.pid", f"--log-file={root}/munged.log",
                        f"--seed-file={root}/munged.seed"], check=True, timeout=30)
        (root / "slurm.conf").write_text(CONF.format(host=socket.gethostname().split(".")[0], dir=root,
                                                     ctld_port=ctld_port, slurmd_port=slurmd_port,
                                                     cpus=os.cpu_count()))
        self.env = dict(os.environ, SLURM_CONF=str(root / "slurm.conf"))
        subprocess.run(["slurmctld", "-f", str(root / "slurm.conf")], check=True, env=self.env, timeout=30)
        subprocess.run(["slurmd", "-f", str(root / "slurm.conf"), "-N", "localhost"], check=True, env=self.env,
                       timeout=30)
        deadline = time.time() + 60
        while time.time() < deadline:
            out = subprocess.run(["sinfo", "-h", "-o", "%T"], env=self.env, capture_output=True, text=True).stdout
            if "idle" in out:
                return
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"slurm did not come up; slurmctld log:\n{(root / 'slurmctld.log').read_text()[-2000:]}")

    def stop(self) -> None:
        for name in ("slurmd", "slurmctld", "munged"):
            pid_file = self.dir / f"{name}.pid"
            if pid_file.exists():
                try:
                    pid = int(pid_file.read_text().strip())
                    os.kill(pid, signal.SIGTERM)
                    for _ in range(50):
                        os.kill(pid, 0)
                        time.sleep(0.1)
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
