#!/usr/bin/env python3
"""The Rust-side numbers: criterion benches of kiln-sched (one scheduling
pass, 10 -> 10k nodes x 10 -> 100k waiting jobs) and kiln-spec (parse,
render, decide), and the hostile-input property tests run long.

Criterion writes its estimates to a private CRITERION_HOME, read back here
(the median of each benchmark).
Usage: bench/cargo_benches.py [sched] [spec] [robustness]   (default: all)
Quick: shorter criterion windows, 10,000 property cases instead of 1,000,000.
"""
import json
import os
import shutil
import subprocess
import sys
import time

import common
from common import log, save, size

WARM = size("1", "0.3")
MEASURE = size("3", "0.5")
CASES = int(os.environ.get("BENCH_PROPTEST_CASES", size(1_000_000, 10_000)))


def criterion(package, bench):
    home = common.tmpdir("criterion-")
    try:
        cmd = ["cargo", "bench", "--locked", "-p", package, "--bench", bench, "--",
               "--warm-up-time", WARM, "--measurement-time", MEASURE]
        log("   " + " ".join(cmd))
        t0 = time.monotonic()
        r = subprocess.run(cmd, cwd=common.ROOT, capture_output=True, text=True,
                           env=dict(os.environ, CRITERION_HOME=home))
        if r.returncode != 0:
            log(r.stdout[-3000:], r.stderr[-3000:])
            raise SystemExit(f"{' '.join(cmd)} failed")
        took = time.monotonic() - t0
        out = {}
        for group in sorted(os.listdir(home)):
            gdir = os.path.join(home, group)
            if not os.path.isdir(gdir) or group == "report":
                continue
            for bid in sorted(os.listdir(gdir)):
                est = os.path.join(gdir, bid, "new", "estimates.json")
                if os.path.exists(est):
                    with open(est) as f:
                        e = json.load(f)
                    out[f"{group}/{bid}"] = {
                        "median_ns": e["median"]["point_estimate"],
                        "lower_ns": e["median"]["confidence_interval"]["lower_bound"],
                        "upper_ns": e["median"]["confidence_interval"]["upper_bound"],
                    }
        return {"command": " ".join(cmd), "took_s": took, "benches": out}
    finally:
        shutil.rmtree(home, ignore_errors=True)


def robustness():
    cmd = ["cargo", "test", "--locked", "--release", "-p", "kiln-spec", "--test", "hostile_input"]
    # Build first, so the time below is the run's own.
    subprocess.run(cmd + ["--no-run"], cwd=common.ROOT, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.monotonic()
    r = subprocess.run(cmd, cwd=common.ROOT, capture_output=True, text=True,
                       env=dict(os.environ, PROPTEST_CASES=str(CASES)))
    took = time.monotonic() - t0
    passed = failed = 0
    for line in r.stdout.splitlines():
        if line.startswith("test result:"):
            words = line.replace(";", "").split()
            passed += int(words[words.index("passed") - 1])
            failed += int(words[words.index("failed") - 1])
    if r.returncode != 0:
        log(r.stdout[-3000:], r.stderr[-3000:])
    return {"command": f"PROPTEST_CASES={CASES} " + " ".join(cmd), "cases": CASES,
            "took_s": took, "passed": passed, "failed": failed, "ok": r.returncode == 0}


def main():
    parts = sys.argv[1:] or ["sched", "spec", "robustness"]
    if "sched" in parts:
        log("== kiln-sched: one scheduling pass")
        save("sched", criterion("kiln-sched", "pass"))
    if "spec" in parts:
        log("== kiln-spec: parse, render, decide")
        save("spec", criterion("kiln-spec", "spec"))
    if "robustness" in parts:
        log(f"== kiln-spec: hostile input, {CASES} cases per property")
        r = robustness()
        save("robustness", r)
        if not r["ok"]:
            raise SystemExit("the hostile-input tests failed")


if __name__ == "__main__":
    main()
