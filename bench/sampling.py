#!/usr/bin/env python3
"""What watching jobs costs the server: start N long tasks that each print a
training-metric line every second, then read the server's own CPU time
(/proc/<pid>/stat) over a window while it samples them (CPU and memory from
/proc, the new log lines parsed, series saved). Run with the sampler on its
default beat, every second, and effectively off, for the difference.
Usage: bench/sampling.py [N] [WINDOW_SECS]   (default 50 tasks, 40 s; quick 10, 10 s)
Writes bench/results/sampling.json.
"""
import sys
import time

from common import Kiln, log, save, size, wait_until

N = int(sys.argv[1]) if len(sys.argv) > 1 else size(50, 10)
WINDOW = float(sys.argv[2]) if len(sys.argv) > 2 else size(40, 10)
TICK = __import__("os").sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def run(sample_every):
    with Kiln("--cpus", str(N), "--memory", f"{N}Gi", "--stop-grace", "1",
              "--sample-every", str(sample_every)) as k:
        job = ("name: t{i}\ncommand: |\n  i=0\n  while :; do i=$((i+1)); "
               "echo \"step=$i loss=0.$RANDOM accuracy=0.$RANDOM\"; sleep 1; done\n")
        for i in range(N):
            k.api("POST", "/jobs", job.format(i=i).encode())
        wait_until(lambda: len(k.api("GET", f"/jobs?state=RUNNING&limit={N}")["items"]) == N,
                   120, "every task to start", every=0.2)
        time.sleep(2 * min(sample_every, 10))  # the first rounds read from the start
        c0, t0 = cpu_seconds(k.proc.pid), time.monotonic()
        time.sleep(WINDOW)
        c1, t1 = cpu_seconds(k.proc.pid), time.monotonic()
        # Proof the sampler did its work: the series of the last job.
        series = k.api("GET", f"/jobs/t{N - 1}/metrics?last=true")["series"]
        names = sorted({s["name"] for s in series})
        sandboxed = k.sandboxed
        # Kiln.__exit__ stops the jobs and waits for them before the server.
    return {"sample_every_s": sample_every, "share": (c1 - c0) / (t1 - t0),
            "window_s": t1 - t0, "series": names, "sandboxed": sandboxed}


def main():
    runs = []
    for every in (5, 1, 3600):
        r = run(every)
        log(f"{N} tasks, --sample-every {every}: server CPU {r['share'] * 100:.2f}% of one core "
            f"over {r['window_s']:.0f} s; series: {', '.join(r['series'])}")
        runs.append(r)
    save("sampling", {"tasks": N, "window_s": WINDOW, "runs": runs})


if __name__ == "__main__":
    main()
