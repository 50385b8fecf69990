#!/usr/bin/env python3
"""Throughput of kiln for trivial jobs: submit N jobs through the API as fast
as one client can, then wait until every one has finished.
Usage: bench/throughput.py [N] [path/to/kiln] [extra server args...]
"""
import json, os, subprocess, sys, tempfile, time, urllib.request

N = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
KILN = sys.argv[2] if len(sys.argv) > 2 else "target/release/kiln"
EXTRA = sys.argv[3:]


def call(url, token, method, path, body=None):
    req = urllib.request.Request(f"{url}/api/v1{path}", data=body, method=method,
                                 headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req) as r:
        return json.loads(r.read() or b"null")


def main():
    data = tempfile.mkdtemp(prefix="kiln-bench-")
    srv = subprocess.Popen([KILN, "server", "--data", data, "--listen", "127.0.0.1:0", *EXTRA],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    url = srv.stdout.readline().strip().removeprefix("kiln listening on ")
    token = open(os.path.join(data, "admin.token")).read().strip()
    try:
        t0 = time.monotonic()
        for i in range(N):
            call(url, token, "POST", "/jobs", f"name: j{i}\ncommand: 'true'\n".encode())
        t_sub = time.monotonic() - t0
        while True:
            waiting = call(url, token, "GET", "/jobs?state=WAITING&limit=1")["items"]
            running = call(url, token, "GET", "/jobs?state=RUNNING&limit=1")["items"]
            if not waiting and not running:
                break
            time.sleep(0.05)
        total = time.monotonic() - t0
        failed = call(url, token, "GET", "/jobs?state=FAILED&limit=5")["items"]
    finally:
        srv.terminate()
        srv.wait()
    print(f"{N} trivial jobs: submitted in {t_sub:.2f} s ({N / t_sub:.0f}/s), "
          f"all finished after {total:.2f} s: {N / total:.0f} jobs/s; failed: {len(failed)}")


if __name__ == "__main__":
    main()
