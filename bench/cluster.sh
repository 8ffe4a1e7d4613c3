#!/usr/bin/env bash
# One command for the cluster fan-out benchmark: builds duplex (release), starts a
# redis-server (no persistence) on a free port, then runs `duplex bench --mode fanout` against
#   single  1 node, in-process (memory) broker
#   redis1  1 node + Redis
#   redis3  3 nodes + Redis (subscribers spread round robin, events triggered on the first)
# at 1,000 subscribers x 50 events/s and 10,000 x 5/s, 100-byte events, a few rounds with the
# setups interleaved. Nodes and redis-server run on CPU 0, the client on CPU 1. It reads from
# Redis how often each event crossed it (INFO commandstats: PUBLISH calls per event; PUBSUB
# NUMSUB: how many connections receive each of them) and rewrites the section between
# `<!-- cluster-fanout:begin -->` and `<!-- cluster-fanout:end -->` of BENCHMARKS.md; raw
# figures go to bench/results/cluster.json. Options: `bench/cluster.sh --help`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export DUPLEX_CLUSTER_BENCH_ROOT="$ROOT"
export DUPLEX_CLUSTER_BENCH_ARGV="$*"
exec python3 - "$@" <<'PY'
"""Cluster fan-out benchmark (see bench/cluster.sh). Python 3 standard library only;
the helpers it shares with the other hub benchmarks are in bench/lib/hubbench.py."""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

ROOT = os.environ["DUPLEX_CLUSTER_BENCH_ROOT"]
sys.path.insert(0, os.path.join(ROOT, "bench", "lib"))
sys.dont_write_bytecode = True  # no __pycache__ in bench/lib
import hubbench as hb  # noqa: E402
from hubbench import (  # noqa: E402
    Redis, core_ticks, fmt, median, other_load, process_ticks, span, stop, tail)

DUPLEX = os.path.join(ROOT, "target", "release", "duplex")
BEGIN = "<!-- cluster-fanout:begin -->"
END = "<!-- cluster-fanout:end -->"
APP_ID = "app-id"
CHANNEL = "duplex-bench"
PAYLOAD = 100
SOURCES = "127.0.0.2-127.0.0.9"
CLIENT_SLACK_S = 90.0
# Late deliveries are waited for this long after the window before they count as lost: on a
# shared machine a starved server falls seconds behind without losing anything.
DRAIN_S = 10.0
TARGET = 1.15  # cluster CPU per delivery at most 15 % above one node's

SETUPS = {
    "single": {"label": "1 node, memory broker", "nodes": 1, "redis": False},
    "redis1": {"label": "1 node + Redis", "nodes": 1, "redis": True},
    "redis3": {"label": "3 nodes + Redis", "nodes": 3, "redis": True},
}
WORKLOADS = {
    "1k": {"subscribers": 1000, "rate": 50},
    "10k": {"subscribers": 10000, "rate": 5},
}


log = hb.make_log("cluster")


def redis_window(redis, channel, client, publish_before, args, deadline):
    """Follows the run from Redis: the first PUBLISH marks the start of the load (the bench
    publishes event 0 at once); then Redis's CPU time and PUBLISH count are sampled at the start
    and end of the measured window, and PUBSUB NUMSUB of the event channel a few times in it."""
    out = {"numsub": []}
    while client.poll() is None and time.monotonic() < deadline:
        if redis.publish_calls() > publish_before:
            break
        time.sleep(0.02)
    else:
        return out
    t0 = time.monotonic()
    time.sleep(max(0.0, t0 + args.warmup - time.monotonic()))
    cpu_a, (pub_a, usec_a) = redis.cpu_s(), redis.publish_stats()
    for k in (1, 2, 3):
        time.sleep(max(0.0, t0 + args.warmup + args.duration * k / 4 - time.monotonic()))
        out["numsub"].append(redis.numsub(channel))
    time.sleep(max(0.0, t0 + args.warmup + args.duration - time.monotonic()))
    cpu_b, (pub_b, usec_b) = redis.cpu_s(), redis.publish_stats()
    out.update({"cpu_s": round(cpu_b - cpu_a, 6), "publish": pub_b - pub_a,
                "publish_usec": usec_b - usec_a,
                "seconds": round(time.monotonic() - t0 - args.warmup, 3)})
    return out


def start_node(tmp, tag, i, redis, prefix, cpu):
    return hb.start_node(DUPLEX, os.path.join(tmp, f"{tag}-node{i}.log"), cpu, redis, prefix,
                         name=f"node {i}")


def measure(setup_name, wl_name, rnd, args, redis, tmp, run_id):
    setup, wl = SETUPS[setup_name], WORKLOADS[wl_name]
    tag = f"{setup_name}-{wl_name}-r{rnd}"
    prefix = f"bench{run_id}-{tag}"  # fresh keys: no leases of earlier nodes to sweep
    result = {"setup": setup_name, "workload": wl_name, "round": rnd, "status": "failed"}
    nodes = []
    try:
        for i in range(setup["nodes"]):
            nodes.append(start_node(tmp, tag, i, redis if setup["redis"] else None, prefix,
                                    args.server_cpu))
        argv = [DUPLEX, "bench", f"ws://127.0.0.1:{nodes[0][1]}"]
        for _, port, _ in nodes[1:]:
            argv += ["--url", f"ws://127.0.0.1:{port}"]
        argv += ["--mode", "fanout", "--rate", str(wl["rate"]), "-c", str(wl["subscribers"]),
                 "-s", str(PAYLOAD), "-d", f"{args.duration}s", "-w", f"{args.warmup}s",
                 "--source", SOURCES, "--connect-concurrency", "256", "--channel", CHANNEL,
                 "--drain-timeout", f"{DRAIN_S:g}s",
                 "--json", "-q"]
        for proc, _, _ in nodes:
            argv += ["--server-pid", str(proc.pid)]
        if setup["redis"]:
            argv += ["--redis-pid", str(redis.pid)]
        redis_channel = f"{prefix}:app:{APP_ID}:ev:{CHANNEL}"
        publish_before = redis.publish_calls()
        own_pids = [p.pid for p, _, _ in nodes] + [redis.pid]
        ticks_before = core_ticks(), sum(process_ticks(pid) or 0 for pid in own_pids)
        client_log = os.path.join(tmp, f"{tag}-client.json")
        watch = (lambda client, deadline: redis_window(
            redis, redis_channel, client, publish_before, args, deadline)) \
            if setup["redis"] else None
        window = hb.run_client(argv, args.client_cpu, client_log,
                               args.warmup + args.duration + CLIENT_SLACK_S, watch)
        publish_after = redis.publish_calls()
        ticks_after = core_ticks(), sum(process_ticks(pid) or 0 for pid in own_pids)
        other_server_core = other_load(ticks_before[0], ticks_after[0], args.server_cpu,
                                       ticks_after[1] - ticks_before[1])
        for i, (proc, _, logpath) in enumerate(nodes):
            if proc.poll() is not None:
                raise RuntimeError(f"node {i} died: {tail(logpath)}")
        with open(client_log) as f:
            report = json.loads(f.read().strip().splitlines()[-1])
        f = report["fanout"]
        lat = report["latency_us"]
        srv = report.get("server_cpu") or {}
        rcpu = report.get("redis_cpu") or {}
        accepted = f["publish_ms"]["count"]
        result.update({
            "status": "ok",
            "nodes": setup["nodes"],
            "subscribers": f["subscribers"],
            "subscribers_per_node": [h["subscribers"] for h in f["hubs"]],
            "events_published": f["events_published"],
            "events_accepted_total": accepted,
            "deliveries_expected": f["deliveries_expected"],
            "deliveries_received": f["deliveries_received"],
            "deliveries_per_s": f["deliveries_per_s"],
            "p50_ms": lat["p50"] / 1000,
            "p99_ms": lat["p99"] / 1000,
            "max_ms": lat["max"] / 1000,
            "lag_p99_ms": (report.get("send_lag_us") or {}).get("p99", 0) / 1000,
            "missing": f["missing"],
            "duplicates": f["duplicates"],
            "out_of_order": f["out_of_order"],
            "events_failed": f["events_failed"],
            "errors": report["errors"]["total"],
            "error_samples": report["errors"]["samples"],
            "server_us_per_delivery": srv.get("us_per_echo"),
            "server_utilization": srv.get("utilization"),
            "server_per_node_utilization": [p["utilization"] for p in srv.get("per_pid", [])],
            "client_utilization": report["client_cpu"]["utilization"],
            "client_us_per_delivery": report["client_cpu"]["us_per_echo"],
            "redis_us_per_event": rcpu.get("us_per_event"),
            "redis_us_per_delivery": rcpu.get("us_per_delivery"),
            "redis_utilization": rcpu.get("utilization"),
            "redis_publish_calls": publish_after - publish_before if setup["redis"] else None,
            "redis_publish_per_event": round((publish_after - publish_before) / accepted, 3)
            if setup["redis"] and accepted else None,
            "redis_numsub_max": max(window["numsub"]) if window.get("numsub") else None,
            "redis_window": window or None,
            "other_load_server_core": other_server_core,
        })
        if window.get("publish"):
            # Redis's own CPU clock (µs resolution) over the window, per PUBLISH in it; and
            # the same above what an idle redis-server costs (its timers).
            result["redis_us_per_event"] = round(window["cpu_s"] * 1e6 / window["publish"], 2)
            busy = window["cpu_s"] - redis.idle_cpu_per_s * window["seconds"]
            result["redis_us_per_event_above_idle"] = round(
                max(0.0, busy) * 1e6 / window["publish"], 2)
            result["redis_publish_us_per_call"] = round(
                window["publish_usec"] / window["publish"], 2)
            result["redis_us_per_delivery"] = round(
                window["cpu_s"] * 1e6 / window["publish"] / f["subscribers"], 4)
        log(f"{tag}: {result['deliveries_per_s']:.0f} deliveries/s, p50 {result['p50_ms']:.1f} "
            f"p99 {result['p99_ms']:.1f} ms, server {result['server_us_per_delivery']} µs/delivery"
            f", redis {result['redis_us_per_event']} µs/event, lost {result['missing']}, "
            f"PUBLISH/event {result['redis_publish_per_event']}, NUMSUB {result['redis_numsub_max']}")
    except (RuntimeError, OSError, ValueError, KeyError, IndexError) as e:
        result["error"] = str(e)
        log(f"{tag}: FAILED: {e}")
    finally:
        for proc, _, _ in nodes:
            stop(proc)
    return result


def summarize(results):
    out = {}
    for r in results:
        out.setdefault((r["workload"], r["setup"]), []).append(r)
    summary = {}
    for key, rows in out.items():
        ok = [r for r in rows if r["status"] == "ok"]
        s = {"rounds": len(rows), "ok": len(ok)}
        if ok:
            for k in ["deliveries_per_s", "p50_ms", "p99_ms", "server_us_per_delivery",
                      "redis_us_per_event", "redis_us_per_delivery", "server_utilization",
                      "client_utilization", "redis_utilization", "redis_publish_per_event",
                      "redis_us_per_event_above_idle", "redis_publish_us_per_call"]:
                s[k] = median(ok, k)
            s["server_us_span"] = span(ok, "server_us_per_delivery")
            s["other_load_max"] = max((r["other_load_server_core"] or 0) for r in ok)
            for k in ["missing", "duplicates", "out_of_order", "events_failed", "errors"]:
                s[k] = sum(r[k] for r in ok)
            s["deliveries_expected"] = sum(r["deliveries_expected"] for r in ok)
            s["numsub"] = sorted({r["redis_numsub_max"] for r in ok
                                  if r.get("redis_numsub_max") is not None})
            s["subscribers_per_node"] = ok[0]["subscribers_per_node"]
            total = [r["server_us_per_delivery"] + (r["redis_us_per_delivery"] or 0)
                     for r in ok if r.get("server_us_per_delivery") is not None]
            s["total_us_per_delivery"] = statistics.median(total) if total else None
        summary[key] = s
    return summary


def round_ratios(results, wl_name, setup_name):
    """(server + Redis) ÷ single node CPU per delivery, for each round that has both."""
    by = {(r["setup"], r["round"]): r for r in results
          if r["workload"] == wl_name and r["status"] == "ok"}
    out = []
    for (setup, rnd), r in sorted(by.items(), key=lambda kv: kv[0][1]):
        base = by.get(("single", rnd))
        if setup != setup_name or not base or not base.get("server_us_per_delivery"):
            continue
        total = r["server_us_per_delivery"] + (r.get("redis_us_per_delivery") or 0)
        out.append(total / base["server_us_per_delivery"])
    return out


def redis_cell(s):
    if s.get("redis_us_per_event") is None:
        return "–"
    return (f"{fmt(s['redis_us_per_event'], 1)} ({fmt(s['redis_us_per_event_above_idle'], 1)}; "
            f"{fmt(s['redis_publish_us_per_call'], 1)})")


def markdown(meta, summary, results):
    m = meta["machine"]
    out = [BEGIN, "## Cluster fan-out", ""]
    out.append(
        f"Date: {meta['date']}. Machine: {m['cpu_model']}, {m['cores']} cores, "
        f"{m['memory_gib']} GiB, Linux {m['kernel']}, {m['rustc']}; load average at start "
        f"{', '.join(str(x) for x in m['load_average_at_start'])}. duplex commit "
        f"{meta['commit']}, redis-server {meta['redis_version']}.")
    out.append("")
    out.append(f"Command: `{meta['command']}`")
    out.append("")
    out.append(
        f"Method: {meta['rounds']} round(s); in each, every workload runs on each setup in a "
        "rotating order (single, redis1, redis3, then redis1, redis3, single, ...), each on "
        "freshly started nodes (fresh Redis key prefix, one redis-server for the whole run, "
        "`--save \"\" --appendonly no`). Setups: **single** = one `duplex serve` with the "
        "in-process broker; **redis1** = one node with `--redis`; **redis3** = three nodes "
        "with `--redis`, subscribers spread round robin, events triggered through the first "
        f"node's REST API. Every node and redis-server pinned to CPU {meta['server_cpu']} "
        f"(so the server side of every setup has the same one core), the client "
        f"(`duplex bench --mode fanout`, one thread) to CPU {meta['client_cpu']}; "
        f"{meta['warmup_s']} s warm-up then {meta['duration_s']} s measured; {PAYLOAD}-byte "
        "event data. Figures are medians over rounds. Server CPU: user+system time of every "
        "node from /proc/PID/stat over the window, summed, divided by the deliveries; Redis "
        "CPU: redis-server's own `used_cpu_user + used_cpu_sys` (`INFO cpu`, microseconds) "
        "between the start and end of the window (found from Redis: the first PUBLISH starts "
        "the load), divided by the PUBLISH calls in between; \"above idle\" subtracts what the "
        f"idle redis-server used before the run ({meta.get('redis_idle_cpu_us_per_s', '?')} µs "
        "per second: its timers), \"in PUBLISH\" is `INFO commandstats`' time inside the "
        "PUBLISH command; \"server + Redis\" adds the whole Redis figure, per delivery. "
        "\"Others on CPU 0\": the share of the servers' core used by other processes during "
        "the run (worst round). Latency: from the event's scheduled "
        "publish time to the subscriber reading it (includes the REST call and, with Redis, "
        "the PUBLISH round trip). Lost/dup/reordered: summed over rounds; \"lost\" is an event "
        f"accepted by the REST API that had not reached a subscriber {DRAIN_S:g} s after the "
        "window.")
    out.append("")
    for wl_name in meta["workloads"]:
        wl = WORKLOADS[wl_name]
        out.append(f"### {wl['subscribers']:,} subscribers × {wl['rate']} events/s "
                   f"({wl['subscribers'] * wl['rate']:,} deliveries/s)")
        out.append("")
        out.append("| setup | deliveries/s | p50 ms | p99 ms | server CPU µs/delivery (min–max) "
                   "| Redis CPU µs/event (above idle; in PUBLISH) | server + Redis µs/delivery "
                   "| server CPU | client CPU | others on CPU 0 | lost/dup/reordered |")
        out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
        for setup_name in meta["setups"]:
            s = summary.get((wl_name, setup_name))
            if not s or not s["ok"]:
                out.append(f"| {SETUPS[setup_name]['label']} | failed | | | | | | | | | |")
                continue
            lo_hi = s["server_us_span"]
            out.append(
                f"| {SETUPS[setup_name]['label']} | {fmt(s['deliveries_per_s'], thousands=True)} "
                f"| {fmt(s['p50_ms'], 1)} | {fmt(s['p99_ms'], 1)} "
                f"| {fmt(s['server_us_per_delivery'])} ({fmt(lo_hi[0])}–{fmt(lo_hi[1])}) "
                f"| {redis_cell(s)} | {fmt(s['total_us_per_delivery'])} "
                f"| {fmt(100 * s['server_utilization'], 0)} % "
                f"| {fmt(100 * s['client_utilization'], 0)} % "
                f"| ≤ {fmt(100 * s['other_load_max'], 0)} % "
                f"| {s['missing']}/{s['duplicates']}/{s['out_of_order']} "
                f"(of {s['deliveries_expected']:,}) |")
        out.append("")
        base = summary.get((wl_name, "single"))
        lines = []
        for setup_name in meta["setups"]:
            s = summary.get((wl_name, setup_name))
            if setup_name == "single" or not s or not s["ok"] or not base or not base["ok"]:
                continue
            r_nodes = s["server_us_per_delivery"] / base["server_us_per_delivery"]
            r_total = s["total_us_per_delivery"] / base["server_us_per_delivery"]
            verdict = "meets" if r_total <= TARGET else "**misses**"
            rounds = round_ratios(results, wl_name, setup_name)
            lines.append(
                f"- {SETUPS[setup_name]['label']} ÷ 1 node: CPU per delivery "
                f"{r_nodes:.2f}× (nodes only), {r_total:.2f}× (nodes + Redis): {verdict} "
                f"the ≤ {TARGET:.2f}× target. Round by round (nodes + Redis ÷ the same "
                f"round's single node): {', '.join(f'{x:.2f}×' for x in rounds) or '–'}.")
            per_node = s["subscribers_per_node"]
            lines.append(
                f"  Redis crossings: {fmt(s['redis_publish_per_event'], 3)} PUBLISH per event; "
                f"PUBSUB NUMSUB of the event channel during the run: "
                f"{', '.join(str(n) for n in s['numsub']) or '–'} (nodes: {s and len(per_node)}, "
                f"subscribers per node: {', '.join(f'{n:,}' for n in per_node)}), so each "
                f"event reached Redis once and left it "
                f"{', '.join(str(n) for n in s['numsub']) or '?'} time(s), not "
                f"{wl['subscribers']:,}.")
        out.extend(lines)
        out.append("")
    failed = [r for r in results if r["status"] != "ok"]
    if failed:
        out.append("Failed measurements: " + "; ".join(
            f"{r['setup']} {r['workload']} round {r['round']}: {r.get('error', '?')}"
            for r in failed))
        out.append("")
    out.append(f"Raw figures: `{meta['json_output']}`.")
    out.append("")
    out.append(END)
    return "\n".join(out) + "\n"


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="bench/cluster.sh",
        description="Fan-out: 1 node vs 1 node + Redis vs 3 nodes + Redis (see bench/README.md).")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds")
    p.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds")
    p.add_argument("--workloads", default="1k,10k",
                   help="comma list of 1k (1,000 x 50/s) and 10k (10,000 x 5/s)")
    p.add_argument("--setups", default="single,redis1,redis3",
                   help="comma list of single, redis1, redis3")
    p.add_argument("--quick", action="store_true",
                   help="1 round of 2 s after 1 s, writes bench/results/quick.cluster.{md,json}")
    p.add_argument("--no-build", action="store_true")
    p.add_argument("--output", help="markdown file whose section is rewritten "
                   "(default BENCHMARKS.md; with --quick bench/results/quick.cluster.md)")
    p.add_argument("--server-cpu", type=int, default=0)
    p.add_argument("--client-cpu", type=int, default=1)
    a = p.parse_args(argv)
    a.workloads = [w.strip() for w in a.workloads.split(",") if w.strip()]
    a.setups = [s.strip() for s in a.setups.split(",") if s.strip()]
    for w in a.workloads:
        if w not in WORKLOADS:
            p.error(f"unknown workload {w!r}")
    for s in a.setups:
        if s not in SETUPS:
            p.error(f"unknown setup {s!r}")
    if a.quick:
        a.rounds, a.duration, a.warmup = 1, 2.0, 1.0
    results = os.path.join(ROOT, "bench", "results")
    if a.output is None:
        a.output = (os.path.join(results, "quick.cluster.md") if a.quick
                    else os.path.join(ROOT, "BENCHMARKS.md"))
    a.json_output = os.path.join(results, "quick.cluster.json" if a.quick else "cluster.json")
    return a


def main(argv):
    hb.install_interrupt()
    args = parse_args(argv)
    status = hb.preflight(args, ROOT, DUPLEX, log)
    if status is not None:
        return status
    commit = hb.commit_label(ROOT)
    command_argv = os.environ.get("DUPLEX_CLUSTER_BENCH_ARGV", "")
    meta = {
        "date": hb.now_utc(),
        "command": "bench/cluster.sh" + (" " + command_argv if command_argv else ""),
        "machine": hb.machine(),
        "commit": commit,
        "rounds": args.rounds,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "server_cpu": args.server_cpu,
        "client_cpu": args.client_cpu,
        "workloads": args.workloads,
        "setups": args.setups,
        "json_output": os.path.relpath(args.json_output, ROOT),
    }
    results = []
    run_id = str(int(time.time()))
    with tempfile.TemporaryDirectory(prefix="cluster-bench-") as tmp:
        redis = Redis(tmp, args.server_cpu)
        try:
            meta["redis_version"] = redis.version()
            meta["redis_idle_cpu_us_per_s"] = hb.measure_redis_idle(redis, log)
            for rnd in range(1, args.rounds + 1):
                for wl_name in args.workloads:
                    k = (rnd - 1) % len(args.setups)
                    for setup_name in args.setups[k:] + args.setups[:k]:
                        results.append(measure(setup_name, wl_name, rnd, args, redis, tmp,
                                               run_id))
        finally:
            stop(redis.proc)
    summary = summarize(results)
    os.makedirs(os.path.dirname(args.json_output), exist_ok=True)
    with open(args.json_output, "w") as f:
        json.dump({"meta": meta, "measurements": results}, f, indent=1)
        f.write("\n")
    hb.write_section(args.output, BEGIN, END, markdown(meta, summary, results))
    log(f"wrote {os.path.relpath(args.output, ROOT)} and {meta['json_output']}")
    return 0 if all(r["status"] == "ok" for r in results) else 1


if __name__ == "__main__":
    hb.run_main(main, log)
PY
