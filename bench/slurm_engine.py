#!/usr/bin/env python3
"""kiln's Slurm engine beside plain `sbatch`, on the same two-node cluster
(scripts/slurm-cluster: slurmctld, slurmd n1 and n2 on this machine).

  latency     submit -> the task's first command, for a trivial job
              (`date +%s%N > FILE`), one at a time on an idle cluster; the
              clock is read just before the CLI process is launched
              (`sbatch --wrap`, or `kiln run -d`).
  throughput  N trivial jobs (`true`) submitted one after another by the
              CLI, then the time until all have finished.

What kiln adds on top of Slurm is its launcher (the batch step, which
records the allocation), the engine's polling of that record, and one
`srun` step per task; Slurm 22.05 itself starts a batch job on its
controller's 1-second timer, which dominates both.

Sizes: BENCH_SLURM_LATENCY_N (40; quick 10), BENCH_SLURM_THROUGHPUT_N (100;
quick 20). Writes bench/results/slurm_engine.json.
"""
import os
import subprocess
import time

import common
from common import KILN, Kiln, log, save, size, tmpdir, wait_until

ROOT = common.ROOT
LAT_N = int(os.environ.get("BENCH_SLURM_LATENCY_N", size(40, 10)))
TP_N = int(os.environ.get("BENCH_SLURM_THROUGHPUT_N", size(100, 20)))


def cluster_up(base):
    out = subprocess.run(["bash", os.path.join(ROOT, "scripts", "slurm-cluster"), "up", base],
                         check=True, capture_output=True, text=True).stdout
    conf = os.path.join(base, "slurm.conf")
    assert "SLURM_CONF" in out, out
    return conf


def cluster_down(base):
    subprocess.run(["bash", os.path.join(ROOT, "scripts", "slurm-cluster"), "down", base],
                   capture_output=True, text=True)


def mark(path):
    text = common.read_mark(path)
    return int(text.split()[0]) if text else None


def squeue_empty(env):
    out = subprocess.run(["squeue", "-h", "-o", "%i"], env=env, capture_output=True, text=True)
    return out.returncode == 0 and not out.stdout.strip()


def sbatch_side(env, marks):
    lat = []
    for i in range(LAT_N):
        m = os.path.join(marks, f"s{i}")
        t0 = time.time_ns()
        subprocess.run(["sbatch", "--parsable", "--output=/dev/null", "--mem=64",
                        f"--wrap=date +%s%N > {m}"], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        started = wait_until(lambda: mark(m), 120, f"sbatch job {i}", every=0.001)
        lat.append((started - t0) / 1e6)
        wait_until(lambda: squeue_empty(env), 60, "an idle cluster", every=0.05)
    t0 = time.monotonic()
    for i in range(TP_N):
        subprocess.run(["sbatch", "--parsable", "--output=/dev/null", "--mem=64", "--wrap=true"],
                       env=env, check=True, stdout=subprocess.DEVNULL)
    t_sub = time.monotonic() - t0
    wait_until(lambda: squeue_empty(env), 1800, "the sbatch jobs to finish", every=0.1)
    return {"latency_ms": lat, "n": TP_N, "submit_s": t_sub, "total_s": time.monotonic() - t0}


def kiln_side(conf, base):
    shared = os.path.join(base, "shared")
    os.makedirs(shared, exist_ok=True)
    os.chmod(shared, 0o755)
    os.environ["SLURM_CONF"] = conf
    k = Kiln("--engine", "slurm", "--shared", shared, "--no-sandbox").start()
    try:
        host, inside = k.marks()
        lat = []
        for i in range(LAT_N):
            name = f"lat{i}"
            t0 = time.time_ns()
            subprocess.run([KILN, "run", "-d", "--name", name, "--", "sh", "-c",
                            f"date +%s%N > {inside}/{name}"], env=k.env, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            started = wait_until(lambda: mark(f"{host}/{name}"), 120, f"kiln job {name}",
                                 every=0.001)
            lat.append((started - t0) / 1e6)
            k.wait_job(name)
        t0 = time.monotonic()
        for i in range(TP_N):
            subprocess.run([KILN, "run", "-d", "--name", f"tp{i}", "--", "true"], env=k.env,
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        t_sub = time.monotonic() - t0
        wait_until(lambda: not k.busy(), 1800, "the kiln jobs to finish", every=0.1)
        total = time.monotonic() - t0
        return {"latency_ms": lat, "n": TP_N, "submit_s": t_sub, "total_s": total,
                "ok": k.count("SUCCEEDED"), "failed": k.count("FAILED") + k.count("STOPPED")}
    finally:
        k.stop()


def main():
    base = tmpdir("slurm-engine-bench-")
    conf = cluster_up(base)
    env = dict(os.environ, SLURM_CONF=conf)
    marks = os.path.join(base, "marks")
    os.makedirs(marks, exist_ok=True)
    try:
        log(f"slurm engine: {LAT_N} one at a time, then {TP_N} at once, plain sbatch")
        sb = sbatch_side(env, marks)
        log("slurm engine: the same through kiln server --engine slurm")
        kn = kiln_side(conf, base)
    finally:
        cluster_down(base)
    save("slurm_engine", {"sbatch": sb, "kiln": kn, "latency_n": LAT_N, "throughput_n": TP_N,
                          "cluster": "scripts/slurm-cluster: slurmctld + slurmd n1, n2 (22.05) "
                                     "on this machine, 8 CPUs and gpu:fake:2 each"})


if __name__ == "__main__":
    main()
