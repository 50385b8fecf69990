#!/usr/bin/env python3
"""The server's footprint with a long history: a data folder holding N
finished jobs (made by the kiln-store example `fill_history`, through the
Store API: the same rows as N `kiln run -- true` jobs, without their log
folders), then an idle `kiln server` on it:

  - start-up time (launch to "listening"), RSS (VmRSS, VmHWM) and CPU use
    over an idle window;
  - `GET /api/v1/jobs` (the first page, 50 jobs, as the admin) with wrk:
    p50/p99 latency and requests/s, one connection and eight;
  - p50/p99 of other list queries over the same history, one keep-alive
    client, one request at a time (a filtered list, another user's empty
    list, /metrics).

The same with an empty history, for comparison.
Usage: bench/footprint.py   (BENCH_HISTORY: 100000, quick 10000;
BENCH_IDLE_S: 30, quick 5; BENCH_WRK_S: 20, quick 5)
"""
import http.client
import json
import os
import re
import shutil
import subprocess
import time

import common
from common import Kiln, KILN, log, pct, save, size

HISTORY = int(os.environ.get("BENCH_HISTORY", size(100_000, 10_000)))
IDLE_S = float(os.environ.get("BENCH_IDLE_S", size(30, 5)))
WRK_S = int(os.environ.get("BENCH_WRK_S", size(20, 5)))
QUERIES_N = size(200, 50)
FILL = os.path.join(common.ROOT, "target", "release", "examples", "fill_history")
TICK = os.sysconf("SC_CLK_TCK")


def proc_status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM", "Threads"):
                out[k] = int(v.split()[0])
    return out


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def wrk_run(k, conns, path="/api/v1/jobs"):
    lua = os.path.join(k.data, "auth.lua")
    with open(lua, "w") as f:
        f.write(f'wrk.headers["Authorization"] = "Bearer {k.token}"\n')
    r = subprocess.run(["wrk", "-t1", f"-c{conns}", f"-d{WRK_S}s", "--latency", "-s", lua,
                        k.url + path], capture_output=True, text=True, check=True)
    text = r.stdout
    unit = {"us": 1e-3, "ms": 1.0, "s": 1000.0}

    def lat(label):
        m = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
        return float(m.group(1)) * unit[m.group(2)] if m else None
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    return {"connections": conns, "p50_ms": lat("50"), "p90_ms": lat("90"), "p99_ms": lat("99"),
            "rps": float(rps.group(1)) if rps else None,
            "non_2xx": int(non2xx.group(1)) if non2xx else 0}


def timed(k, path, token=None):
    k.api("GET", path, token=token, raw=True)
    xs = []
    for _ in range(QUERIES_N):
        t0 = time.perf_counter()
        k.api("GET", path, token=token, raw=True)
        xs.append((time.perf_counter() - t0) * 1000)
    return {"p50_ms": pct(xs, 50), "p99_ms": pct(xs, 99)}


def measure(history):
    data = common.tmpdir("kiln-footprint-")
    try:
        # First start: the admin, its token, the schema. Then the history.
        with Kiln("--no-sandbox", data=data):
            pass
        fill_s = None
        if history:
            f0 = time.monotonic()
            subprocess.run([FILL, data, str(history)], check=True, stdout=subprocess.DEVNULL)
            fill_s = time.monotonic() - f0
        db_mib = sum(os.path.getsize(os.path.join(data, f)) for f in os.listdir(data)
                     if f.startswith("kiln.db")) / 2**20
        with Kiln(data=data) as k:
            startup = k.startup_s
            listed = k.api("GET", "/jobs?limit=1")
            assert history == 0 or listed["items"][0]["name"] == f"hist-{history - 1}", listed
            time.sleep(3)
            pid = k.proc.pid
            c0, w0 = cpu_seconds(pid), time.monotonic()
            time.sleep(IDLE_S)
            c1, w1_ = cpu_seconds(pid), time.monotonic()
            idle = proc_status(pid)
            w1 = wrk_run(k, 1)
            w8 = wrk_run(k, 8)
            after = proc_status(pid)
            # Another user, with no jobs of their own.
            bob = subprocess.run([KILN, "user", "add", "bob", "-o", "json"], env=k.env,
                                 capture_output=True, text=True, check=True)
            bob_token = json.loads(bob.stdout)["token"]
            queries = {
                "GET /jobs (50 newest)": timed(k, "/jobs"),
                "GET /jobs?limit=500": timed(k, "/jobs?limit=500"),
                "GET /jobs?state=RUNNING&limit=1": timed(k, "/jobs?state=RUNNING&limit=1"),
                "GET /jobs?name=hist-1": timed(k, "/jobs?name=hist-1"),
                "GET /jobs as a user with no jobs": timed(k, "/jobs", token=bob_token),
            }
            if history:
                queries["GET /jobs/{id} (one job)"] = timed(k, "/jobs/hist-0")
            # /metrics is outside /api/v1.
            c = http.client.HTTPConnection(k.host, k.port)
            xs = []
            for _ in range(QUERIES_N):
                q0 = time.perf_counter()
                c.request("GET", "/metrics", headers={"Authorization": f"Bearer {k.token}"})
                c.getresponse().read()
                xs.append((time.perf_counter() - q0) * 1000)
            c.close()
            queries["GET /metrics"] = {"p50_ms": pct(xs, 50), "p99_ms": pct(xs, 99)}
        return {"history": history, "fill_s": fill_s, "db_mib": db_mib, "startup_s": startup,
                "idle_cpu_share": (c1 - c0) / (w1_ - w0), "idle_window_s": w1_ - w0,
                "rss_idle_kib": idle["VmRSS"], "hwm_idle_kib": idle["VmHWM"],
                "threads": idle["Threads"], "rss_after_wrk_kib": after["VmRSS"],
                "wrk": [w1, w8], "queries": queries}
    finally:
        shutil.rmtree(data, ignore_errors=True)


def main():
    if not os.access(FILL, os.X_OK):
        raise SystemExit(f"{FILL} is missing: cargo build --release -p kiln-store --example fill_history")
    runs = []
    for history in (0, HISTORY):
        log(f"== footprint with {history} finished jobs")
        r = measure(history)
        log(f"   RSS {r['rss_idle_kib'] / 1024:.1f} MiB, idle CPU {r['idle_cpu_share'] * 100:.3f}%, "
            f"GET /jobs p99 {r['wrk'][0]['p99_ms']} ms (1 conn), {r['wrk'][1]['p99_ms']} ms (8)")
        runs.append(r)
    save("footprint", {"runs": runs, "wrk_s": WRK_S, "idle_s": IDLE_S})


if __name__ == "__main__":
    main()
