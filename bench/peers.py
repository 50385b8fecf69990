#!/usr/bin/env python3
"""kiln beside Slurm, pueue and task-spooler, each driven by its own CLI on
this machine (bench/systems.py starts and stops them):

  latency     submit -> the task's process has started, for a trivial job
              (`date +%s%N > FILE`), one at a time on an idle system; the
              clock is read just before the CLI process is launched.
              kiln also through its HTTP API (one keep-alive client), and
              the server's own startedAtMs - submittedAtMs.
  throughput  N trivial jobs (`true`) submitted one after another by the
              tool's CLI as fast as it returns, then the time until all
              have finished; every system has 64 slots (kiln --cpus 64).
              Also kiln through its API and Slurm as one job array.
  gpu         4 GPUs (kiln --fake-gpus 4; Slurm gres on fake /dev/nvidiaN;
              pueue and tsp: 4 slots) and jobs asking 1-4 GPUs each with
              short sleeps, the same seeded sequence for every system; each
              job records its start, end and CUDA_VISIBLE_DEVICES.

Usage: bench/peers.py [latency] [throughput] [gpu]   (default: all three)
Sizes: BENCH_LATENCY_N (200; quick 20), BENCH_THROUGHPUT_N (2000; quick 200),
BENCH_GPU_N (200; quick 30). BENCH_SYSTEMS=kiln,slurm,... picks systems.
Writes bench/results/peers_<part>.json.
"""
import os
import random
import subprocess
import sys
import time

import common
from common import log, pct, save, size, wait_until
import systems

LAT_N = int(os.environ.get("BENCH_LATENCY_N", size(200, 20)))
TP_N = int(os.environ.get("BENCH_THROUGHPUT_N", size(2000, 200)))
GPU_N = int(os.environ.get("BENCH_GPU_N", size(200, 30)))
GPUS = 4
SEED = 8


def chosen(with_nosandbox=True):
    only = os.environ.get("BENCH_SYSTEMS")
    out = systems.all_systems(with_nosandbox)
    if only:
        want = only.split(",")
        out = [s for s in out if s.family in want or s.name in want]
    return out


def run_cli(s, argv):
    subprocess.run(argv, env=s.env, cwd=s.cwd, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def mark_value(path):
    text = common.read_mark(path)
    return int(text.split()[0]) if text else None


def latency(s):
    """ms from just before the CLI launches to the task's first command."""
    host, inside = s.marks()
    cli, server, api = [], [], []
    for i in range(LAT_N):
        name = f"lat{i}"
        argv = s.submit(name, f"date +%s%N > {inside}/{name}")
        t0 = time.time_ns()
        run_cli(s, argv)
        started = wait_until(lambda: mark_value(f"{host}/{name}"), 120, f"{s.name} job {name}",
                             every=0.0005)
        cli.append((started - t0) / 1e6)
        if s.family == "kiln":
            j = s.k.wait_job(name)
            server.append(j["startedAtMs"] - j["submittedAtMs"])
        else:
            wait_until(lambda: not s.busy(), 120, "an idle system", every=0.01)
    if s.family == "kiln":
        # The same through the HTTP API: no CLI process, one connection.
        s.k.api("GET", "/jobs?limit=1")
        for i in range(LAT_N):
            name = f"api{i}"
            body = f"name: {name}\ncommand: 'date +%s%N > {inside}/{name}'\n".encode()
            t0 = time.time_ns()
            s.k.api("POST", "/jobs", body)
            started = wait_until(lambda: mark_value(f"{host}/{name}"), 120, f"job {name}",
                                 every=0.0005)
            api.append((started - t0) / 1e6)
            s.k.wait_job(name)
    ok, bad = s.outcome()
    out = {"cli_ms": cli, "ok": ok, "failed": bad}
    if server:
        out["server_ms"] = server
        out["api_ms"] = api
    return out


def throughput(s):
    t0 = time.monotonic()
    for i in range(TP_N):
        run_cli(s, s.submit(f"tp{i}", "true"))
    t_sub = time.monotonic() - t0
    wait_until(lambda: not s.busy(), 1800, "all jobs to finish", every=0.1)
    total = time.monotonic() - t0
    ok, bad = s.outcome()
    return {"n": TP_N, "submit_s": t_sub, "total_s": total, "ok": ok, "failed": bad}


def proc_cpu(pid):
    """(own, reaped children's) CPU seconds of a process."""
    with open(f"/proc/{pid}/stat") as f:
        x = [int(v) / os.sysconf("SC_CLK_TCK") for v in f.read().rsplit(")", 1)[1].split()[11:15]]
    return x[0] + x[1], x[2] + x[3]


def machine_busy():
    with open("/proc/stat") as f:
        x = [int(v) for v in f.readline().split()[1:]]
    return (sum(x) - x[3] - x[4]) / os.sysconf("SC_CLK_TCK")


def throughput_kiln_api(s):
    """Also where the CPU goes: the server's own time, and that of what it
    started and reaped (supervisors, bubblewrap, the tasks' shells)."""
    pid = s.k.proc.pid
    (own0, kids0), busy0 = proc_cpu(pid), machine_busy()
    t0 = time.monotonic()
    for i in range(TP_N):
        s.k.api("POST", "/jobs", f"name: tpa{i}\ncommand: 'true'\n".encode())
    t_sub = time.monotonic() - t0
    wait_until(lambda: not s.busy(), 1800, "all jobs to finish", every=0.1)
    total = time.monotonic() - t0
    (own1, kids1), busy1 = proc_cpu(pid), machine_busy()
    ok, bad = s.outcome()
    return {"n": TP_N, "submit_s": t_sub, "total_s": total, "ok": ok, "failed": bad,
            "cpu_ms_per_job": {"server": (own1 - own0) / TP_N * 1000,
                               "children": (kids1 - kids0) / TP_N * 1000,
                               "machine": (busy1 - busy0) / TP_N * 1000},
            "machine_busy_share": (busy1 - busy0) / total / os.cpu_count()}


def throughput_slurm_array(s):
    t0 = time.monotonic()
    subprocess.run(["sbatch", "-Q", f"--array=0-{TP_N - 1}", "--wrap", "true"],
                   env=s.env, cwd=s.cwd, check=True)
    t_sub = time.monotonic() - t0
    wait_until(lambda: not s.busy(), 1800, "all jobs to finish", every=0.1)
    total = time.monotonic() - t0
    ok, bad = s.outcome()
    return {"n": TP_N, "submit_s": t_sub, "total_s": total, "ok": ok, "failed": bad}


def gpu_sequence(n):
    rng = random.Random(SEED)
    return [(rng.randint(1, GPUS), round(rng.uniform(0.2, 1.0), 2)) for _ in range(n)]


def analyse_gpu(jobs, t0_ns, has_ids):
    """Makespan, occupancy, and two checks: at no moment do running jobs ask
    for more than GPUS GPUs (from their own start/end records), and, where
    the tool names devices, no device is held by two jobs at once."""
    ivs = [(j["start"], j["end"], j["gpus"], j["devices"]) for j in jobs]
    end = max(e for _, e, _, _ in ivs)
    makespan = (end - t0_ns) / 1e9
    points = sorted({t0_ns, end, *[s for s, *_ in ivs], *[e for _, e, *_ in ivs]})
    hist = {}
    peak = 0
    for a, b in zip(points, points[1:]):
        mid = (a + b) / 2
        busy = sum(g for s, e, g, _ in ivs if s <= mid < e)
        peak = max(peak, busy)
        hist[busy] = hist.get(busy, 0) + (b - a) / 1e9
    used = sum(g * (e - s) for s, e, g, _ in ivs) / 1e9
    # How long jobs waited, and how often a later job started before an
    # earlier one (a scheduler that keeps submission order never does,
    # unless it can prove the earlier one is not delayed). Jobs are in
    # submission order.
    # Jobs started in the same pass may run their first command in any
    # order within milliseconds: only a lead of more than 0.1 s counts.
    waits = [(j["start"] - j["submitted"]) / 1e9 for j in jobs]
    overtakes = sum(1 for a in range(len(jobs)) for b in range(a + 1, len(jobs))
                    if jobs[b]["start"] < jobs[a]["start"] - 100_000_000)
    # Hand-over: from the last end before a job's start to that start, for
    # jobs that started after some job had ended (what the system adds
    # between one job leaving the GPUs and the next one running).
    ends = sorted(e for _, e, _, _ in ivs)
    handovers = []
    for j in jobs:
        before = [e for e in ends if e <= j["start"]]
        if before and j["submitted"] < before[-1]:
            handovers.append((j["start"] - before[-1]) / 1e9)
    out = {
        "makespan_s": makespan,
        "gpu_seconds": used,
        "occupancy": used / (GPUS * makespan),
        "busy_hist_s": {str(k): v for k, v in sorted(hist.items())},
        "peak_demand": peak,
        "over_capacity_s": sum(v for k, v in hist.items() if k > GPUS),
        "wait_p50_s": pct(waits, 50),
        "wait_max_s": max(waits),
        "wait_max_4gpu_s": max((w for w, j in zip(waits, jobs) if j["gpus"] == GPUS), default=0),
        "overtakes": overtakes,
        "handover_p50_ms": pct(handovers, 50) * 1000,
    }
    if has_ids:
        wrong_count = sum(1 for _, _, g, d in ivs if len(d) != g)
        clashes = 0
        for i in range(len(ivs)):
            si, ei, _, di = ivs[i]
            for j in range(i + 1, len(ivs)):
                sj, ej, _, dj = ivs[j]
                if si < ej and sj < ei and set(di) & set(dj):
                    clashes += 1
        bad_ids = sum(1 for *_, d in ivs if any(x not in range(GPUS) for x in d))
        out.update(double_booked_pairs=clashes, wrong_device_count=wrong_count,
                   unknown_devices=bad_ids)
    return out


def gpu(s):
    seq = gpu_sequence(GPU_N)
    host, inside = s.marks()
    names, submitted = [], []
    t0 = time.time_ns()
    for i, (g, d) in enumerate(seq):
        name = f"gpu{i}"
        names.append(name)
        submitted.append(time.time_ns())
        script = (f"s=$(date +%s%N); sleep {d}; e=$(date +%s%N); "
                  f"echo \"$s $e ${{CUDA_VISIBLE_DEVICES-none}} ${{SLURM_JOB_GPUS-none}} "
                  f"${{PUEUE_WORKER_ID-none}}\" > {inside}/{name}")
        run_cli(s, s.submit(name, script, gpus=g))
    t_sub = (time.time_ns() - t0) / 1e9
    wait_until(lambda: all(common.read_mark(f"{host}/{n}") for n in names), 1800,
               "every GPU job to end", every=0.05)
    wait_until(lambda: not s.busy(), 120, "an idle system", every=0.05)
    jobs = []
    has_ids = s.family in ("kiln", "slurm")
    for (g, d), n, sub in zip(seq, names, submitted):
        start, end, cvd, sjg, worker = common.read_mark(f"{host}/{n}").split()
        devs = cvd
        if s.family == "slurm" and sjg != "none":
            devs = sjg  # global indices; CUDA_VISIBLE_DEVICES may be renumbered
        ids = [int(x) for x in devs.split(",") if x.strip().isdigit()] if has_ids else []
        jobs.append({"name": n, "gpus": g, "sleep": d, "submitted": sub,
                     "start": int(start), "end": int(end),
                     "cuda_visible_devices": cvd, "devices": ids, "worker": worker})
    ok, bad = s.outcome()
    res = analyse_gpu(jobs, t0, has_ids)
    if hasattr(s, "preempted"):
        res["preempted_attempts"], res["preempted_gpu_s"] = s.preempted(names)
    res.update(n=GPU_N, submit_s=t_sub, ok=ok, failed=bad,
               ideal_s=sum(g * d for g, d in seq) / GPUS, jobs=jobs, has_device_ids=has_ids)
    return res


def main():
    parts = sys.argv[1:] or ["latency", "throughput", "gpu"]
    for part in parts:
        results = {}
        for s in chosen():
            log(f"== {part}: {s.name}")
            gpus = GPUS if part == "gpu" else 0
            s.start(slots=64, gpus=gpus)
            try:
                describe = s.describe
                if part == "latency":
                    r = latency(s)
                    log(f"   p50 {pct(r['cli_ms'], 50):.1f} ms  p99 {pct(r['cli_ms'], 99):.1f} ms")
                elif part == "throughput":
                    r = throughput(s)
                    log(f"   {r['n'] / r['total_s']:.1f} jobs/s ({r['ok']} ok, {r['failed']} failed)")
                else:
                    r = gpu(s)
                    log(f"   makespan {r['makespan_s']:.1f} s, occupancy {r['occupancy']:.2f}, "
                        f"peak demand {r['peak_demand']}")
                r["describe"] = describe
                results[s.name] = r
            finally:
                s.stop()
            if part == "throughput" and s.family in ("kiln", "slurm") and s.name != "kiln --no-sandbox":
                extra = f"{s.name} (API)" if s.family == "kiln" else "Slurm (job array)"
                log(f"== {part}: {extra}")
                s.start(slots=64)
                try:
                    r = throughput_kiln_api(s) if s.family == "kiln" else throughput_slurm_array(s)
                    log(f"   {r['n'] / r['total_s']:.1f} jobs/s ({r['ok']} ok, {r['failed']} failed)")
                    r["describe"] = s.describe
                    results[extra] = r
                finally:
                    s.stop()
        params = {"latency": {"n": LAT_N}, "throughput": {"n": TP_N, "slots": 64},
                  "gpu": {"n": GPU_N, "gpus": GPUS, "seed": SEED,
                          "sleep_range_s": [0.2, 1.0]}}[part]
        save(f"peers_{part}", {"params": params, "systems": results})


if __name__ == "__main__":
    main()
