#!/usr/bin/env python3
"""Logs: what kiln's log capture costs a task that prints a lot, and how far
behind the task `kiln logs -f` shows its lines.

  flood    bench/logwriter.py prints SIZE bytes of 128-byte lines as fast as
           it can, run directly with its stdout on a file, and as a kiln job
           (`kiln run -d`, default sandbox; kiln's supervisor copies the
           task's pipe into stdout.log and the merged output.log). Wall time:
           direct, launching the writer to its exit; kiln, launching the CLI
           to the job being recorded finished (the API polled every 10 ms).
           Also the writer's own run time, which shows back-pressure.
  follow   `kiln logs -f` attached to a job: for each stamped line (the
           first of every 64 when flooding; every line when paced), the
           time it reached the reader minus the time in the line. Once while
           flooding SIZE bytes, once paced at RATE lines a second; the paced
           run is repeated with `tail -f` on a file written directly, as the
           floor.

Usage: bench/logs.py   (BENCH_LOG_BYTES: 1e9, quick 1e8; BENCH_LOG_REPS: 3,
quick 1; paced: 1000 lines/s for 10 s, quick 3 s)
"""
import os
import shutil
import subprocess
import sys
import threading
import time

import common
from common import Kiln, KILN, log, median, pct, save, size, wait_until

TOTAL = int(float(os.environ.get("BENCH_LOG_BYTES", size(1e9, 1e8))))
REPS = int(os.environ.get("BENCH_LOG_REPS", size(3, 1)))
RATE = 1000
PACED_S = size(10, 3)
WRITER = os.path.join(common.ROOT, "bench", "logwriter.py")
PY = sys.executable


def stamps(proc, on_line=None):
    """Reads proc's stdout to its end; returns (delays in ms of every
    stamped line, bytes read, monotonic time of the last byte)."""
    delays = []
    carry = b""
    n = 0
    last = None
    fd = proc.stdout.fileno()
    while True:
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            break
        now = time.time_ns()
        last = time.monotonic()
        n += len(chunk)
        buf = carry + chunk
        # Complete lines only; a stamp is "T<ns> " at a line's start.
        end = buf.rfind(b"\n") + 1
        pos = 0 if buf.startswith(b"T") else buf.find(b"\nT", 0, end)
        while 0 <= pos < end:
            i = pos if buf[pos:pos + 1] == b"T" else pos + 1
            sp = buf.find(b" ", i, i + 24)
            if sp > 0:
                delays.append((now - int(buf[i + 1:sp])) / 1e6)
            pos = buf.find(b"\nT", i, end)
        carry = buf[end:]
    return delays, n, last


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def summary(delays):
    return {"n": len(delays), "p50_ms": pct(delays, 50), "p99_ms": pct(delays, 99),
            "max_ms": max(delays) if delays else float("nan")}


def wait_finished(k, name):
    j = wait_until(lambda: (lambda j: j if j["state"] in common.FINAL else None)(k.job(name)),
                   3600, f"job {name}", every=0.01)
    return time.monotonic(), j


def follower(k, name):
    """`kiln logs -f` on the job's task, once it has one."""
    wait_until(lambda: k.job(name)["tasks"], 60, f"a task of {name}", every=0.002)
    return subprocess.Popen([KILN, "logs", "-f", name], env=k.env, stdout=subprocess.PIPE)


def main():
    res = {"bytes": TOTAL, "reps": REPS, "rate": RATE, "paced_s": PACED_S}
    host_dir = common.tmpdir("logs-bench-")
    with Kiln() as k:
        marks, inside = k.marks()
        # The task runs the writer from the user's space: the repository may
        # be under /tmp (a fresh clone), which a sandboxed task sees as its
        # own private /tmp.
        shutil.copy(WRITER, os.path.join(marks, "logwriter.py"))
        writer_inside = f"{inside}/logwriter.py"
        direct, kiln, ratios, w_direct, w_kiln, server = [], [], [], [], [], []
        for r in range(REPS):
            # Direct: the writer's stdout is a file.
            out = os.path.join(host_dir, "out.log")
            tf = os.path.join(host_dir, "time")
            with open(out, "wb") as f:
                t0 = time.monotonic()
                subprocess.run([PY, WRITER, str(TOTAL), "--time-file", tf], stdout=f, check=True)
                direct.append(time.monotonic() - t0)
            assert os.path.getsize(out) >= TOTAL
            os.unlink(out)
            w_direct.append(float(open(tf).read()))
            # Through kiln.
            name = f"flood{r}"
            t0 = time.monotonic()
            subprocess.run([KILN, "run", "-d", "--name", name, "--", PY, writer_inside, str(TOTAL),
                            "--time-file", f"{inside}/{name}.time"],
                           env=k.env, check=True, stdout=subprocess.DEVNULL)
            t1, j = wait_finished(k, name)
            assert j["state"] == "SUCCEEDED", j
            kiln.append(t1 - t0)
            server.append((j["finishedAtMs"] - j["startedAtMs"]) / 1000)
            w_kiln.append(float(open(f"{marks}/{name}.time").read()))
            ratios.append(kiln[-1] / direct[-1])
            log(f"   flood {r}: direct {direct[-1]:.2f} s, kiln {kiln[-1]:.2f} s "
                f"(writer's own {w_direct[-1]:.2f} / {w_kiln[-1]:.2f} s)")
            k.api("DELETE", f"/jobs/{name}")
        res["flood"] = {"direct_s": direct, "kiln_s": kiln, "ratios": ratios,
                        "ratio_median": median(ratios), "writer_direct_s": w_direct,
                        "writer_kiln_s": w_kiln, "server_run_s": server}

        # Following a flood.
        name = "flood-follow"
        t0 = time.monotonic()
        subprocess.run([KILN, "run", "-d", "--name", name, "--", PY, writer_inside, str(TOTAL),
                        "--time-file", f"{inside}/{name}.time"],
                       env=k.env, check=True, stdout=subprocess.DEVNULL)
        f = follower(k, name)
        delays, got, last = stamps(f)
        f.wait()
        t1, j = wait_finished(k, name)
        res["follow_flood"] = dict(summary(delays), bytes=got,
                                   writer_s=float(open(f"{marks}/{name}.time").read()),
                                   job_s=t1 - t0, last_byte_after_s=last - t0)
        log(f"   follow (flood): p50 {pct(delays, 50):.1f} ms, p99 {pct(delays, 99):.1f} ms, "
            f"{got} bytes")
        k.api("DELETE", f"/jobs/{name}")

        # A paced writer, not followed, then followed (with the server's own
        # CPU time over each), and the same with tail -f on a file.
        paced = str(RATE * PACED_S * 128)
        name = "paced-alone"
        c0, w0 = cpu_seconds(k.proc.pid), time.monotonic()
        subprocess.run([KILN, "run", "-d", "--name", name, "--", PY, writer_inside, paced,
                        "--rate", str(RATE)], env=k.env, check=True, stdout=subprocess.DEVNULL)
        wait_until(lambda: k.job(name)["state"] in common.FINAL, 600, name, every=0.5)
        alone = (cpu_seconds(k.proc.pid) - c0) / (time.monotonic() - w0)
        name = "paced-follow"
        c0, w0 = cpu_seconds(k.proc.pid), time.monotonic()
        subprocess.run([KILN, "run", "-d", "--name", name, "--", PY, writer_inside, paced,
                        "--rate", str(RATE)], env=k.env, check=True, stdout=subprocess.DEVNULL)
        f = follower(k, name)
        delays, got, _ = stamps(f)
        f.wait()
        followed = (cpu_seconds(k.proc.pid) - c0) / (time.monotonic() - w0)
        res["follow_paced"] = summary(delays)
        res["server_cpu_paced"] = {"alone": alone, "followed": followed}
        log(f"   server CPU over the paced task: {alone:.1%} alone, {followed:.1%} followed")
        log(f"   follow (paced): p50 {pct(delays, 50):.2f} ms, p99 {pct(delays, 99):.2f} ms")
        out = os.path.join(host_dir, "paced.log")
        open(out, "wb").close()
        tail = subprocess.Popen(["tail", "-n", "+1", "-f", out], stdout=subprocess.PIPE)
        with open(out, "wb") as fo:
            w = subprocess.Popen([PY, WRITER, paced, "--rate", str(RATE)], stdout=fo)
            box = {}
            th = threading.Thread(target=lambda: box.update(r=stamps(tail)))
            th.start()
            w.wait()
        # tail -f never ends on its own: give it a moment to pass the last lines.
        time.sleep(1.5)
        tail.terminate()
        th.join()
        tail.wait()
        res["tail_paced"] = summary(box["r"][0])
        log(f"   tail -f (paced): p50 {res['tail_paced']['p50_ms']:.2f} ms")
        res["sandboxed"] = k.sandboxed
    shutil.rmtree(host_dir, ignore_errors=True)
    save("logs", res)


if __name__ == "__main__":
    main()
