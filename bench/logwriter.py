#!/usr/bin/env python3
"""A task that prints lines: TOTAL bytes of 128-byte lines as fast as it can
(writes of 64 lines, 8 KiB, as a stdio-buffered program does), or, with
--rate N, N lines a second. The first line of every write starts with the
wall clock in ns (`T<ns>`), so a reader can tell how far behind it is.
At the end it writes its own run time in seconds to --time-file, if given.

Usage: logwriter.py TOTAL_BYTES [--rate LINES_PER_S] [--time-file PATH]
"""
import argparse
import os
import sys
import time

LINE = 128
PER_WRITE = 64


def main():
    p = argparse.ArgumentParser()
    p.add_argument("total", type=int)
    p.add_argument("--rate", type=float)
    p.add_argument("--time-file")
    a = p.parse_args()
    fd = sys.stdout.fileno()
    filler = (b"x" * (LINE - 1) + b"\n") * (PER_WRITE - 1)
    t0 = time.monotonic()
    written = 0
    if a.rate:
        # One stamped line per write, paced.
        gap = 1 / a.rate
        nxt = time.monotonic()
        while written < a.total:
            stamp = b"T%d " % time.time_ns()
            line = stamp + b"y" * (LINE - 1 - len(stamp)) + b"\n"
            os.write(fd, line)
            written += len(line)
            nxt += gap
            d = nxt - time.monotonic()
            if d > 0:
                time.sleep(d)
    else:
        while written < a.total:
            stamp = b"T%d " % time.time_ns()
            chunk = stamp + b"y" * (LINE - 1 - len(stamp)) + b"\n" + filler
            n = len(chunk)
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view):]
            written += n
    elapsed = time.monotonic() - t0
    if a.time_file:
        with open(a.time_file, "w") as f:
            f.write(f"{elapsed}\n")


if __name__ == "__main__":
    main()
