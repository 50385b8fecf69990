#!/usr/bin/env python3
"""Submit -> running latency of kiln for a trivial job, on an idle server.

Starts `kiln server` (release build) on a free port with a fresh data folder,
then submits N trivial jobs one at a time and measures, per job:
  api:     HTTP POST /api/v1/jobs sent -> the task's process has started
           (the task writes its own start time with `date +%s%N`)
  cli:     `kiln submit` launched -> the task's process has started
  server:  startedAtMs - submittedAtMs as the server recorded them
Prints p50/p99 of each. Usage: bench/submit_latency.py [N] [path/to/kiln] [--no-sandbox]
(with bubblewrap installed, tasks run sandboxed unless --no-sandbox is given;
the task then writes its time into the user's space, /mnt inside it).
"""
import json, os, shutil, statistics, subprocess, sys, tempfile, time, urllib.request

N = int(sys.argv[1]) if len(sys.argv) > 1 else 100
KILN = sys.argv[2] if len(sys.argv) > 2 else "target/release/kiln"
EXTRA = sys.argv[3:]
SANDBOXED = shutil.which("bwrap") is not None and "--no-sandbox" not in EXTRA


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def wait_for(path, timeout=30):
    end = time.monotonic() + timeout
    while not os.path.exists(path) or os.path.getsize(path) == 0:
        if time.monotonic() > end:
            raise SystemExit(f"timed out waiting for {path}")
        time.sleep(0.0002)
    with open(path) as f:
        return int(f.read().strip())


def main():
    data = tempfile.mkdtemp(prefix="kiln-bench-")
    if SANDBOXED:
        # Tasks see the admin's space at /mnt; the host sees it here.
        marks = os.path.join(data, "spaces", "admin", "marks")
        task_marks = "/mnt/marks"
    else:
        marks = tempfile.mkdtemp(prefix="kiln-marks-")
        task_marks = marks
    os.makedirs(marks, exist_ok=True)
    srv = subprocess.Popen(
        [KILN, "server", "--data", data, "--listen", "127.0.0.1:0", *EXTRA],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    url = srv.stdout.readline().strip().removeprefix("kiln listening on ")
    token = open(os.path.join(data, "admin.token")).read().strip()
    env = dict(os.environ, KILN_URL=url, KILN_DATA=data)
    res = {"api": [], "cli": [], "server": []}
    try:
        for i in range(N):
            for how in ("api", "cli"):
                name = f"{how}{i}"
                mark = os.path.join(marks, name)
                spec = f"name: {name}\ncommand: 'date +%s%N > {task_marks}/{name}'\n"
                if how == "api":
                    req = urllib.request.Request(
                        f"{url}/api/v1/jobs", data=spec.encode(), method="POST",
                        headers={"Authorization": f"Bearer {token}"})
                    t0 = time.time_ns()
                    urllib.request.urlopen(req).read()
                else:
                    path = os.path.join(marks, name + ".yaml")
                    with open(path, "w") as f:
                        f.write(spec)
                    t0 = time.time_ns()
                    subprocess.run([KILN, "submit", path], env=env, check=True,
                                   stdout=subprocess.DEVNULL)
                started = wait_for(mark)
                res[how].append((started - t0) / 1e6)
                subprocess.run([KILN, "wait", name], env=env, check=True,
                               stdout=subprocess.DEVNULL)
                job = json.loads(subprocess.run(
                    [KILN, "show", name, "-o", "json"], env=env, check=True,
                    capture_output=True).stdout)
                res["server"].append(job["startedAtMs"] - job["submittedAtMs"])
    finally:
        srv.terminate()
        srv.wait()
    print(f"kiln submit -> running, {N} trivial jobs each way, idle server, "
          f"{'sandboxed (bwrap)' if SANDBOXED else 'no sandbox'}")
    print(f"{'measure':<8} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8}")
    for k, xs in res.items():
        print(f"{k:<8} {pct(xs, 50):8.2f} {pct(xs, 99):8.2f} {statistics.mean(xs):8.2f}")


if __name__ == "__main__":
    main()
