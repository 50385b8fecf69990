#!/usr/bin/env python3
"""What running a training job through kiln costs it: examples/mnist's
train.py on the same generated MNIST-format data with the same seed, run
directly and through `kiln run` (default sandbox, `--cpus 2`, the whole
machine, so the CPU limit is not what is measured), alternating, R times.

Wall time: direct, from launching the torch venv's python to its exit;
through kiln, two ways: from launching `kiln run --cpus 2 -- ...` (which
submits, waits, follows the log like srun and returns with the job) to its
exit, and from launching `kiln run -d ...` (submit and return) to the job's
finishedAtMs as the server recorded it (no log follower attached; the API is
polled twice a second to learn that it ended). All output goes to files.
Reported: the median of each and the median of the per-run ratios kiln /
direct (each kiln run against the direct run of the same round).

Usage: bench/mnist_overhead.py   (BENCH_MNIST_REPS: 5, quick 1;
BENCH_MNIST_TRAIN: training images, 6000, quick 640; epochs 2, quick 1)
"""
import os
import shutil
import subprocess
import time

import common
from common import Kiln, KILN, log, median, save, size

REPS = int(os.environ.get("BENCH_MNIST_REPS", size(5, 1)))
TRAIN = int(os.environ.get("BENCH_MNIST_TRAIN", size(6000, 640)))
TEST = size(1000, 200)
EPOCHS = size(2, 1)
PY = common.TORCH_PY


def prepare(parent):
    """parent/mnist/train.py and parent/data/MNIST/raw/* (train.py reads
    ../data relative to its folder)."""
    os.makedirs(os.path.join(parent, "mnist"))
    shutil.copy(os.path.join(common.ROOT, "examples", "mnist", "train.py"),
                os.path.join(parent, "mnist", "train.py"))
    subprocess.run(["python3", os.path.join(common.ROOT, "examples", "mnist", "make_mnist.py"),
                    os.path.join(parent, "data"), "--train", str(TRAIN), "--test", str(TEST)],
                   check=True, stdout=subprocess.DEVNULL)


def main():
    if not os.access(PY, os.X_OK):
        raise SystemExit(f"no torch python at {PY}: run scripts/test once, or set BENCH_TORCH_PYTHON")
    args = ["--epochs", str(EPOCHS), "--seed", "1"]
    direct, kiln, ratios, detached, ratios_d = [], [], [], [], []
    with Kiln() as k:
        # The same files in two places: a host folder for the direct runs
        # and the admin's space, which kiln's tasks see at /mnt.
        host = common.tmpdir("mnist-bench-")
        prepare(host)
        space = os.path.join(k.data, "spaces", "admin", "mnist-bench")
        if k.sandboxed:
            shutil.copytree(host, space)
            inside = "/mnt/mnist-bench/mnist"
        else:
            inside = os.path.join(host, "mnist")
        out = os.path.join(host, "out.txt")
        try:
            # One unmeasured run first: the first to load torch reads it from disk.
            subprocess.run([PY, "train.py", *args], cwd=os.path.join(host, "mnist"),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
            for r in range(REPS):
                order = ("direct", "kiln", "detached") if r % 2 == 0 else \
                    ("detached", "kiln", "direct")
                got = {}
                for how in order:
                    with open(out, "w") as f:
                        if how == "direct":
                            t0 = time.monotonic()
                            subprocess.run([PY, "train.py", *args], cwd=os.path.join(host, "mnist"),
                                           stdout=f, stderr=subprocess.STDOUT, check=True)
                        elif how == "kiln":
                            cmd = f"cd {inside} && exec {PY} train.py {' '.join(args)}"
                            t0 = time.monotonic()
                            subprocess.run([KILN, "run", "--name", f"mnist{r}", "--cpus", "2",
                                            "--memory", "8Gi", "--", "sh", "-c", cmd],
                                           env=k.env, stdout=f, stderr=subprocess.STDOUT, check=True)
                        else:
                            cmd = f"cd {inside} && exec {PY} train.py {' '.join(args)}"
                            name = f"mnist-d{r}"
                            w0 = time.time()
                            subprocess.run([KILN, "run", "-d", "--name", name, "--cpus", "2",
                                            "--memory", "8Gi", "--", "sh", "-c", cmd],
                                           env=k.env, stdout=subprocess.DEVNULL, check=True)
                            j = common.wait_until(
                                lambda: (lambda j: j if j["state"] in common.FINAL else None)(
                                    k.job(name)), 3600, name, every=0.5)
                            if j["state"] != "SUCCEEDED":
                                raise SystemExit(f"{name} {j['state']}: {j.get('reason')}")
                            f.write(k.api("GET", f"/jobs/{name}/tasks/main-0/logs",
                                          raw=True).decode())
                        got[how] = (j["finishedAtMs"] / 1000 - w0 if how == "detached"
                                    else time.monotonic() - t0)
                    with open(out) as f:
                        text = f.read()
                    if "Test set:" not in text:
                        raise SystemExit(f"{how} run printed no test result:\n{text[-2000:]}")
                direct.append(got["direct"])
                kiln.append(got["kiln"])
                detached.append(got["detached"])
                ratios.append(got["kiln"] / got["direct"])
                ratios_d.append(got["detached"] / got["direct"])
                log(f"   rep {r}: direct {got['direct']:.2f} s, kiln run {got['kiln']:.2f} s "
                    f"({ratios[-1]:.3f}), kiln run -d {got['detached']:.2f} s ({ratios_d[-1]:.3f})")
        finally:
            shutil.rmtree(host, ignore_errors=True)
        sandboxed = k.sandboxed
    save("mnist", {"reps": REPS, "train_images": TRAIN, "test_images": TEST, "epochs": EPOCHS,
                   "direct_s": direct, "kiln_s": kiln, "ratios": ratios,
                   "ratio_median": median(ratios), "detached_s": detached,
                   "ratios_detached": ratios_d, "ratio_detached_median": median(ratios_d),
                   "sandboxed": sandboxed,
                   "torch_python": PY})


if __name__ == "__main__":
    main()
