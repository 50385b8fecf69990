"""The systems compared by bench/peers.py, each driven through its own CLI:
kiln (`kiln run -d`), Slurm (`sbatch`), pueue (`pueue add`) and
task-spooler (`tsp`). Each one runs on a private temporary folder (its own
sockets, state, logs) and is stopped and removed afterwards.

One interface: start(slots, gpus) / stop(), marks() (a folder tasks can
write to, as the host and the task see it), submit(name, script, gpus)
(the argv of one submission; `script` is a shell command line), busy()
and outcome() (succeeded, failed).
"""
import json
import os
import shutil
import socket
import subprocess
import time

import common
from common import KILN, Kiln, log, stop_process, tmpdir, wait_until

PUEUE_BIN = os.path.join(common.CACHE, "pueue", "bin")


class KilnSystem:
    family = "kiln"

    def __init__(self, sandbox=True):
        self.sandbox = sandbox
        self.name = "kiln" if sandbox else "kiln --no-sandbox"
        self.k = None

    def start(self, slots=64, gpus=0):
        args = ["--cpus", str(slots), "--memory", f"{max(slots, 64)}Gi"]
        if gpus:
            args += ["--fake-gpus", str(gpus)]
        if not self.sandbox:
            args.append("--no-sandbox")
        self.k = Kiln(*args).start()
        self.env = self.k.env
        self.cwd = self.k.data
        self.describe = (f"kiln server {' '.join(args)} "
                         f"({'tasks in the bubblewrap sandbox' if self.k.sandboxed else 'no sandbox'})")
        return self

    def marks(self):
        return self.k.marks()

    def submit(self, name, script, gpus=None):
        argv = [KILN, "run", "-d", "--name", name]
        if gpus:
            argv += ["--gpus", str(gpus)]
        return argv + ["--", "sh", "-c", script]

    def busy(self):
        return self.k.busy()

    def outcome(self):
        return self.k.count("SUCCEEDED"), self.k.count("FAILED") + self.k.count("STOPPED")

    def preempted(self, names):
        """(attempts ended by preemption, GPU-seconds those attempts held):
        work a scheduler that preempts throws away when the job keeps no
        checkpoint, as a `sleep` does not."""
        count, gpu_s = 0, 0.0
        for n in names:
            j = self.k.job(n)
            count += j.get("preemptions", 0)
            for a in j.get("attempts", []):
                for t in a["tasks"]:
                    if t.get("startedAtMs") and t.get("finishedAtMs"):
                        gpu_s += len(t["gpus"]) * (t["finishedAtMs"] - t["startedAtMs"]) / 1000
        return count, gpu_s

    def stop(self):
        if self.k:
            self.k.stop()
            self.k = None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SLURM_CONF = """\
ClusterName=bench
SlurmctldHost={host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={base}/munge/munge.socket
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
StateSaveLocation={base}/state
SlurmdSpoolDir={base}/spool
SlurmctldPidFile={base}/slurmctld.pid
SlurmdPidFile={base}/slurmd.pid
SlurmctldLogFile={base}/log/slurmctld.log
SlurmdLogFile={base}/log/slurmd.log
ProctrackType=proctrack/pgid
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
GresTypes=gpu
# Tuned for latency: schedule on every event, no batching delay.
SchedulerParameters=sched_min_interval=0,batch_sched_delay=0,default_queue_depth=1000
MessageTimeout=2
SlurmctldTimeout=10
SlurmdTimeout=10
InactiveLimit=0
MinJobAge=600
MaxJobCount=50000
MaxArraySize=100001
KillWait=1
Waittime=0
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
SlurmctldDebug=error
SlurmdDebug=error
SlurmdParameters=config_overrides
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=16000 Gres=gpu:{gpus} State=UNKNOWN
PartitionName=bench Nodes={host} Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
"""


class Slurm:
    """slurmctld + slurmd on localhost (munge for authentication), the GPUs
    as gres with fake device files (/dev/nvidiaN, major 195)."""
    family = "slurm"
    name = "Slurm"

    def __init__(self):
        self.procs = []
        self.made_devices = []
        self.base = None

    def start(self, slots=64, gpus=4):
        gpus = gpus or 4
        self.base = b = tmpdir("slurm-bench-")
        for d in ("munge", "state", "spool", "log", "out", "marks"):
            os.makedirs(os.path.join(b, d))
        os.chmod(os.path.join(b, "munge"), 0o755)
        self.host = socket.gethostname().split(".")[0]
        key = "/etc/munge/munge.key"
        if not os.access(key, os.R_OK):
            key = os.path.join(b, "munge", "munge.key")
            subprocess.run(["mungekey", "--create", f"--keyfile={key}"], check=True)
        self.conf = os.path.join(b, "slurm.conf")
        with open(self.conf, "w") as f:
            f.write(SLURM_CONF.format(host=self.host, base=b, cpus=slots, gpus=gpus,
                                      ctld_port=free_port(), slurmd_port=free_port()))
        with open(os.path.join(b, "gres.conf"), "w") as f:
            f.write(f"AutoDetect=off\nNodeName={self.host} Name=gpu File=/dev/nvidia[0-{gpus - 1}]\n")
        for i in range(gpus):
            dev = f"/dev/nvidia{i}"
            if not os.path.exists(dev):
                os.mknod(dev, 0o666 | 0o020000, os.makedev(195, i))
                self.made_devices.append(dev)
        self.env = dict(os.environ, SLURM_CONF=self.conf)
        self.cwd = os.path.join(b, "out")
        logs = open(os.path.join(b, "log", "daemons.out"), "w")
        m = os.path.join(b, "munge")
        self.procs.append(subprocess.Popen(
            ["munged", "-F", "-f", f"--socket={m}/munge.socket", f"--pid-file={m}/munged.pid",
             f"--log-file={m}/munged.log", f"--seed-file={m}/munged.seed", f"--key-file={key}"],
            stdout=logs, stderr=logs))
        wait_until(lambda: os.path.exists(f"{m}/munge.socket"), 20, "munged")
        self.procs.append(subprocess.Popen(["slurmctld", "-D", "-f", self.conf],
                                           stdout=logs, stderr=logs, env=self.env))
        self.procs.append(subprocess.Popen(["slurmd", "-D", "-f", self.conf, "-N", self.host],
                                           stdout=logs, stderr=logs, env=self.env))

        def idle():
            r = subprocess.run(["sinfo", "-h", "-o", "%T"], env=self.env,
                               capture_output=True, text=True)
            return r.returncode == 0 and r.stdout.strip() == "idle"
        wait_until(idle, 60, "the Slurm node to be idle", every=0.2)
        self.describe = (f"slurmctld + slurmd 22.05 on localhost, CPUs={slots}, Gres=gpu:{gpus}, "
                         "select/cons_tres, sched_min_interval=0, batch_sched_delay=0")
        return self

    def marks(self):
        d = os.path.join(self.base, "marks")
        return d, d

    def submit(self, name, script, gpus=None):
        argv = ["sbatch", "-Q", "-J", name]
        if gpus:
            argv.append(f"--gres=gpu:{gpus}")
        return argv + ["--wrap", script]

    def busy(self):
        r = subprocess.run(["squeue", "-h", "-o", "%i"], env=self.env,
                           capture_output=True, text=True, check=True)
        return bool(r.stdout.strip())

    def outcome(self):
        r = subprocess.run(["scontrol", "show", "jobs", "-o"], env=self.env,
                           capture_output=True, text=True, check=True)
        ok = bad = 0
        for line in r.stdout.splitlines():
            if "JobState=COMPLETED" in line:
                ok += 1
            elif "JobState=" in line:
                bad += 1
        return ok, bad

    def stop(self):
        if self.base is None:
            return
        try:
            subprocess.run(["scancel", "--user=root"], env=self.env, capture_output=True, timeout=20)
            wait_until(lambda: not self.busy(), 30, "Slurm jobs to end", every=0.2)
        except Exception as e:
            log(f"slurm: while cancelling jobs: {e}")
        for p in reversed(self.procs):
            stop_process(p)
        self.procs = []
        for dev in self.made_devices:
            os.unlink(dev)
        self.made_devices = []
        common.discard(self.base)
        self.base = None


class Pueue:
    """pueued in the foreground with a private config (socket, state, logs);
    `pueue parallel N` slots in the default group."""
    family = "pueue"
    name = "pueue"

    def __init__(self):
        self.proc = None
        self.base = None

    def cli(self, *args):
        return [os.path.join(PUEUE_BIN, "pueue"), "-c", self.cfg, *args]

    def start(self, slots=64, gpus=0):
        self.base = b = tmpdir("pueue-bench-")
        for d in ("dir", "run", "marks"):
            os.makedirs(os.path.join(b, d))
        self.cfg = os.path.join(b, "pueue.yml")
        with open(self.cfg, "w") as f:
            f.write(f"shared:\n  pueue_directory: {b}/dir\n  runtime_directory: {b}/run\n"
                    f"  use_unix_socket: true\n  unix_socket_path: {b}/run/pueue.socket\n")
        self.env = dict(os.environ)
        self.cwd = b
        self.log = open(os.path.join(b, "pueued.log"), "w")
        self.proc = subprocess.Popen([os.path.join(PUEUE_BIN, "pueued"), "-c", self.cfg],
                                     stdout=self.log, stderr=self.log)
        wait_until(lambda: os.path.exists(f"{b}/run/pueue.socket"), 20, "pueued")
        slots = gpus or slots
        subprocess.run(self.cli("parallel", str(slots)), check=True, capture_output=True)
        version = subprocess.run([os.path.join(PUEUE_BIN, "pueue"), "--version"],
                                 capture_output=True, text=True).stdout.strip()
        self.describe = f"{version}, `pueue parallel {slots}`"
        return self

    def marks(self):
        d = os.path.join(self.base, "marks")
        return d, d

    def submit(self, name, script, gpus=None):
        # pueue has no notion of a task's size: every task takes one slot.
        return self.cli("add", "--label", name, "--", script)

    def tasks(self):
        r = subprocess.run(self.cli("status", "--json"), capture_output=True, check=True)
        return json.loads(r.stdout)["tasks"].values()

    def busy(self):
        return any("Done" not in t["status"] for t in self.tasks())

    def outcome(self):
        ok = bad = 0
        for t in self.tasks():
            done = t["status"].get("Done") if isinstance(t["status"], dict) else None
            if done and done.get("result") == "Success":
                ok += 1
            else:
                bad += 1
        return ok, bad

    def stop(self):
        if self.proc is None:
            return
        subprocess.run(self.cli("kill", "--all"), capture_output=True)
        subprocess.run(self.cli("shutdown"), capture_output=True)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            stop_process(self.proc)
        self.proc = None
        self.log.close()
        common.discard(self.base)


class Tsp:
    """task-spooler (Debian's `tsp`): a private socket and output folder,
    TS_SLOTS slots; `-N n` makes a job take n slots (it has no devices)."""
    family = "tsp"
    name = "task-spooler"

    def __init__(self):
        self.base = None

    def start(self, slots=64, gpus=0):
        self.base = b = tmpdir("tsp-bench-")
        os.makedirs(os.path.join(b, "out"))
        os.makedirs(os.path.join(b, "marks"))
        slots = gpus or slots
        self.env = dict(os.environ, TS_SOCKET=os.path.join(b, "socket"),
                        TMPDIR=os.path.join(b, "out"), TS_SLOTS=str(slots),
                        TS_MAXFINISHED="1000000", TS_MAXCONN="100000")
        self.cwd = b
        subprocess.run(["tsp", "-S", str(slots)], env=self.env, check=True)
        wait_until(lambda: os.path.exists(self.env["TS_SOCKET"]), 20, "the tsp server")
        version = subprocess.run(["tsp", "-V"], env=self.env, capture_output=True,
                                 text=True).stdout.strip().split(" - ")[0]
        self.describe = f"{version or 'tsp'} (Debian task-spooler), {slots} slots"
        return self

    def marks(self):
        d = os.path.join(self.base, "marks")
        return d, d

    def submit(self, name, script, gpus=None):
        argv = ["tsp", "-L", name]
        if gpus:
            argv += ["-N", str(gpus)]
        return argv + ["sh", "-c", script]

    def jobs(self):
        r = subprocess.run(["tsp", "-l"], env=self.env, capture_output=True, text=True, check=True)
        rows = []
        for line in r.stdout.splitlines()[1:]:
            parts = line.split()
            if len(parts) >= 2:
                rows.append(parts)
        return rows

    def busy(self):
        return any(p[1] != "finished" for p in self.jobs())

    def outcome(self):
        ok = bad = 0
        for p in self.jobs():
            if p[1] == "finished" and len(p) > 3 and p[3] == "0":
                ok += 1
            else:
                bad += 1
        return ok, bad

    def stop(self):
        if self.base is None:
            return
        subprocess.run(["tsp", "-K"], env=self.env, capture_output=True)
        time.sleep(0.2)
        common.discard(self.base)
        self.base = None


def all_systems(with_nosandbox=True):
    out = [KilnSystem(True)]
    if with_nosandbox:
        out.append(KilnSystem(False))
    return out + [Slurm(), Pueue(), Tsp()]
