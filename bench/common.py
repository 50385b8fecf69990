"""Shared pieces of the benchmark scripts: sizes (full or BENCH_QUICK=1),
results files, percentiles, and a kiln server on a fresh data folder.

Every script writes what it measured to bench/results/<name>.json (or
$BENCH_RESULTS); bench/report.py turns those files into the tables of
docs/benchmarks.md. Nothing here is a hard-coded result.
"""
import http.client
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICK = os.environ.get("BENCH_QUICK", "") not in ("", "0")
RESULTS = os.environ.get("BENCH_RESULTS", os.path.join(ROOT, "bench", "results"))
KILN = os.environ.get("KILN_BIN", os.path.join(ROOT, "target", "release", "kiln"))
CACHE = os.environ.get(
    "BENCH_CACHE",
    os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "kiln", "bench"))
TORCH_PY = os.environ.get(
    "BENCH_TORCH_PYTHON",
    os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")),
                 "kiln", "venv-torch", "bin", "python"))
# Every temporary folder of a run lives under one parent, removed at the end.
TMP_PARENT = os.environ.get("BENCH_TMP") or None


def size(full, quick):
    """A size for the full run, or the smaller one under BENCH_QUICK=1."""
    return quick if QUICK else full


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def tmpdir(prefix):
    return tempfile.mkdtemp(prefix=prefix, dir=TMP_PARENT)


def discard(path):
    """Drops a folder of many small files that a run is done with. Within
    `bench/run` it is left for the run's own cleanup at the end: this
    machine's ext4 has no journal, and such a file system will not reuse an
    inode freed in the last minutes; it scans past every one of them on each
    new file, so thousands of files deleted between two steps would slow the
    file creation of whatever system the next step measures."""
    if TMP_PARENT and os.path.abspath(path).startswith(os.path.abspath(TMP_PARENT) + os.sep):
        return
    shutil.rmtree(path, ignore_errors=True)


def pct(xs, p):
    """The p-th percentile, nearest rank on the sorted sample."""
    xs = sorted(xs)
    if not xs:
        return float("nan")
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def median(xs):
    xs = sorted(xs)
    n = len(xs)
    if n == 0:
        return float("nan")
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def machine():
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_kb = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    os_name = ""
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    os_name = line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "os": os_name,
        "cgroup": "v2" if os.path.exists("/sys/fs/cgroup/cgroup.controllers") else "v1",
    }


def save(name, data):
    os.makedirs(RESULTS, exist_ok=True)
    data = dict(data)
    data["_meta"] = {
        "quick": QUICK,
        "at": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "machine": machine(),
        "loadavg_at_save": open("/proc/loadavg").read().split()[:3],
    }
    path = os.path.join(RESULTS, f"{name}.json")
    with open(path + ".tmp", "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.write("\n")
    os.replace(path + ".tmp", path)
    log(f"wrote {path}")


def load(name):
    path = os.path.join(RESULTS, f"{name}.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def wait_until(cond, timeout, what, every=0.005):
    end = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > end:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


def read_mark(path):
    """The integer a task wrote to path, once it is complete (a newline)."""
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        return None
    if not text.endswith("\n"):
        return None
    return text


def stop_process(p, timeout=20):
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


FINAL = ("SUCCEEDED", "FAILED", "STOPPED")


class Kiln:
    """A release `kiln server` on a free port with a fresh data folder (or a
    given one), and a keep-alive HTTP client for its API."""

    def __init__(self, *args, data=None, keep_data=False):
        self.own_data = data is None
        self.data = data or tmpdir("kiln-bench-")
        self.keep_data = keep_data
        self.args = list(args)
        self.sandboxed = shutil.which("bwrap") is not None and "--no-sandbox" not in self.args
        self.proc = None
        self.conn = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def start(self):
        self.stderr = open(os.path.join(tempfile.gettempdir() if TMP_PARENT is None else TMP_PARENT,
                                        f"kiln-server-{os.getpid()}-{time.time_ns()}.log"), "w")
        self.t_start = time.monotonic()
        self.proc = subprocess.Popen(
            [KILN, "server", "--data", self.data, "--listen", "127.0.0.1:0", *self.args],
            stdout=subprocess.PIPE, stderr=self.stderr, text=True)
        line = self.proc.stdout.readline().strip()
        if not line.startswith("kiln listening on "):
            self.proc.wait()
            raise RuntimeError(f"kiln server did not start: {line!r}, see {self.stderr.name}")
        self.startup_s = time.monotonic() - self.t_start
        self.url = line.removeprefix("kiln listening on ")
        u = urllib.parse.urlparse(self.url)
        self.host, self.port = u.hostname, u.port
        with open(os.path.join(self.data, "admin.token")) as f:
            self.token = f.read().strip()
        self.env = dict(os.environ, KILN_URL=self.url, KILN_DATA=self.data, KILN_TOKEN=self.token)
        return self

    def marks(self):
        """(host path, path inside tasks) of a folder tasks can write to."""
        if self.sandboxed:
            host = os.path.join(self.data, "spaces", "admin", "marks")
            inside = "/mnt/marks"
            os.makedirs(host, exist_ok=True)
            return host, inside
        # Run as root, kiln runs tasks as their user's own uid, which may
        # not enter kiln's data folder nor a private temporary parent: a
        # folder of their own, in a parent they may pass through.
        if TMP_PARENT:
            os.chmod(TMP_PARENT, 0o711)
        host = tmpdir("kiln-marks-")
        os.chmod(host, 0o1777)
        return host, host

    def api(self, method, path, body=None, token=None, raw=False):
        for attempt in range(2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
            try:
                self.conn.request(method, "/api/v1" + path, body=body, headers={
                    "Authorization": f"Bearer {token or self.token}"})
                r = self.conn.getresponse()
                data = r.read()
                break
            except (http.client.HTTPException, ConnectionError):
                self.conn.close()
                self.conn = None
                if attempt:
                    raise
        if r.status >= 400:
            raise RuntimeError(f"{method} {path}: {r.status} {data[:300]!r}")
        if raw:
            return data
        return json.loads(data or b"null")

    def count(self, state):
        """How many jobs are in a state (pages through the list)."""
        n, before = 0, None
        while True:
            q = f"/jobs?state={state}&limit=500" + (f"&before={before}" if before else "")
            page = self.api("GET", q)
            n += len(page["items"])
            before = page.get("next")
            if not before:
                return n

    def busy(self):
        return any(self.api("GET", f"/jobs?state={s}&limit=1")["items"]
                   for s in ("WAITING", "RUNNING", "STOPPING"))

    def job(self, name):
        return self.api("GET", f"/jobs/{urllib.parse.quote(name)}")

    def wait_job(self, name, timeout=120):
        return wait_until(lambda: (lambda j: j if j["state"] in FINAL else None)(self.job(name)),
                          timeout, f"job {name}", every=0.002)

    def stop(self):
        if self.proc is None:
            return
        # Nothing of ours may outlive the server: stop what still runs.
        try:
            for s in ("WAITING", "RUNNING"):
                for j in self.api("GET", f"/jobs?state={s}&limit=500")["items"]:
                    self.api("POST", f"/jobs/{urllib.parse.quote(j['id'])}/stop")
            wait_until(lambda: not self.busy(), 60, "jobs to stop", every=0.1)
        except Exception as e:  # the server may already be gone
            log(f"kiln: while stopping jobs: {e}")
        if self.conn:
            self.conn.close()
            self.conn = None
        stop_process(self.proc)
        self.proc = None
        self.stderr.close()
        os.unlink(self.stderr.name)
        if self.own_data and not self.keep_data:
            discard(self.data)
