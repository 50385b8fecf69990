#!/usr/bin/env python3
"""What watching jobs costs the server: start N long tasks that each print a
training-metric line every second, then read the server's own CPU time
(/proc/<pid>/stat) over a window while it samples them (CPU and memory from
/proc, the new log lines parsed, series saved). Run once with the sampler on
its default beat and once with it effectively off, for the difference.
Usage: bench/sampling.py [N] [WINDOW_SECS] [path/to/kiln] [extra server args...]
"""
import json, os, subprocess, sys, tempfile, time, urllib.request

N = int(sys.argv[1]) if len(sys.argv) > 1 else 50
WINDOW = float(sys.argv[2]) if len(sys.argv) > 2 else 60
KILN = sys.argv[3] if len(sys.argv) > 3 else "target/release/kiln"
EXTRA = sys.argv[4:]
TICK = os.sysconf("SC_CLK_TCK")


def call(url, token, method, path, body=None):
    req = urllib.request.Request(f"{url}/api/v1{path}", data=body, method=method,
                                 headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req) as r:
        return json.loads(r.read() or b"null")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def run(sample_every):
    data = tempfile.mkdtemp(prefix="kiln-bench-")
    srv = subprocess.Popen([KILN, "server", "--data", data, "--listen", "127.0.0.1:0",
                            "--cpus", str(N), "--memory", f"{N}Gi", "--stop-grace", "1",
                            "--sample-every", str(sample_every), *EXTRA],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    url = srv.stdout.readline().strip().removeprefix("kiln listening on ")
    token = open(os.path.join(data, "admin.token")).read().strip()
    try:
        job = ("name: t{i}\ncommand: |\n  i=0\n  while :; do i=$((i+1)); "
               "echo \"step=$i loss=0.$RANDOM accuracy=0.$RANDOM\"; sleep 1; done\n")
        for i in range(N):
            call(url, token, "POST", "/jobs", job.format(i=i).encode())
        deadline = time.monotonic() + 120
        while call(url, token, "GET", f"/jobs?state=RUNNING&limit={N}")["items"].__len__() < N:
            assert time.monotonic() < deadline, "tasks did not all start"
            time.sleep(0.2)
        time.sleep(2 * min(sample_every, 10))  # the first rounds read from the start
        c0, t0 = cpu_seconds(srv.pid), time.monotonic()
        time.sleep(WINDOW)
        c1, t1 = cpu_seconds(srv.pid), time.monotonic()
        # Proof the sampler did its work: a series of the last job.
        series = call(url, token, "GET", f"/jobs/t{N - 1}/metrics?last=true")["series"]
        names = sorted({s["name"] for s in series})
        for i in range(N):
            call(url, token, "POST", f"/jobs/t{i}/stop")
    finally:
        srv.terminate()
        srv.wait()
        subprocess.run(["pkill", "-f", data])
    return (c1 - c0) / (t1 - t0), names


def main():
    for every in (5, 1, 3600):
        share, names = run(every)
        print(f"{N} tasks, --sample-every {every}: server CPU {share * 100:.2f}% of one core "
              f"over {WINDOW:.0f} s; series: {', '.join(names)}")


if __name__ == "__main__":
    main()
