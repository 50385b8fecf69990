#!/usr/bin/env python3
"""Writes the tables of docs/benchmarks.md from bench/results/*.json.

Every generated part of the document sits between
`<!-- bench:NAME -->` and `<!-- /bench:NAME -->`; the text between them is
replaced, everything else is left as written. A section whose results file
is missing says so instead of keeping old numbers.
Usage: bench/report.py [path/to/benchmarks.md]
"""
import os
import re
import sys

import common
from common import load, median, pct

DOC = os.path.join(common.ROOT, "docs", "benchmarks.md")
PEERS = ["Slurm", "pueue", "task-spooler"]


def ms(x):
    if x is None or x != x:
        return "–"
    if x >= 1000:
        return f"{x / 1000:.2f} s"
    if x >= 100:
        return f"{x:.0f} ms"
    if x >= 10:
        return f"{x:.1f} ms"
    if x >= 1:
        return f"{x:.2f} ms"
    if x >= 0.001:
        return f"{x * 1000:.0f} µs" if x >= 0.01 else f"{x * 1000:.1f} µs"
    return f"{x * 1e6:.0f} ns"


def ns(x):
    return ms(x / 1e6)


def secs(x):
    return "–" if x is None else (f"{x:.2f} s" if x < 100 else f"{x:.0f} s")


def ratio(a, b):
    return "–" if not a or not b else (f"{a / b:.3f}" if 0.5 < a / b < 2 else f"{a / b:.2g}")


def table(head, rows):
    out = ["| " + " | ".join(head) + " |", "| " + " | ".join("---" for _ in head) + " |"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def missing(name):
    return f"_No results: bench/results/{name}.json is missing; run `bench/run`._"


def quick_note(d):
    return " (**BENCH_QUICK=1: small sizes, not the full run**)" if d["_meta"]["quick"] else ""


def load_note(d):
    return d["_meta"].get("loadavg_at_save", ["?"])[0]


# --- sections ---------------------------------------------------------------

ALL_STEPS = ["build", "sched", "spec", "robustness", "latency", "throughput", "gpu", "mnist",
             "logs", "footprint", "sampling", "slurm"]


def s_machine():
    run = load("run")
    lat = load("peers_latency")
    m = (run or lat or {}).get("_meta", {}).get("machine")
    if not m:
        return missing("run")
    text = (f"Machine: {m['cores']} cores ({m['cpu']}), {m['memory_gib']} GiB, {m['os']}, "
            f"Linux {m['kernel']}, cgroup {m['cgroup']}, no GPU.")
    invocations = (run or {}).get("invocations", [])
    for i, inv in enumerate(invocations):
        what = "every step" if len(inv["steps"]) == len(ALL_STEPS) else \
            "steps " + ", ".join(inv["steps"])
        text += (f" {'Run' if i == 0 else 'Then'}, from {inv['started']} at commit "
                 f"`{inv['commit']}`{' (with uncommitted changes)' if inv.get('dirty') else ''}: "
                 f"`bench/run` ({what}) took {inv['took_s'] / 60:.0f} min"
                 f"{'; ' + inv['note'] if inv.get('note') else ''}.")
    if run:
        text += quick_note(run)
    return text


def sys_row(d, name):
    return d["systems"].get(name) if d else None


def s_headline():
    lat, tp, gpu = load("peers_latency"), load("peers_throughput"), load("peers_gpu")
    if not (lat and tp and gpu):
        return missing("peers_latency / peers_throughput / peers_gpu")
    for d in (lat, tp, gpu):
        lacking = {"kiln", *PEERS} - set(d["systems"])
        if lacking:
            return f"_The headline needs every system; missing: {', '.join(sorted(lacking))}._"
    k_lat = lat["systems"]["kiln"]["cli_ms"]
    rows = []

    def lat_row(label, p):
        vals = {s: pct(v["cli_ms"], p) for s, v in lat["systems"].items()}
        return [label, ms(vals.get("kiln"))] + [ms(vals.get(s)) for s in PEERS] + \
               [ratio(vals.get("kiln"), vals.get(s)) for s in PEERS]
    rows.append(lat_row("submit → running, p50", 50))
    rows.append(lat_row("submit → running, p99", 99))
    rate = {s: v["n"] / v["total_s"] for s, v in tp["systems"].items()}
    mk = {s: v["makespan_s"] for s, v in gpu["systems"].items()}
    occ = {s: v["occupancy"] for s, v in gpu["systems"].items()}

    def row(label, vals, fmt):
        def f(s):
            v = vals.get(s)
            return "–" if v is None else fmt(v) + ("¹" if s == "pueue" and vals is not rate else "")
        return [label, f("kiln")] + [f(s) for s in PEERS] + \
            [ratio(vals.get("kiln"), vals.get(s)) + ("¹" if s == "pueue" and vals is not rate else "")
             for s in PEERS]
    rows.append(row("throughput, trivial jobs/s (CLI)", rate, lambda v: f"{v:.1f}"))
    rows.append(row("GPU queue makespan (lower is better)", mk, secs))
    rows.append(row("GPU occupancy over the makespan", occ, lambda v: f"{v:.0%}"))
    out = [table(["measure", "kiln", *PEERS, *[f"kiln / {s}" for s in PEERS]], rows), ""]
    out.append("¹ pueue cannot make a task take more than one slot: with 4 slots it ran up to "
               f"{gpu['systems']['pueue']['peak_demand']} GPUs' worth of jobs at once, so its "
               "makespan and occupancy are not comparable (see GPU queueing).")
    out.append("")
    # The targets of issue 8.
    slurm50 = pct(lat["systems"]["Slurm"]["cli_ms"], 50)
    pueue50 = pct(lat["systems"]["pueue"]["cli_ms"], 50)
    k50 = pct(k_lat, 50)
    tput = rate["kiln"] / rate["Slurm"]

    def met(ok):
        return "**met**" if ok else "**not met**"
    out.append("Targets:")
    out.append("")
    out.append(f"- submit → running p50 below 1/10 of Slurm's: {ms(k50)} vs {ms(slurm50)}, "
               f"{k50 / slurm50:.3f} of it: {met(k50 < slurm50 / 10)}.")
    out.append(f"- submit → running p50 not above pueue's: {ms(k50)} vs {ms(pueue50)}: "
               f"{met(k50 <= pueue50)}.")
    out.append(f"- throughput at least 5× Slurm's: {rate['kiln']:.0f} vs {rate['Slurm']:.1f} jobs/s, "
               f"{tput:.1f}×: {met(tput >= 5)}.")
    gs = gpu["systems"] if gpu else {}
    if "task-spooler" in gs:
        tsp = gs["task-spooler"]["occupancy"]
        for name in ("kiln", "kiln --no-sandbox"):
            if name in gs:
                occ = gs[name]["occupancy"]
                out.append(f"- GPU queue occupancy at least task-spooler's ({name}): "
                           f"{occ:.1%} vs {tsp:.1%}: {met(occ >= tsp)}.")
    sched = load("sched")
    if sched:
        cells = {k: v["median_ns"] for k, v in sched["benches"].items() if k.startswith("pass/")}
        k1 = [v for k, v in cells.items() if "-1000nodes-" in k]
        k10 = [v for k, v in cells.items() if "-10000nodes-" in k]
        if k1:
            out.append(f"- every scheduling pass of the matrix at 1k nodes under 100 ms: slowest "
                       f"{ns(max(k1))}: {met(max(k1) < 100e6)}.")
        if k10:
            out.append(f"- every scheduling pass of the matrix at 10k nodes under 1 s: slowest "
                       f"{ns(max(k10))}: {met(max(k10) < 1e9)}.")
    mn = load("mnist")
    if mn:
        out.append(f"- MNIST through kiln within 2% of running it directly (ratio ≤ 1.02): "
                   f"`kiln run -d`, log not followed, {mn['ratio_detached_median']:.3f}: "
                   f"{met(mn['ratio_detached_median'] <= 1.02)}; `kiln run`, log followed, "
                   f"{mn['ratio_median']:.3f}: {met(mn['ratio_median'] <= 1.02)}.")
    return "\n".join(out) + "\n\n" + ("Load average (1 min) when these were saved: " + ", ".join(
        f"{n} {load_note(d)}" for n, d in (("latency", lat), ("throughput", tp), ("GPU", gpu)))
        + "." + quick_note(lat))


def s_latency():
    lat = load("peers_latency")
    if not lat:
        return missing("peers_latency")
    rows = []
    for name, v in lat["systems"].items():
        xs = v["cli_ms"]
        rows.append([name, len(xs), ms(pct(xs, 50)), ms(pct(xs, 99)), ms(max(xs)),
                     f"{v['ok']} / {v['failed']}", v["describe"]])
    return (f"{lat['params']['n']} jobs per system{quick_note(lat)}.\n\n" +
            table(["system", "jobs", "p50", "p99", "max", "ok / failed", "set-up"], rows))


def s_kiln_latency():
    lat = load("peers_latency")
    if not lat:
        return missing("peers_latency")
    a = lat["systems"].get("kiln")
    b = lat["systems"].get("kiln --no-sandbox")
    if not a or not b:
        return "_kiln's own rows are missing from peers_latency.json._"
    rows = []
    for key, label in (("server_ms", "`server`: startedAtMs − submittedAtMs (the job is RUNNING)"),
                       ("api_ms", "`api`: HTTP POST sent → the task's own first command runs"),
                       ("cli_ms", "`cli`: `kiln run -d` launched → the task's own first command runs")):
        rows.append([label, ms(pct(a[key], 50)), ms(pct(a[key], 99)),
                     ms(pct(b[key], 50)), ms(pct(b[key], 99))])
    note = " (the server's clock has millisecond steps)"
    return table(["measure", "sandboxed p50", "p99", "no sandbox p50", "p99"], rows) + \
        f"\n\n{len(a['cli_ms'])} jobs each way{note}.{quick_note(lat)}"


def s_throughput():
    tp = load("peers_throughput")
    if not tp:
        return missing("peers_throughput")
    how = {"kiln": "`kiln run -d -- true`, one after another",
           "kiln --no-sandbox": "`kiln run -d -- true`, one after another",
           "kiln (API)": "`POST /api/v1/jobs` from one keep-alive client",
           "Slurm": "`sbatch --wrap true`, one after another",
           "Slurm (job array)": f"one `sbatch --array=0-{tp['params']['n'] - 1} --wrap true`",
           "pueue": "`pueue add -- true`, one after another",
           "task-spooler": "`tsp true`, one after another"}
    rows = []
    for name, v in tp["systems"].items():
        rate = "one command" if "array" in name else f"{v['n'] / v['submit_s']:.0f}/s"
        rows.append([name, how.get(name, ""), rate,
                     secs(v["total_s"]), f"**{v['n'] / v['total_s']:.1f}**",
                     f"{v['ok']} / {v['failed']}"])
    out = (f"{tp['params']['n']} jobs per system, 64 slots each{quick_note(tp)}.\n\n" +
           table(["system", "submitted with", "submission rate", "all finished after",
                  "jobs/s", "ok / failed"], rows))
    api = tp["systems"].get("kiln (API)", {})
    c = api.get("cpu_ms_per_job")
    if c:
        out += (f"\n\nWhere the CPU went in the `kiln (API)` run, per job: the server "
                f"{ms(c['server'])}, the processes it started (supervisor, bubblewrap, `bash`, "
                f"the task) {ms(c['children'])}, the whole machine (with the client) "
                f"{ms(c['machine'])}; both cores were {api['machine_busy_share']:.0%} busy.")
    return out


def s_gpu():
    g = load("peers_gpu")
    if not g:
        return missing("peers_gpu")
    p = g["params"]
    rows = []
    for name, v in g["systems"].items():
        if v["has_device_ids"]:
            check = ("none double-booked" if v["double_booked_pairs"] == 0 and
                     v["wrong_device_count"] == 0 and v["unknown_devices"] == 0 else
                     f"**{v['double_booked_pairs']} pairs double-booked, "
                     f"{v['wrong_device_count']} wrong counts**")
        else:
            check = "no device ids: not checkable"
        preempted = (f"{v['preempted_attempts']} ({v['preempted_gpu_s']:.0f} GPU-s)"
                     if "preempted_attempts" in v else "—")
        rows.append([name, secs(v["makespan_s"]), f"{v['occupancy']:.1%}",
                     f"{v['peak_demand']}" + (" ⚠" if v["peak_demand"] > p["gpus"] else ""),
                     check, secs(v["wait_p50_s"]), secs(v["wait_max_4gpu_s"]), v["overtakes"],
                     ms(v["handover_p50_ms"]), preempted, f"{v['ok']} / {v['failed']}"])
    first = next(iter(g["systems"].values()))
    out = [f"{p['n']} jobs, {p['gpus']} GPUs, each job asking 1–{p['gpus']} GPUs and sleeping "
           f"{p['sleep_range_s'][0]}–{p['sleep_range_s'][1]} s (seed {p['seed']}, the same sequence "
           f"for every system); {first['gpu_seconds']:.0f} GPU-seconds of work, so no schedule "
           f"can finish in less than {secs(first['ideal_s'])}{quick_note(g)}.", "",
           table(["system", "makespan", "occupancy", "peak GPUs in use",
                  "device check", "wait p50", "longest wait of a 4-GPU job",
                  "pairs overtaken", "hand-over p50",
                  "attempts preempted (work thrown away)", "ok / failed"], rows), "",
           "GPUs busy (the sum of what running jobs asked for), share of the makespan:", ""]
    hrows = []
    for name, v in g["systems"].items():
        h = {int(k): s for k, s in v["busy_hist_s"].items()}
        cols = [f"{h.get(lv, 0) / v['makespan_s']:.0%}" for lv in range(p["gpus"] + 1)]
        over = sum(s for lv, s in h.items() if lv > p["gpus"])
        cols.append(f"{over / v['makespan_s']:.0%}")
        hrows.append([name] + cols)
    out.append(table(["system"] + [str(i) for i in range(p["gpus"] + 1)] +
                     [f"more than {p['gpus']}"], hrows))
    return "\n".join(out)


# One pass of the same cases before issue 19 (commit 9fa57d0, release,
# this machine; `crates/kiln-sched/examples/pass_matrix.rs` timed once).
SCHED_BEFORE_MS = {
    "empty-1000nodes-10000jobs": 17.3,
    "empty-1000nodes-100000jobs": 62.7,
    "half-1000nodes-10000jobs": 100.7,
    "half-1000nodes-100000jobs": 777.2,
    "full-1000nodes-10000jobs": 168.7,
    "full-1000nodes-100000jobs": 1514.8,
    "empty-10000nodes-10000jobs": 1698.4,
    "empty-10000nodes-100000jobs": 1991.0,
    "half-10000nodes-10000jobs": 1129.5,
    "half-10000nodes-100000jobs": 7906.8,
    "full-10000nodes-10000jobs": 1649.9,
    "full-10000nodes-100000jobs": 15263.7,
}


def s_sched():
    d = load("sched")
    if not d:
        return missing("sched")
    b = d["benches"]
    rows = []
    for fill in ("empty", "half", "full"):
        for n in (1000, 10000):
            for j in (10000, 100000):
                key = f"pass/{fill}-{n}nodes-{j}jobs"
                if key not in b:
                    continue
                med = b[key]["median_ns"]
                before = SCHED_BEFORE_MS.get(f"{fill}-{n}nodes-{j}jobs")
                target = 100e6 if n == 1000 else 1e9
                rows.append([fill, f"{n:,}", f"{j:,}",
                             f"{before:,.1f} ms" if before is not None else "–",
                             ns(med), "yes" if med < target else "**no**"])
    return (f"`{d['command']}` (took {d['took_s']:.0f} s with the build){quick_note(d)}; "
            "criterion's median of one pass; before: the same pass at commit 9fa57d0, timed once; "
            "target: under 100 ms at 1,000 nodes, under 1 s at 10,000:\n\n" +
            table(["cluster", "nodes", "waiting jobs", "before", "now", "under target"], rows))


SPEC_ROWS = [
    ("parse/kiln-single", "parse `examples/crater/mnist.yaml` (kiln, single task)"),
    ("parse/openpai-v1", "parse `examples/openpai/pytorch-ddp.json` (OpenPAI v1)"),
    ("parse/openpai-v2", "parse `examples/openpai/mnist-v2.yaml` (OpenPAI v2, templates)"),
    ("parse/kubeflow", "parse `examples/kubeflow/pytorch-simple.yaml` (PyTorchJob)"),
    ("render_env/2", "render the environment of every task, 2 tasks"),
    ("render_env/16", "… 16 tasks"),
    ("render_env/128", "… 128 tasks"),
    ("decide/2", "completion decision after a task exit, 2 tasks"),
    ("decide/128", "… 128 tasks"),
    ("decide/1024", "… 1024 tasks"),
]


def s_spec():
    d = load("spec")
    if not d:
        return missing("spec")
    rows = [[label, ns(d["benches"][k]["median_ns"])] for k, label in SPEC_ROWS if k in d["benches"]]
    return f"`{d['command']}`{quick_note(d)}; criterion's median:\n\n" + table(["what", "time"], rows)


def s_robustness():
    d = load("robustness")
    if not d:
        return missing("robustness")
    return (f"`{d['command']}` ran {d['cases']:,} cases of each fuzzer (arbitrary bytes, arbitrary "
            "text, mangled examples, arbitrary values put into every field of every example) and "
            f"the fixed hostile inputs: {d['passed']} passed, {d['failed']} failed, in "
            f"{d['took_s']:.0f} s{quick_note(d)}.")


def s_mnist():
    d = load("mnist")
    if not d:
        return missing("mnist")
    rows = [[i + 1, secs(a), secs(b), f"{r:.3f}", secs(c), f"{rd:.3f}"]
            for i, (a, b, r, c, rd) in enumerate(zip(d["direct_s"], d["kiln_s"], d["ratios"],
                                                     d["detached_s"], d["ratios_detached"]))]
    rows.append(["**median**", f"**{secs(median(d['direct_s']))}**",
                 f"**{secs(median(d['kiln_s']))}**", f"**{d['ratio_median']:.3f}**",
                 f"**{secs(median(d['detached_s']))}**", f"**{d['ratio_detached_median']:.3f}**"])
    return (f"{d['train_images']:,} training and {d['test_images']:,} test images, {d['epochs']} "
            f"epoch{'s' if d['epochs'] != 1 else ''}, seed 1, {'sandboxed' if d['sandboxed'] else 'no sandbox'}; "
            f"{d['reps']} round{'s' if d['reps'] != 1 else ''}, alternating which goes first{quick_note(d)}; load average "
            f"{load_note(d)} when saved.\n\n" +
            table(["round", "direct", "`kiln run` (log followed)", "kiln / direct",
                   "`kiln run -d` (not followed)", "kiln / direct"], rows))


def s_logs():
    d = load("logs")
    if not d:
        return missing("logs")
    f = d["flood"]
    gb = d["bytes"] / 1e9
    rows = [[i + 1, secs(a), secs(b), f"{b / a:.2f}", secs(wa), secs(wb)]
            for i, (a, b, wa, wb) in enumerate(zip(f["direct_s"], f["kiln_s"],
                                                    f["writer_direct_s"], f["writer_kiln_s"]))]
    rows.append(["**median**", f"**{secs(median(f['direct_s']))}**", f"**{secs(median(f['kiln_s']))}**",
                 f"**{f['ratio_median']:.2f}**", secs(median(f["writer_direct_s"])),
                 secs(median(f["writer_kiln_s"]))])
    ff, fp, tp = d["follow_flood"], d["follow_paced"], d["tail_paced"]
    rows2 = [
        [f"`kiln logs -f`, task printing {gb:g} GB flat out", f"{ff['n']:,}", ms(ff["p50_ms"]),
         ms(ff["p99_ms"]), ms(ff["max_ms"])],
        [f"`kiln logs -f`, task printing {d['rate']} lines/s for {d['paced_s']} s", f"{fp['n']:,}",
         ms(fp["p50_ms"]), ms(fp["p99_ms"]), ms(fp["max_ms"])],
        ["`tail -f` on a file, the same paced task run directly", f"{tp['n']:,}", ms(tp["p50_ms"]),
         ms(tp["p99_ms"]), ms(tp["max_ms"])],
    ]
    return (f"{gb:g} GB of 128-byte lines{quick_note(d)}:\n\n" +
            table(["run", "direct (to a file)", "through kiln", "kiln / direct",
                   "writer's own time, direct", "… under kiln"], rows) +
            "\n\nHow far behind the task its lines reach a follower:\n\n" +
            table(["follower", "stamped lines", "p50", "p99", "max"], rows2) +
            f"\n\nWhile followed, the {gb:g} GB task took {secs(ff['writer_s'])} by its own clock and "
            f"the follower had its last byte {secs(ff['last_byte_after_s'])} after submission."
            + (f" The server's own CPU time while the paced task ran: "
               f"{d['server_cpu_paced']['alone']:.1%} of a core with nobody following, "
               f"**{d['server_cpu_paced']['followed']:.1%}** with one `kiln logs -f` attached."
               if "server_cpu_paced" in d else ""))


def s_footprint():
    d = load("footprint")
    if not d:
        return missing("footprint")
    runs = d["runs"]
    head = ["", *[f"{r['history']:,} finished jobs" for r in runs]]
    rows = [
        ["store size (kiln.db + WAL)", *[f"{r['db_mib']:.1f} MiB" for r in runs]],
        ["filling it (fill_history example)", *[secs(r["fill_s"]) if r["fill_s"] else "–" for r in runs]],
        ["server start → listening", *[ms(r["startup_s"] * 1000) for r in runs]],
        ["RSS, idle", *[f"{r['rss_idle_kib'] / 1024:.1f} MiB" for r in runs]],
        ["RSS after the wrk runs", *[f"{r['rss_after_wrk_kib'] / 1024:.1f} MiB" for r in runs]],
        [f"CPU, idle over {runs[0]['idle_window_s']:.0f} s", *[f"{r['idle_cpu_share']:.2%} of a core" for r in runs]],
    ]
    for i, label in ((0, "1 connection"), (1, "8 connections")):
        rows.append([f"`GET /api/v1/jobs` ({label}) p50 / p99",
                     *[f"{ms(r['wrk'][i]['p50_ms'])} / **{ms(r['wrk'][i]['p99_ms'])}**" for r in runs]])
        rows.append([f"… requests/s ({label})", *[f"{r['wrk'][i]['rps']:.0f}" for r in runs]])
    qrows = []
    for q in runs[-1]["queries"]:
        qrows.append([q, *[f"{ms(r['queries'][q]['p50_ms'])} / {ms(r['queries'][q]['p99_ms'])}"
                           if q in r["queries"] else "–" for r in runs]])
    return (f"wrk for {d['wrk_s']} s per line{quick_note(d)}:\n\n" + table(head, rows) +
            "\n\nOther reads, one keep-alive client, one request at a time, p50 / p99:\n\n" +
            table(["request", *head[1:]], qrows))


def s_sampling():
    d = load("sampling")
    if not d:
        return missing("sampling")
    rows = []
    for r in d["runs"]:
        every = r["sample_every_s"]
        label = f"{every} s" + (" (default)" if every == 5 else "") + \
            (" (no round in the window)" if every > d["window_s"] else "")
        per_round = "–" if every > d["window_s"] else ms(r["share"] * every * 1000)
        rows.append([label, f"{r['share']:.2%}", per_round, ", ".join(r["series"])])
    return (f"{d['tasks']} tasks, {d['window_s']:.0f} s window{quick_note(d)}:\n\n" +
            table(["`--sample-every`", "server CPU (share of one core)", "per round",
                   "series of the last job"], rows))


def s_slurm_engine():
    d = load("slurm_engine")
    if not d:
        return missing("slurm_engine")
    sb, kn = d["sbatch"], d["kiln"]
    rows = []
    for name, how, v in (("Slurm", "`sbatch --wrap`", sb),
                         ("kiln --engine slurm", "`kiln run -d`", kn)):
        xs = v["latency_ms"]
        rows.append([name, how, ms(pct(xs, 50)), ms(pct(xs, 99)),
                     f"{v['n'] / v['total_s']:.1f}"])
    lat_ratio = ratio(pct(kn["latency_ms"], 50), pct(sb["latency_ms"], 50))
    tp_ratio = ratio(kn["n"] / kn["total_s"], sb["n"] / sb["total_s"])
    return (f"{d['latency_n']} jobs one at a time, then {d['throughput_n']} at once, on "
            f"{d['cluster']}{quick_note(d)}; kiln's jobs: {kn.get('ok', '?')} succeeded, "
            f"{kn.get('failed', '?')} failed.\n\n" +
            table(["system", "submitted with", "submit → running, p50", "p99",
                   "throughput, jobs/s"], rows) +
            f"\n\nkiln / Slurm: submit → running p50 **{lat_ratio}**, throughput **{tp_ratio}**.")


SECTIONS = {
    "machine": s_machine, "headline": s_headline, "latency": s_latency,
    "kiln-latency": s_kiln_latency, "throughput": s_throughput, "gpu": s_gpu,
    "sched": s_sched, "spec": s_spec, "robustness": s_robustness, "mnist": s_mnist,
    "logs": s_logs, "footprint": s_footprint, "sampling": s_sampling,
    "slurm-engine": s_slurm_engine,
}


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else DOC
    with open(path) as f:
        doc = f.read()
    seen = set()

    def fill(m):
        name = m.group(1)
        seen.add(name)
        body = SECTIONS[name]()
        return f"<!-- bench:{name} -->\n{body}\n<!-- /bench:{name} -->"
    doc = re.sub(r"<!-- bench:([\w-]+) -->.*?<!-- /bench:\1 -->", fill, doc, flags=re.S)
    for name in SECTIONS:
        if name not in seen:
            common.log(f"report: no <!-- bench:{name} --> section in {path}")
    with open(path + ".tmp", "w") as f:
        f.write(doc)
    os.replace(path + ".tmp", path)
    common.log(f"wrote {path}")


if __name__ == "__main__":
    main()
