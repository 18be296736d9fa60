"""`lowdose run --cluster slurm` on a real single-node SLURM (munged + slurmctld + slurmd) on localhost.

The fixture writes a slurm.conf into a temporary directory, starts the three daemons
in the foreground and waits for the node to be idle. If they cannot start here the
test skips with the daemon's own error message.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.integration.deploy.conftest import (
    assert_same_outputs,
    child_env,
    free_port,
    lowdose,
    pipeline_yaml,
    stop,
)

pytestmark = pytest.mark.slow

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "sinfo", "squeue", "scancel")


def _which(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin")


def _tail(path: Path, n: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


SLURM_CONF = """\
ClusterName=lowdose-test
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/munge/munge.sock
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/builtin
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
NodeName=localhost NodeHostname={hostname} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=2048 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""


@pytest.fixture(scope="module")
def slurm() -> Iterator[dict[str, str]]:
    """Start a one-node SLURM; yield the environment that points its clients at it."""
    missing = [d for d in DAEMONS if _which(d) is None]
    if missing:
        pytest.skip(f"SLURM not installed (missing {', '.join(missing)}; apt-get install slurm-wlm munge)")
    if os.geteuid() != 0:
        pytest.skip("the single-node SLURM fixture runs slurmd as root (SlurmUser=root); not root here")
    root = Path(tempfile.mkdtemp(prefix="ld-slurm-", dir="/tmp"))  # short: unix socket paths ≤ 107 bytes
    for sub in ("munge", "state", "spool", "log"):
        (root / sub).mkdir()
    (root / "munge").chmod(0o700)
    key = root / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    conf = root / "slurm.conf"
    conf.write_text(
        SLURM_CONF.format(
            root=root,
            ctld_port=free_port(),
            d_port=free_port(),
            hostname=os.uname().nodename,
            cpus=os.cpu_count(),
        )
    )
    env = {**child_env(), "SLURM_CONF": str(conf)}
    procs: list[subprocess.Popen[bytes]] = []

    def start(args: list[str], log: str) -> subprocess.Popen[bytes]:
        out = (root / "log" / log).open("wb")
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        procs.append(proc)
        return proc

    def fail(what: str, *logs: str) -> None:
        text = "\n".join(_tail(root / "log" / log) for log in logs)
        pytest.skip(f"SLURM could not start in this sandbox ({what}):\n{text}")

    try:
        munged = start(
            [
                str(_which("munged")),
                "-F",
                "-f",
                f"--socket={root}/munge/munge.sock",
                f"--key-file={key}",
                f"--log-file={root}/log/munged.log",
                f"--pid-file={root}/munge/munged.pid",
                f"--seed-file={root}/munge/seed",
            ],
            "munged.out",
        )
        deadline = time.monotonic() + 15
        while not (root / "munge" / "munge.sock").exists():
            if munged.poll() is not None or time.monotonic() > deadline:
                fail("munged", "munged.out", "munged.log")
            time.sleep(0.1)
        ctld = start([str(_which("slurmctld")), "-D", "-c", "-i"], "slurmctld.out")
        time.sleep(1.0)
        slurmd = start([str(_which("slurmd")), "-D", "-N", "localhost"], "slurmd.out")
        deadline = time.monotonic() + 60
        while True:
            for proc, name in ((ctld, "slurmctld"), (slurmd, "slurmd")):
                if proc.poll() is not None:
                    fail(f"{name} exited with {proc.returncode}", f"{name}.out", f"{name}.log")
            state = subprocess.run(
                [str(_which("sinfo")), "-h", "-N", "-o", "%T"],
                env=env,
                capture_output=True,
                text=True,
                timeout=20,
            ).stdout.strip()
            if state == "idle":
                break
            if time.monotonic() > deadline:
                fail(f"node state {state!r} after 60 s", "slurmctld.out", "slurmd.out")
            time.sleep(0.5)
        yield {"SLURM_CONF": str(conf), "root": str(root)}
    finally:
        subprocess.run([str(_which("scancel")), "--user=root"], env=env, capture_output=True, timeout=20)
        for proc in reversed(procs):
            stop(proc)
        shutil.rmtree(root, ignore_errors=True)


def _jobqueue_config(root: Path, logs: Path) -> Path:
    """A dask-jobqueue config (the deploy/slurm/jobqueue.yaml schema) sized for the test node."""
    config = {
        "jobqueue": {
            "slurm": {
                "cores": 1,
                "memory": "1GB",
                "processes": 1,
                "walltime": "00:10:00",
                "queue": "debug",
                "job-script-prologue": ["export OMP_NUM_THREADS=1", "echo lowdose-prologue-ran"],
                "worker-extra-args": ["--host", "127.0.0.1"],
                "scheduler-options": {"host": "127.0.0.1"},
                "log-directory": str(logs),
                "death-timeout": 60,
            }
        }
    }
    folder = root / "dask-config"
    folder.mkdir()
    (folder / "jobqueue.yaml").write_text(yaml.safe_dump(config))
    return folder


def test_lowdose_run_submits_worker_jobs_to_slurm(slurm, deploy_inputs, local_reference, tmp_path):
    series, model = deploy_inputs
    logs = tmp_path / "job-logs"
    env = {
        **child_env(),
        "SLURM_CONF": slurm["SLURM_CONF"],
        "DASK_CONFIG": str(_jobqueue_config(tmp_path, logs)),
    }
    # Backend options in the pipeline's cluster block override the dask-jobqueue config.
    prologue = ["export OMP_NUM_THREADS=1", "echo lowdose-options-prologue-ran"]
    options = {"processes": 1, "job_script_prologue": prologue}
    config = pipeline_yaml(
        tmp_path / "p.yaml", series, tmp_path / "out", model, {"name": "slurm", "options": options}
    )
    proc = lowdose("run", str(config), "--n-workers", "2", "--quiet", env=env, timeout_s=300)
    assert "8 frames in 4 chunks (4 run, 0 already done)" in proc.stdout
    assert_same_outputs(tmp_path / "out", local_reference)

    # The workers really ran as SLURM batch jobs: each left its job log with the prologue's line
    # (the cluster.options prologue, which replaced the one of the dask-jobqueue config).
    job_logs = sorted(logs.glob("*.err")) + sorted(logs.glob("*.out"))
    text = "\n".join(p.read_text(errors="replace") for p in job_logs)
    assert "lowdose-options-prologue-ran" in text and "lowdose-prologue-ran" not in text
    assert "Start worker at" in text or "Starting Worker" in text or "Registered to" in text
    # The worker jobs were cancelled when the run closed its cluster.
    deadline = time.monotonic() + 30
    while True:
        queue = subprocess.run(
            [str(_which("squeue")), "-h", "-o", "%i %T"], env=env, capture_output=True, text=True, timeout=20
        ).stdout
        if "RUNNING" not in queue or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert "RUNNING" not in queue


def test_deploy_batch_script_is_accepted_by_sbatch(slurm):
    # --test-only: slurmctld validates the script's directives without queueing it.
    env = {**child_env(), "SLURM_CONF": slurm["SLURM_CONF"]}
    script = Path(__file__).resolve().parents[3] / "deploy" / "slurm" / "run-pipeline.sbatch"
    proc = subprocess.run(
        [str(_which("sbatch")), "--test-only", "--partition=debug", "--mem=1G", str(script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    assert "to start at" in proc.stderr + proc.stdout


def test_cluster_up_slurm_until_ctrl_c(slurm, tmp_path):
    """`lowdose cluster up --cluster slurm -o ...`: options reach the job, a worker joins, Ctrl-C ends it."""
    import signal
    import sys

    from distributed import Client

    env = {**child_env(), "SLURM_CONF": slurm["SLURM_CONF"]}
    options = [
        "cores=1", "memory=1GB", "processes=1", "queue=debug", "jobs=1", "scheduler_host=127.0.0.1",
        "walltime=00:05:00", f"log_directory={tmp_path}", "job_script_prologue=[echo up-prologue]",
        "worker_extra_args=[--host, 127.0.0.1]",
    ]  # fmt: skip
    args = [sys.executable, "-m", "lowdose", "cluster", "up", "--cluster", "slurm"]
    for option in options:
        args += ["-o", option]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # blocks until the scheduler is up (or the process dies)
        assert line.startswith("scheduler: tcp://127.0.0.1:"), line + (
            proc.stderr.read() if proc.poll() else ""
        )
        address = line.split(": ", 1)[1].strip()
        with Client(address, timeout=30) as client:
            client.wait_for_workers(1, timeout=120)
            assert len(client.scheduler_info()["workers"]) == 1
        queue = subprocess.run(
            [str(_which("squeue")), "-h", "-o", "%j %T"], env=env, capture_output=True, text=True, timeout=20
        ).stdout
        assert "RUNNING" in queue
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    assert "up-prologue" in "".join(p.read_text(errors="replace") for p in tmp_path.glob("*.*"))
