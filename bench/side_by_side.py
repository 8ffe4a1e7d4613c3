#!/usr/bin/env python3
"""duplex side by side with the Rust peers: echo throughput, CPU per echo and idle memory.

    bench/run.sh [--rounds 3] [--duration 10] [--warmup 2] [--only WORKLOAD ...]
                 [--servers duplex,tungstenite,...] [--quick] [--no-memory] [--no-build]
                 [--output BENCHMARKS.md]

For each round, for each workload, every server runs once, in an order that rotates from
round to round (A B C D, then B C D A, ...), so that drift on a shared machine spreads over
all of them. Each measurement starts a fresh server pinned to one core (taskset -c 0) and
runs `duplex bench ... --json --quiet --server-pid PID` pinned to the other (taskset -c 1);
the server's CPU time comes from /proc/PID/stat over the measured window.

Then, unless --no-memory, bench/idle_rss.py measures each server's RSS per idle connection.

Results: the section between `<!-- side-by-side:begin -->` and `<!-- side-by-side:end -->`
of --output is rewritten (the rest of the file is kept), and the raw figures go to a JSON
file (bench/results/latest.json; with --quick, bench/results/quick.json and, unless --output
is given, bench/results/quick.md, so that a smoke run does not overwrite the published
figures). Every wait is bounded; a server that does not start or dies is reported as failed.
Python 3 standard library only.
"""

import argparse
import datetime
import json
import os
import platform
import re
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DUPLEX = os.path.join(ROOT, "target", "release", "duplex")
PEERS_DIR = os.path.join(ROOT, "bench", "peers")
PEER_BIN = os.path.join(PEERS_DIR, "target", "release")
IDLE_RSS = os.path.join(ROOT, "bench", "idle_rss.py")
BEGIN = "<!-- side-by-side:begin -->"
END = "<!-- side-by-side:end -->"

PORT_WAIT_S = 10.0
SERVER_STOP_S = 3.0
# On top of warm-up + duration: connecting, draining, closing and process start/exit.
CLIENT_SLACK_S = 60.0
MEMORY_TIMEOUT_S = 600.0
# Below this server CPU share, a duplex measurement is flagged: the server was not saturated,
# so the figure says something about the client or the machine, not the server.
SATURATED = 0.90


class Server:
    def __init__(self, name, label, argv, deflate, crates):
        self.name = name  # used on the command line (--servers)
        self.label = label  # shown in tables
        self.argv = argv  # with {addr}
        self.deflate = deflate  # supports permessage-deflate (gets --deflate on deflate runs)
        self.crates = crates  # Cargo.lock packages whose versions are reported


def all_servers():
    return [
        Server(
            "duplex",
            "duplex",
            [DUPLEX, "echo", "--threads", "1", "--listen", "{addr}"],
            True,
            [],
        ),
        Server(
            "tungstenite",
            "tokio-tungstenite",
            [os.path.join(PEER_BIN, "peer-tungstenite"), "--listen", "{addr}"],
            False,
            ["tokio-tungstenite", "tungstenite"],
        ),
        Server(
            "fastwebsockets",
            "fastwebsockets",
            [os.path.join(PEER_BIN, "peer-fastwebsockets"), "--listen", "{addr}"],
            False,
            ["fastwebsockets", "hyper"],
        ),
        Server(
            "tokio-websockets",
            "tokio-websockets",
            [os.path.join(PEER_BIN, "peer-tokio-websockets"), "--listen", "{addr}"],
            False,
            ["tokio-websockets"],
        ),
    ]


class Workload:
    def __init__(self, name, title, connections, size, extra, deflate=False):
        self.name = name
        self.title = title
        self.connections = connections
        self.size = size
        self.extra = extra  # further duplex bench options
        self.deflate = deflate


WORKLOADS = [
    Workload("20B-100c", "100 connections × 20 B binary", 100, 20, []),
    Workload("1KiB-10c", "10 connections × 1 KiB binary", 10, 1024, []),
    Workload("16KiB-200c", "200 connections × 16 KiB binary", 200, 16384, []),
    Workload("16KiB-500c", "500 connections × 16 KiB binary", 500, 16384, []),
    Workload("1MiB-1c", "1 connection × 1 MiB binary", 1, 1 << 20, []),
    Workload(
        "deflate-json-1KiB-100c",
        "permessage-deflate, 100 connections × 1 KiB JSON-like text",
        100,
        1024,
        ["--payload", "json", "--deflate"],
        deflate=True,
    ),
]


def log(msg):
    print(f"[side-by-side {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _die_with_parent():
    """In the child before exec: get SIGTERM when the runner dies, even by SIGKILL, so that no
    server or client outlives it (Linux prctl PR_SET_PDEATHSIG; kept across exec)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        pass


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port, proc, timeout):
    """True once the port accepts a TCP connection; False if the process exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def stop(proc, grace=SERVER_STOP_S):
    """SIGTERM, then SIGKILL after `grace` seconds; returns the exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=grace)
    return proc.returncode


def tail(path, n=5):
    try:
        with open(path, errors="replace") as f:
            lines = [l.rstrip() for l in f.readlines() if l.strip()]
        return " | ".join(lines[-n:])
    except OSError:
        return ""


def last_json_line(text):
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                continue
    return None


def core_ticks():
    """{cpu index: (busy, total)} clock ticks since boot, from /proc/stat."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            name, *fields = line.split()
            if name.startswith("cpu") and name[3:].isdigit():
                v = [int(x) for x in fields[:8]]
                idle = v[3] + v[4]  # idle + iowait
                out[int(name[3:])] = (sum(v) - idle, sum(v))
    return out


def process_ticks(pid):
    """utime + stime of a process, in clock ticks (None once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return None


def other_load(before, after, cpu, own_ticks):
    """Share of `cpu` used by other processes between two core_ticks() samples."""
    try:
        busy = after[cpu][0] - before[cpu][0]
        total = after[cpu][1] - before[cpu][1]
    except KeyError:
        return None
    if total <= 0:
        return None
    return round(min(1.0, max(0.0, (busy - own_ticks) / total)), 3)


def measure(server, workload, args, tmp, tag):
    """One measurement on a fresh server. Returns a dict with "status" "ok" or "failed"."""
    port = free_port()
    addr = f"127.0.0.1:{port}"
    argv = [a.replace("{addr}", addr) for a in server.argv]
    if workload.deflate:
        argv.append("--deflate")
    server_log = os.path.join(tmp, f"{tag}.server.log")
    result = {"server": server.name, "workload": workload.name, "status": "failed"}
    with open(server_log, "w") as out:
        proc = subprocess.Popen(
            ["taskset", "-c", str(args.server_cpu)] + argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
    try:
        if not wait_for_port(port, proc, PORT_WAIT_S):
            code = proc.poll()
            why = f"exited with {code}" if code is not None else f"no listener after {PORT_WAIT_S:.0f} s"
            result["error"] = f"server did not start ({why}): {tail(server_log)}"
            return result
        client = [
            "taskset", "-c", str(args.client_cpu),
            DUPLEX, "bench", f"ws://{addr}/",
            "-c", str(workload.connections),
            "-s", str(workload.size),
            "-d", f"{args.duration}s",
            "-w", f"{args.warmup}s",
            "--json", "--quiet",
            "--server-pid", str(proc.pid),
        ] + workload.extra
        result["client_command"] = " ".join(shlex.quote(c) for c in client)
        timeout = args.warmup + args.duration + CLIENT_SLACK_S
        cores_before, server_before = core_ticks(), process_ticks(proc.pid)
        try:
            done = subprocess.run(
                client, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                timeout=timeout, preexec_fn=_die_with_parent,
            )
        except subprocess.TimeoutExpired:
            result["error"] = f"client did not finish within {timeout:.0f} s"
            return result
        cores_after, server_after = core_ticks(), process_ticks(proc.pid)
        report = last_json_line(done.stdout)
        alive = proc.poll() is None
        if report is None:
            err = " | ".join(done.stderr.strip().splitlines()[-3:])
            result["error"] = f"client exited with {done.returncode} without a report: {err}"
            if not alive:
                result["error"] += f"; server exited with {proc.returncode}: {tail(server_log)}"
            return result
        result["report"] = report
        if not alive:
            result["error"] = f"server died during the run (status {proc.returncode}): {tail(server_log)}"
            return result
        conns = report.get("connections", {})
        if conns.get("established", 0) < workload.connections:
            result["error"] = (
                f"only {conns.get('established', 0)} of {workload.connections} connections opened"
            )
            return result
        if workload.deflate and conns.get("deflate_negotiated", 0) < workload.connections:
            result["error"] = "permessage-deflate was not agreed on every connection"
            return result
        if report["messages"]["echoes"] == 0 or not report.get("server_cpu"):
            result["error"] = "no echo (or no server CPU figure) in the window"
            return result
        result["status"] = "ok"
        result["echoes_per_s"] = report["rates"]["echoes_per_s"]
        result["server_us_per_echo"] = report["server_cpu"]["us_per_echo"]
        result["server_cpu"] = report["server_cpu"]["utilization"]
        result["client_cpu"] = report["client_cpu"]["utilization"]
        result["client_us_per_echo"] = report["client_cpu"]["us_per_echo"]
        result["errors"] = report["errors"]["total"]
        # How busy other processes kept the two cores over the whole client run (connecting
        # and closing included): the noise a shared machine adds.
        tck = os.sysconf("SC_CLK_TCK")
        if server_before is not None and server_after is not None:
            result["other_load_server_core"] = other_load(
                cores_before, cores_after, args.server_cpu, server_after - server_before
            )
        result["other_load_client_core"] = other_load(
            cores_before, cores_after, args.client_cpu,
            report["client_cpu"]["process_total_s"] * tck,
        )
        return result
    finally:
        stop(proc)


def run_throughput(servers, workloads, args, tmp):
    results = []
    total = sum(len(applicable(servers, w)) for w in workloads) * args.rounds
    count = 0
    for rnd in range(args.rounds):
        for w in workloads:
            runnable = applicable(servers, w)
            k = rnd % len(runnable) if runnable else 0
            order = runnable[k:] + runnable[:k]
            for s in order:
                count += 1
                tag = f"r{rnd}-{w.name}-{s.name}"
                r = measure(s, w, args, tmp, tag)
                r["round"] = rnd
                results.append(r)
                if r["status"] == "ok":
                    log(
                        f"{count}/{total} round {rnd + 1} {w.name} {s.name}: "
                        f"{r['echoes_per_s']:.0f} echoes/s, server {r['server_us_per_echo']} µs/echo, "
                        f"server CPU {r['server_cpu'] * 100:.0f} %, client CPU {r['client_cpu'] * 100:.0f} %"
                    )
                else:
                    log(f"{count}/{total} round {rnd + 1} {w.name} {s.name}: FAILED: {r['error']}")
    return results


def applicable(servers, workload):
    return [s for s in servers if s.deflate or not workload.deflate]


def run_memory(servers, args):
    results = {}
    for s in servers:
        cmd = [
            sys.executable, IDLE_RSS, "--json",
            "--connections", str(args.connections),
            "--server-cpu", str(args.server_cpu),
            "--client-cpu", str(args.client_cpu),
            "--duplex", args.memory_client, "--",
        ] + s.argv
        log(f"memory: {s.name}: {args.connections} idle connections")
        entry = {"command": " ".join(shlex.quote(c) for c in cmd), "status": "failed"}
        try:
            done = subprocess.run(
                cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                timeout=MEMORY_TIMEOUT_S,
            )
            report = last_json_line(done.stdout)
            if done.returncode == 0 and report is not None:
                entry.update(report)
                entry["status"] = "ok"
                log(f"memory: {s.name}: {report.get('per_connection_bytes')} B per connection")
            else:
                err = " | ".join(done.stderr.strip().splitlines()[-3:])
                entry["error"] = f"idle_rss.py exited with {done.returncode}: {err}"
                log(f"memory: {s.name}: FAILED: {entry['error']}")
        except subprocess.TimeoutExpired:
            entry["error"] = f"idle_rss.py did not finish within {MEMORY_TIMEOUT_S:.0f} s"
            log(f"memory: {s.name}: FAILED: {entry['error']}")
        results[s.name] = entry
    return results


# ---------------------------------------------------------------------------------------------
# Environment and versions


def sh(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def machine():
    model = ""
    for line in sh(["lscpu"]).splitlines():
        if line.startswith("Model name:"):
            model = line.split(":", 1)[1].strip()
    mem_kib = 0
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem_kib = int(line.split()[1])
    except OSError:
        pass
    return {
        "cpu_model": model or platform.processor() or "unknown",
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kib / (1 << 20), 1),
        "kernel": platform.release(),
        "rustc": sh(["rustc", "--version"]),
        "load_average_at_start": os.getloadavg(),
    }


def lock_versions(path):
    """{name: version} from a Cargo.lock (its [[package]] entries)."""
    versions = {}
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return versions
    for block in text.split("[[package]]")[1:]:
        name = re.search(r'^name = "([^"]+)"', block, re.M)
        version = re.search(r'^version = "([^"]+)"', block, re.M)
        if name and version:
            versions.setdefault(name.group(1), version.group(1))
    return versions


def versions():
    peers = lock_versions(os.path.join(PEERS_DIR, "Cargo.lock"))
    ours = lock_versions(os.path.join(ROOT, "Cargo.lock"))
    commit = sh(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"])
    dirty = sh(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"])
    return {
        "duplex": ours.get("duplex", "?"),
        "duplex_commit": commit + (" (with uncommitted changes)" if dirty else ""),
        "duplex_tokio": ours.get("tokio", "?"),
        "peers": {
            name: peers.get(name, "?")
            for name in ["tokio-tungstenite", "tungstenite", "fastwebsockets", "hyper",
                         "tokio-websockets", "tokio"]
        },
    }


# ---------------------------------------------------------------------------------------------
# Summary and Markdown


def summarize(results, servers, workloads):
    summary = {}
    for w in workloads:
        rows = {}
        for s in servers:
            if s not in applicable(servers, w):
                rows[s.name] = {"status": "n/a"}
                continue
            runs = [r for r in results if r["workload"] == w.name and r["server"] == s.name]
            ok = [r for r in runs if r["status"] == "ok"]
            row = {
                "runs": len(runs),
                "ok": len(ok),
                "failures": [r.get("error", "") for r in runs if r["status"] != "ok"],
            }
            if ok:
                eps = [r["echoes_per_s"] for r in ok]
                row.update(
                    status="ok",
                    echoes_per_s=statistics.median(eps),
                    echoes_per_s_min=min(eps),
                    echoes_per_s_max=max(eps),
                    server_us_per_echo=statistics.median(r["server_us_per_echo"] for r in ok),
                    server_cpu=statistics.median(r["server_cpu"] for r in ok),
                    client_us_per_echo=median_of(ok, "client_us_per_echo"),
                    client_cpu=statistics.median(r["client_cpu"] for r in ok),
                    errors=sum(r["errors"] for r in ok),
                    other_load_server_core=median_of(ok, "other_load_server_core"),
                    other_load_client_core=median_of(ok, "other_load_client_core"),
                )
            else:
                row["status"] = "failed"
            rows[s.name] = row
        summary[w.name] = rows
    return summary


def median_of(rows, key):
    values = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(values) if values else None


def fmt_us(x):
    return f"{x:.2f}" if x is not None else "–"


def fmt_int(x):
    return f"{x:,.0f}"


def ratio(a, b):
    return f"{a / b:.2f}×" if a and b else "–"


def markdown(meta, summary, memory, servers, workloads):
    out = [BEGIN, "## Side by side: duplex and the Rust peers", ""]
    m = meta["machine"]
    v = meta["versions"]
    p = v["peers"]
    if meta["quick"]:
        out += ["**Smoke run (--quick): not figures to quote.**", ""]
    out += [
        f"Date: {meta['date']}. Machine: {m['cpu_model']}, {m['cores']} cores, "
        f"{m['memory_gib']} GiB, Linux {m['kernel']}, {m['rustc']}; load average at start "
        f"{', '.join(f'{x:.2f}' for x in m['load_average_at_start'])}.",
        "",
        f"Versions: duplex {v['duplex']} (commit {v['duplex_commit']}, tokio {v['duplex_tokio']}); "
        f"tokio-tungstenite {p['tokio-tungstenite']} (tungstenite {p['tungstenite']}); "
        f"fastwebsockets {p['fastwebsockets']} (hyper {p['hyper']} for the upgrade); "
        f"tokio-websockets {p['tokio-websockets']}; peers on tokio {p['tokio']} "
        "(pinned by `bench/peers/Cargo.lock`).",
        "",
        f"Command: `{meta['command']}`",
        "",
    ]
    if workloads:
        out += [
        f"Method: {meta['rounds']} round(s); in each, every workload runs on every server in a "
        "rotating order (A B C D, then B C D A, ...), each on a freshly started server. Server "
        f"pinned to CPU {meta['server_cpu']} (single-threaded runtime: `duplex echo --threads 1`, "
        f"`bench/peers/`), client `duplex bench` (closed loop: one message in flight per "
        f"connection) pinned to CPU {meta['client_cpu']}; {meta['warmup_s']} s warm-up then "
        f"{meta['duration_s']} s measured. Echoes/s: median over rounds (min–max). Server CPU "
        "µs per echo: user+system time of the server process from /proc/PID/stat over the "
        "window, divided by the echoes (median); client µs/echo likewise for `duplex bench`. "
        "CPU %: share of one core over the window. The client can saturate a server whose "
        "µs/echo is above its own; below 100 % server CPU with both under 100 %, the machine "
        "(other processes, round trips) was the limit. Ratios are duplex ÷ peer: above "
        "1 is better for echoes/s, below 1 is better for CPU per echo.",
        "",
        ]
    for w in workloads:
        rows = summary[w.name]
        ours = rows.get("duplex", {})
        out += [
            f"### {w.title}",
            "",
            "| server | echoes/s (median) | min–max | server µs/echo | server CPU | client CPU "
            "| client µs/echo | duplex ÷ peer echoes/s | duplex ÷ peer µs/echo |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for s in servers:
            row = rows[s.name]
            if row["status"] == "n/a":
                out.append(f"| {s.label} | n/a (no permessage-deflate) | | | | | | | |")
                continue
            if row["status"] == "failed":
                why = row["failures"][0] if row["failures"] else "?"
                why = why.replace("|", "/")[:160]
                out.append(f"| {s.label} | failed ({row['runs']} of {row['runs']}): {why} | | | | | | | |")
                continue
            note = ""
            if row["ok"] < row["runs"]:
                note = f" ({row['runs'] - row['ok']} of {row['runs']} failed)"
            if row["errors"]:
                note += f" ({row['errors']} errors)"
            if s.name == "duplex":
                r_eps = r_cpu = "–"
            elif ours.get("status") == "ok":
                r_eps = ratio(ours["echoes_per_s"], row["echoes_per_s"])
                r_cpu = ratio(ours["server_us_per_echo"], row["server_us_per_echo"])
            else:
                r_eps = r_cpu = "–"
            out.append(
                f"| {s.label} | {fmt_int(row['echoes_per_s'])}{note} | "
                f"{fmt_int(row['echoes_per_s_min'])}–{fmt_int(row['echoes_per_s_max'])} | "
                f"{row['server_us_per_echo']:.2f} | {row['server_cpu'] * 100:.0f} % | "
                f"{row['client_cpu'] * 100:.0f} % | {fmt_us(row.get('client_us_per_echo'))} | "
                f"{r_eps} | {r_cpu} |"
            )
        loads = [
            (r["other_load_server_core"], r["other_load_client_core"])
            for r in rows.values()
            if r.get("status") == "ok"
            and r.get("other_load_server_core") is not None
            and r.get("other_load_client_core") is not None
        ]
        if loads:
            worst_server = max(l[0] for l in loads)
            worst_client = max(l[1] for l in loads)
            out += [
                "",
                f"Other processes on the pinned cores (median per server, worst shown): "
                f"{worst_server * 100:.0f} % of the server's core, {worst_client * 100:.0f} % "
                "of the client's.",
            ]
        if ours.get("status") == "ok" and ours["server_cpu"] < SATURATED:
            out += [
                "",
                f"Note: duplex's server used {ours['server_cpu'] * 100:.0f} % of its core here "
                f"(client {ours['client_cpu'] * 100:.0f} %): the server was not saturated, so "
                "echoes/s is bounded by the client, the round trip or the machine, not by the "
                "server; compare CPU per echo.",
            ]
        out.append("")
    out += ["### Memory: RSS per idle connection", ""]
    if memory is None:
        out += ["Not measured in this run (--no-memory).", ""]
    else:
        out += [
            f"`bench/idle_rss.py --connections {meta['memory_connections']}`: the server's VmRSS "
            "after the connections opened and settled, minus its baseline after one warm-up "
            "connection, divided by the connections.",
            "",
            "| server | connections | baseline RSS | RSS | bytes per connection | duplex ÷ peer |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        ours = memory.get("duplex", {})
        for s in servers:
            e = memory.get(s.name)
            if e is None:
                continue
            if e["status"] != "ok":
                out.append(f"| {s.label} | failed: {e.get('error', '?').replace('|', '/')[:160]} | | | | |")
                continue
            r = "–"
            if s.name != "duplex" and ours.get("status") == "ok":
                r = ratio(ours["per_connection_bytes"], e["per_connection_bytes"])
            out.append(
                f"| {s.label} | {fmt_int(e['connections'])} ({e.get('failed', 0)} failed) | "
                f"{fmt_int(e['baseline_rss_bytes'])} | {fmt_int(e['rss_bytes'])} | "
                f"{fmt_int(e['per_connection_bytes'])} | {r} |"
            )
        out.append("")
    out.append(f"Raw results: `{meta['json_output']}`.")
    out.append(END)
    return "\n".join(out) + "\n"


def write_section(path, section):
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        text = "# Benchmarks\n"
    start, end = text.find(BEGIN), text.find(END)
    if start != -1 and end != -1 and end > start:
        text = text[:start] + section + text[end + len(END):].lstrip("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


# ---------------------------------------------------------------------------------------------


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="bench/run.sh",
        description="Runs every workload against duplex and the Rust peers, interleaved, and "
        "writes the side-by-side section of BENCHMARKS.md.",
    )
    p.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds (default 10)")
    p.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds (default 2)")
    p.add_argument(
        "--only", action="append", default=[], metavar="WORKLOAD",
        help="run only this workload (repeatable; comma-separated): "
        + ", ".join(w.name for w in WORKLOADS),
    )
    p.add_argument(
        "--servers", default=",".join(s.name for s in all_servers()),
        help="comma-separated servers, in the first round's order (default: all)",
    )
    p.add_argument("--quick", action="store_true", help="smoke run: 1 round of 1 s, 0.5 s warm-up")
    p.add_argument("--no-memory", action="store_true", help="skip the idle-connection RSS part")
    p.add_argument("--no-throughput", action="store_true", help="only the idle-connection RSS part")
    p.add_argument("--connections", type=int, default=15000, help="idle connections (default 15000)")
    p.add_argument("--memory-client", default=DUPLEX, metavar="PATH",
                   help="duplex binary whose `bench --idle` opens the idle connections "
                   "(default: target/release/duplex)")
    p.add_argument("--no-build", action="store_true", help="use the binaries already built")
    p.add_argument("--output", help="Markdown file whose side-by-side section is rewritten "
                   "(default BENCHMARKS.md; bench/results/quick.md with --quick)")
    p.add_argument("--json-output", help="raw results (default bench/results/latest.json; "
                   "bench/results/quick.json with --quick)")
    p.add_argument("--from-json", metavar="FILE",
                   help="do not measure: rewrite --output's section from the raw results of "
                   "an earlier run (e.g. bench/results/latest.json)")
    p.add_argument("--server-cpu", type=int, default=0)
    p.add_argument("--client-cpu", type=int, default=1)
    args = p.parse_args(argv)
    if args.quick:
        args.rounds, args.duration, args.warmup = 1, 1.0, 0.5
    if args.rounds < 1 or args.rounds > 100:
        p.error("--rounds must be 1..100")
    if not (0 < args.duration <= 3600) or not (0 <= args.warmup <= 600):
        p.error("--duration must be in (0, 3600] and --warmup in [0, 600]")
    results_dir = os.path.join(ROOT, "bench", "results")
    if args.output is None:
        args.output = os.path.join(results_dir, "quick.md") if args.quick else os.path.join(ROOT, "BENCHMARKS.md")
    if args.json_output is None:
        args.json_output = os.path.join(results_dir, "quick.json" if args.quick else "latest.json")
    known = {s.name: s for s in all_servers()}
    names = [n.strip() for n in args.servers.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        p.error(f"--servers: unknown {unknown}; known: {', '.join(known)}")
    args.server_list = [known[n] for n in names]
    wanted = [n.strip() for o in args.only for n in o.split(",") if n.strip()]
    by_name = {w.name: w for w in WORKLOADS}
    bad = [n for n in wanted if n not in by_name]
    if bad:
        p.error(f"--only: unknown {bad}; known: {', '.join(by_name)}")
    args.workloads = [w for w in WORKLOADS if not wanted or w.name in wanted]
    if args.no_throughput:
        if args.no_memory:
            p.error("--no-throughput with --no-memory leaves nothing to run")
        args.workloads = []
    return args


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def render_saved(args):
    with open(args.from_json) as f:
        saved = json.load(f)
    meta = saved["meta"]
    known = {s.name: s for s in all_servers()}
    by_name = {w.name: w for w in WORKLOADS}
    servers = [known[n] for n in meta["servers"] if n in known]
    workloads = [by_name[w["name"]] for w in meta["workloads"] if w["name"] in by_name]
    summary = summarize(saved["measurements"], servers, workloads)
    write_section(args.output, markdown(meta, summary, saved.get("memory"), servers, workloads))
    log(f"wrote {os.path.relpath(args.output, ROOT)} from {args.from_json}")
    return 0


def main(argv):
    # SIGTERM (and SIGINT, which a shell leaves ignored in background jobs) unwind through the
    # cleanup: the running server is stopped, the running client killed.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    args = parse_args(argv)
    if args.from_json:
        return render_saved(args)
    if not args.no_memory and not os.path.isfile(IDLE_RSS):
        log(f"error: {IDLE_RSS} is missing, so the memory part cannot run; "
            "run with --no-memory to measure throughput only")
        return 2
    if not args.no_build:
        log("building (bench/build.sh)")
        if subprocess.run([os.path.join(ROOT, "bench", "build.sh")]).returncode != 0:
            log("error: bench/build.sh failed")
            return 2
    missing = [s.argv[0] for s in args.server_list if not os.access(s.argv[0], os.X_OK)]
    if not os.access(DUPLEX, os.X_OK):
        missing.append(DUPLEX)
    if missing:
        log(f"error: not built: {', '.join(sorted(set(missing)))} (run bench/build.sh)")
        return 2
    if os.cpu_count() and max(args.server_cpu, args.client_cpu) >= os.cpu_count():
        log(f"error: CPUs {args.server_cpu} and {args.client_cpu} needed, {os.cpu_count()} present")
        return 2

    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "bench/run.sh" + "".join(" " + shlex.quote(a) for a in argv),
        "machine": machine(),
        "versions": versions(),
        "rounds": args.rounds,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "quick": args.quick,
        "server_cpu": args.server_cpu,
        "client_cpu": args.client_cpu,
        "memory_connections": args.connections,
        "json_output": os.path.relpath(args.json_output, ROOT),
        "servers": [s.name for s in args.server_list],
        "workloads": [
            {"name": w.name, "title": w.title, "connections": w.connections, "payload_size": w.size,
             "extra": w.extra}
            for w in args.workloads
        ],
    }
    results = []
    if args.workloads:
        with tempfile.TemporaryDirectory(prefix="side-by-side-") as tmp:
            results = run_throughput(args.server_list, args.workloads, args, tmp)
    memory = None if args.no_memory else run_memory(args.server_list, args)
    summary = summarize(results, args.server_list, args.workloads)

    os.makedirs(os.path.dirname(os.path.abspath(args.json_output)), exist_ok=True)
    with open(args.json_output, "w") as f:
        json.dump({"meta": meta, "summary": summary, "memory": memory, "measurements": results},
                  f, indent=1)
        f.write("\n")
    write_section(args.output, markdown(meta, summary, memory, args.server_list, args.workloads))
    log(f"wrote {os.path.relpath(args.output, ROOT)} and {os.path.relpath(args.json_output, ROOT)}")
    failed = [r for r in results if r["status"] != "ok"]
    if failed:
        log(f"{len(failed)} of {len(results)} measurements failed (see the tables)")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        log("interrupted")
        sys.exit(130)
