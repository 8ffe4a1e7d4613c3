#!/usr/bin/env bash
# One command for the channel history benchmark: builds duplex (release), starts a
# redis-server (no persistence) on a free port, then
#   1. publish cost: `duplex bench --mode fanout` (few subscribers on `chat-bench`) against
#        mem-off    `duplex serve`, in-process broker, no history
#        mem-on     `duplex serve`, in-process broker, history on `chat-*` (size 1000)
#        redis-off  `duplex serve --redis`, no history
#        redis-on   `duplex serve --redis`, history on `chat-*` (size 1000)
#      a few rounds with the setups interleaved; server CPU per event (from /proc), Redis CPU
#      per event (INFO cpu) and where Redis spends it (INFO commandstats);
#   2. memory per channel: N history channels each filled with `size` events of 100 bytes
#      through the signed REST API (then again, so every ring has wrapped): RSS delta of
#      `duplex serve` (in-process broker) and used_memory delta of Redis (with --redis);
# servers and redis-server on CPU 0, the client on CPU 1. Rewrites the section between
# `<!-- history:begin -->` and `<!-- history:end -->` of BENCHMARKS.md; raw figures go to
# bench/results/history.json. Options: `bench/history.sh --help`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export DUPLEX_HISTORY_BENCH_ROOT="$ROOT"
export DUPLEX_HISTORY_BENCH_ARGV="$*"
exec python3 - "$@" <<'PY'
"""Channel history benchmark (see bench/history.sh). Python 3 standard library only;
the helpers it shares with the other hub benchmarks are in bench/lib/hubbench.py."""

import argparse
import hashlib
import hmac
import http.client
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.parse

ROOT = os.environ["DUPLEX_HISTORY_BENCH_ROOT"]
sys.path.insert(0, os.path.join(ROOT, "bench", "lib"))
sys.dont_write_bytecode = True  # no __pycache__ in bench/lib
import hubbench as hb  # noqa: E402
from hubbench import (  # noqa: E402
    Redis, core_ticks, median, other_load, process_ticks, span, stop, tail)

DUPLEX = os.path.join(ROOT, "target", "release", "duplex")
BEGIN = "<!-- history:begin -->"
END = "<!-- history:end -->"
APP_ID, APP_KEY, APP_SECRET = "app-id", "app-key", "app-secret"
PATTERN = "chat-*"
CHANNEL = "chat-bench"  # matches PATTERN: kept in mem-on / redis-on
MEM_CHANNEL = "chat-m-{}"
WARM_CHANNEL = "warm-{}"  # does not match PATTERN: nothing kept
TTL_S = 600
PAYLOAD = 100
CHANNELS_PER_REQUEST = 100  # the app's max_event_channels (Pusher's limit)
CLIENT_SLACK_S = 90.0
DRAIN_S = 10.0
SETTLE_S = 1.0

SETUPS = {
    "mem-off": {"label": "in-process broker, history off", "redis": False, "history": False},
    "mem-on": {"label": "in-process broker, history on", "redis": False, "history": True},
    "redis-off": {"label": "`--redis`, history off", "redis": True, "history": False},
    "redis-on": {"label": "`--redis`, history on", "redis": True, "history": True},
}
MEMORY_SETUPS = {
    "mem-off": "in-process broker, history off (control: nothing is kept)",
    "mem-on": "in-process broker, history on",
    "redis-on": "`--redis`, history on",
}
# Redis commands the history script runs, in INFO commandstats.
SCRIPT_COMMANDS = ["hget", "hincrby", "time", "xadd", "xtrim", "pexpire", "publish"]


log = hb.make_log("history")


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def write_config(tmp, history, size):
    """The app of every setup: the bench's credentials, 100 channels per trigger, and with
    `history` the channels matching PATTERN keep `size` events for TTL_S seconds."""
    path = os.path.join(tmp, f"history-{'on' if history else 'off'}-{size}.toml")
    lines = ["[[apps]]", f'id = "{APP_ID}"', f'key = "{APP_KEY}"', f'secret = "{APP_SECRET}"',
             f"max_event_channels = {CHANNELS_PER_REQUEST}"]
    if history:
        lines.append(f'history = {{ channels = ["{PATTERN}"], size = {size}, ttl = {TTL_S} }}')
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def start_node(tmp, tag, config, redis, prefix, cpu):
    return hb.start_node(DUPLEX, os.path.join(tmp, f"{tag}-node.log"), cpu, redis, prefix,
                         config=config)


# ---------------------------------------------------------------------------------------------
# Part 1: publish cost


def stats_delta(a, b, names):
    out = {}
    for n in names:
        ca, ua = a.get(n, (0, 0))
        cb, ub = b.get(n, (0, 0))
        out[n] = (cb - ca, ub - ua)
    return out


def redis_window(redis, client, publish_before, args, deadline):
    """Follows the run from Redis: the first PUBLISH (plain, or inside the history script)
    marks the start of the load; Redis's CPU time and command statistics are sampled at the
    start and end of the measured window."""
    while client.poll() is None and time.monotonic() < deadline:
        if redis.publish_calls() > publish_before:
            break
        time.sleep(0.02)
    else:
        return {}
    t0 = time.monotonic()
    time.sleep(max(0.0, t0 + args.warmup - time.monotonic()))
    cpu_a, cs_a = redis.cpu_s(), redis.commandstats()
    time.sleep(max(0.0, t0 + args.warmup + args.duration - time.monotonic()))
    cpu_b, cs_b = redis.cpu_s(), redis.commandstats()
    names = sorted(set(cs_a) | set(cs_b))
    delta = {n: v for n, v in stats_delta(cs_a, cs_b, names).items() if v[0]}
    return {"cpu_s": round(cpu_b - cpu_a, 6), "commands": delta,
            "publish": delta.get("publish", (0, 0))[0],
            "seconds": round(time.monotonic() - t0 - args.warmup, 3)}


def measure(setup_name, rnd, args, redis, tmp, run_id, configs):
    setup = SETUPS[setup_name]
    tag = f"{setup_name}-r{rnd}"
    prefix = f"hb{run_id}-{tag}"
    result = {"setup": setup_name, "round": rnd, "status": "failed"}
    node = None
    try:
        node = start_node(tmp, tag, configs[setup["history"]],
                          redis if setup["redis"] else None, prefix, args.server_cpu)
        proc, port, logpath = node
        argv = [DUPLEX, "bench", f"ws://127.0.0.1:{port}", "--mode", "fanout",
                "--rate", f"{args.rate:g}", "-c", str(args.subscribers), "-s", str(PAYLOAD),
                "-d", f"{args.duration:g}s", "-w", f"{args.warmup:g}s", "--channel", CHANNEL,
                "--drain-timeout", f"{DRAIN_S:g}s", "--server-pid", str(proc.pid),
                "--json", "-q"]
        if setup["redis"]:
            argv += ["--redis-pid", str(redis.pid)]
        publish_before = redis.publish_calls()
        own_pids = [proc.pid, redis.pid]
        ticks_before = core_ticks(), sum(process_ticks(pid) or 0 for pid in own_pids)
        client_log = os.path.join(tmp, f"{tag}-client.json")
        watch = (lambda client, deadline: redis_window(
            redis, client, publish_before, args, deadline)) if setup["redis"] else None
        window = hb.run_client(argv, args.client_cpu, client_log,
                               args.warmup + args.duration + CLIENT_SLACK_S, watch)
        ticks_after = core_ticks(), sum(process_ticks(pid) or 0 for pid in own_pids)
        if proc.poll() is not None:
            raise RuntimeError(f"the node died: {tail(logpath)}")
        with open(client_log) as f:
            lines = f.read().strip().splitlines()
        if not lines:
            raise RuntimeError(f"duplex bench printed nothing: {tail(client_log + '.err')}")
        report = json.loads(lines[-1])
        f = report["fanout"]
        srv = report.get("server_cpu") or {}
        events = f["events_published"]
        if not events:
            raise RuntimeError("no event published in the window")
        result.update({
            "status": "ok",
            "subscribers": f["subscribers"],
            "events_published": events,
            "events_per_s": round(events / report["window_s"], 1),
            "events_failed": f["events_failed"],
            "deliveries_expected": f["deliveries_expected"],
            "deliveries_received": f["deliveries_received"],
            "missing": f["missing"],
            "duplicates": f["duplicates"],
            "out_of_order": f["out_of_order"],
            "errors": report["errors"]["total"],
            "error_samples": report["errors"]["samples"],
            "p50_ms": report["latency_us"]["p50"] / 1000,
            "p99_ms": report["latency_us"]["p99"] / 1000,
            "publish_p50_ms": f["publish_ms"]["p50"],
            "publish_p99_ms": f["publish_ms"]["p99"],
            "send_lag_p99_ms": (report.get("send_lag_us") or {}).get("p99", 0) / 1000,
            "server_cpu_s": srv.get("total_s"),
            "server_us_per_delivery": srv.get("us_per_echo"),
            # Server CPU over the window per event published in it (= per delivery x
            # subscribers).
            "server_us_per_event": round(srv["total_s"] * 1e6 / events, 2)
            if srv.get("total_s") is not None else None,
            "server_utilization": srv.get("utilization"),
            "client_utilization": report["client_cpu"]["utilization"],
            "other_load_server_core": other_load(ticks_before[0], ticks_after[0],
                                                 args.server_cpu,
                                                 ticks_after[1] - ticks_before[1]),
        })
        if window.get("publish"):
            n = window["publish"]
            busy = window["cpu_s"] - redis.idle_cpu_per_s * window["seconds"]
            cmds = window["commands"]
            result.update({
                "redis_window": window,
                "redis_us_per_event": round(window["cpu_s"] * 1e6 / n, 2),
                "redis_us_per_event_above_idle": round(max(0.0, busy) * 1e6 / n, 2),
                # Time inside commands, per event (INFO commandstats usec).
                "redis_publish_us_per_event": round(cmds.get("publish", (0, 0))[1] / n, 2),
                "redis_script_us_per_event": round(cmds.get("evalsha", (0, 0))[1] / n, 2),
                "redis_script_calls_per_event": round(cmds.get("evalsha", (0, 0))[0] / n, 3),
                "redis_script_commands_us_per_event": {
                    c: round(cmds.get(c, (0, 0))[1] / n, 2) for c in SCRIPT_COMMANDS},
            })
        elif setup["redis"]:
            raise RuntimeError("Redis saw no PUBLISH in the window")
        log(f"{tag}: {result['events_per_s']:.0f} events/s, server "
            f"{result['server_us_per_event']} µs/event, redis "
            f"{result.get('redis_us_per_event')} µs/event (script "
            f"{result.get('redis_script_us_per_event')}), lost {result['missing']}, "
            f"others on CPU {args.server_cpu} {result['other_load_server_core']}")
    except (RuntimeError, OSError, ValueError, KeyError, IndexError, TypeError) as e:
        result["error"] = str(e)
        log(f"{tag}: FAILED: {e}")
    finally:
        if node is not None:
            stop(node[0])
    return result


# ---------------------------------------------------------------------------------------------
# Part 2: memory per channel


class Rest:
    """Signed Pusher REST calls on one keep-alive connection."""

    def __init__(self, port):
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def call(self, method, path, body=b"", params=None):
        query = dict(params or {})
        query.update({"auth_key": APP_KEY, "auth_timestamp": str(int(time.time())),
                      "auth_version": "1.0"})
        if body:
            query["body_md5"] = hashlib.md5(body).hexdigest()
        to_sign = "\n".join([method, path, "&".join(f"{k}={v}" for k, v in sorted(query.items()))])
        query["auth_signature"] = hmac.new(APP_SECRET.encode(), to_sign.encode(),
                                           hashlib.sha256).hexdigest()
        url = f"{path}?{urllib.parse.urlencode(query)}"
        headers = {"Content-Type": "application/json"} if body else {}
        for attempt in (1, 2):
            try:
                self.conn.request(method, url, body=body or None, headers=headers)
                resp = self.conn.getresponse()
                data = resp.read()
                break
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
                if attempt == 2:
                    raise
        if resp.status != 200:
            raise RuntimeError(f"{method} {path}: HTTP {resp.status}: {data[:200]!r}")
        return json.loads(data or b"{}")

    def trigger(self, channels, seq):
        head = f"seq={seq:08d} "
        data = head + "x" * (PAYLOAD - len(head))
        body = json.dumps({"name": "history-fill", "channels": channels, "data": data},
                          separators=(",", ":")).encode()
        self.call("POST", f"/apps/{APP_ID}/events", body)

    def close(self):
        self.conn.close()


def fill(rest, channels, first_seq, count):
    """`count` events on every channel, CHANNELS_PER_REQUEST channels per trigger."""
    groups = [channels[i:i + CHANNELS_PER_REQUEST]
              for i in range(0, len(channels), CHANNELS_PER_REQUEST)]
    t0 = time.monotonic()
    for seq in range(first_seq, first_seq + count):
        for g in groups:
            rest.trigger(g, seq)
    return time.monotonic() - t0


def settled_rss(pid):
    time.sleep(SETTLE_S)
    return rss_kib(pid)


def measure_memory(setup_name, args, redis, tmp, run_id, configs):
    with_redis = setup_name.startswith("redis")
    history = setup_name.endswith("-on")
    tag = f"memory-{setup_name}"
    prefix = f"hb{run_id}-{tag}"
    result = {"setup": setup_name, "status": "failed", "channels": args.channels,
              "size": args.size}
    node = None
    rest = None
    try:
        node = start_node(tmp, tag, configs[history], redis if with_redis else None, prefix,
                          args.server_cpu)
        proc, port, logpath = node
        rest = Rest(port)
        channels = [MEM_CHANNEL.format(i) for i in range(args.channels)]
        # Warm-up: the same requests on channels that keep nothing (buffers, the app, ...).
        warm = [WARM_CHANNEL.format(i) for i in range(CHANNELS_PER_REQUEST)]
        for seq in range(200):
            rest.trigger(warm, seq)
        rss0 = settled_rss(proc.pid)
        mem0 = redis.used_memory() if with_redis else None
        keys0 = redis.command("DBSIZE") if with_redis else None
        log(f"{tag}: filling {args.channels:,} channels x {args.size:,} events")
        secs1 = fill(rest, channels, 0, args.size)
        rss1 = settled_rss(proc.pid)
        mem1 = redis.used_memory() if with_redis else None
        keys1 = redis.command("DBSIZE") if with_redis else None
        check1 = rest.call("GET", f"/apps/{APP_ID}/channels/{channels[-1]}/history",
                           params={"limit": "1"}) if history else None
        log(f"{tag}: again (every ring wraps)")
        secs2 = fill(rest, channels, args.size, args.size)
        rss2 = settled_rss(proc.pid)
        mem2 = redis.used_memory() if with_redis else None
        check2 = rest.call("GET", f"/apps/{APP_ID}/channels/{channels[0]}/history",
                           params={"limit": "1"}) if history else None
        if proc.poll() is not None:
            raise RuntimeError(f"the node died: {tail(logpath)}")
        n_events = args.channels * args.size
        result.update({
            "status": "ok",
            "fill_s": [round(secs1, 1), round(secs2, 1)],
            "triggers_per_s": round(n_events / CHANNELS_PER_REQUEST / secs1, 1),
            "rss_kib": [rss0, rss1, rss2],
            "rss_bytes_per_channel": [round((rss1 - rss0) * 1024 / args.channels),
                                      round((rss2 - rss0) * 1024 / args.channels)],
            "rss_bytes_per_event": [round((rss1 - rss0) * 1024 / n_events, 1),
                                    round((rss2 - rss0) * 1024 / n_events, 1)],
        })
        if history:
            ev = (check2 or {}).get("events") or [{}]
            result.update({
                "offset_after": [check1["position"]["offset"], check2["position"]["offset"]],
                "complete_after_wrap": check2["complete"],
                "oldest_kept_after_wrap": ev[0].get("position", {}).get("offset"),
                "event_json_bytes": len(json.dumps(ev[0], separators=(",", ":"))),
            })
            if result["offset_after"] != [args.size, 2 * args.size]:
                raise RuntimeError(f"history offsets {result['offset_after']}, expected "
                                   f"{[args.size, 2 * args.size]}")
        if with_redis:
            result.update({
                "redis_used_memory": [mem0, mem1, mem2],
                "redis_keys_added": keys1 - keys0,
                "redis_bytes_per_channel": [round((mem1 - mem0) / args.channels),
                                            round((mem2 - mem0) / args.channels)],
                "redis_bytes_per_event": [round((mem1 - mem0) / n_events, 1),
                                          round((mem2 - mem0) / n_events, 1)],
                "redis_stream_memory_usage": redis.command(
                    "MEMORY", "USAGE", f"{prefix}:app:{APP_ID}:history:{channels[0]}",
                    "SAMPLES", "0"),
            })
        log(f"{tag}: RSS +{(rss1 - rss0) / 1024:.1f} MiB after 1x, +{(rss2 - rss0) / 1024:.1f}"
            f" MiB after 2x ({result['rss_bytes_per_event'][0]} B/event); redis "
            f"{result.get('redis_bytes_per_event')} B/event; fill {secs1:.0f}+{secs2:.0f} s")
    except (RuntimeError, OSError, ValueError, KeyError, IndexError, TypeError) as e:
        result["error"] = str(e)
        log(f"{tag}: FAILED: {e}")
    finally:
        if rest is not None:
            rest.close()
        if node is not None:
            stop(node[0])
    return result


# ---------------------------------------------------------------------------------------------
# Report


def fmt(x, digits=1, thousands=False):
    return hb.fmt(x, digits, thousands)


def total_us(r):
    if r.get("server_us_per_event") is None:
        return None
    return r["server_us_per_event"] + (r.get("redis_us_per_event") or 0)


def summarize(results):
    by = {}
    for r in results:
        by.setdefault(r["setup"], []).append(r)
    summary = {}
    for name, rows in by.items():
        ok = [r for r in rows if r["status"] == "ok"]
        for r in ok:
            r["total_us_per_event"] = total_us(r)
        s = {"rounds": len(rows), "ok": len(ok)}
        if ok:
            for k in ["events_per_s", "server_us_per_event", "server_us_per_delivery",
                      "redis_us_per_event", "redis_us_per_event_above_idle",
                      "redis_publish_us_per_event", "redis_script_us_per_event",
                      "total_us_per_event", "p50_ms", "p99_ms", "publish_p50_ms",
                      "send_lag_p99_ms", "server_utilization", "client_utilization"]:
                s[k] = median(ok, k)
            s["server_span"] = span(ok, "server_us_per_event")
            s["redis_span"] = span(ok, "redis_us_per_event")
            s["other_load_max"] = max((r["other_load_server_core"] or 0) for r in ok)
            for k in ["missing", "duplicates", "out_of_order", "events_failed", "errors",
                      "deliveries_expected"]:
                s[k] = sum(r[k] for r in ok)
            cmd = [r["redis_script_commands_us_per_event"] for r in ok
                   if r.get("redis_script_commands_us_per_event")]
            if cmd:
                s["redis_script_commands_us_per_event"] = {
                    c: statistics.median(x[c] for x in cmd) for c in SCRIPT_COMMANDS}
        summary[name] = s
    return summary


def round_ratios(results, on, off, key):
    """on ÷ off of `key`, round by round (both measured in the same round)."""
    by = {(r["setup"], r["round"]): r for r in results if r["status"] == "ok"}
    out = []
    for (setup, rnd), r in sorted(by.items(), key=lambda kv: kv[0][1]):
        base = by.get((off, rnd))
        if setup != on or not base or not base.get(key) or r.get(key) is None:
            continue
        out.append(r[key] / base[key])
    return out


def ratio_line(results, on, off, key):
    rs = round_ratios(results, on, off, key)
    if not rs:
        return None, "–"
    return statistics.median(rs), ", ".join(f"{x:.2f}×" for x in rs)


def verdict(results, on, off, key):
    """How on ÷ off compares with the round-to-round noise."""
    rs = round_ratios(results, on, off, key)
    if not rs:
        return None, None
    r = statistics.median(rs)
    if len(rs) >= 3 and min(rs) < 1.0 < max(rs):
        return r, "not distinguishable from the noise (the round-by-round ratios fall on both sides of 1)"
    return r, f"{(r - 1) * 100:+.0f} %"


def reading(meta, summary, results):
    sm = lambda n, k: (summary.get(n) or {}).get(k)  # noqa: E731
    out = []
    pubs = [sm(n, "publish_p50_ms") for n in meta["setups"] if sm(n, "ok")]
    rates = [sm(n, "events_per_s") for n in meta["setups"] if sm(n, "ok")]
    if pubs and rates:
        slowest = max(pubs)
        out.append(
            f"- Publisher: {meta['rate']:g} events/s asked, {min(rates):,.0f}–{max(rates):,.0f} "
            f"achieved; the bench triggers one event at a time, so its ceiling is about "
            f"1 ÷ (REST call time) ≈ {1000 / slowest:,.0f} events/s with the slowest setup's "
            f"median call ({slowest:.2f} ms): the publisher was not the bottleneck at this rate "
            "(server CPU well below one core).")
    text = ["- Reading: the cost of a publish here is the REST request (HTTP parse, HMAC, "
            f"body MD5, JSON) and the {meta['subscribers']} WebSocket writes."]
    if sm("mem-on", "ok") and sm("mem-off", "ok"):
        r, v = verdict(results, "mem-on", "mem-off", "server_us_per_event")
        text.append(
            "In process, history adds a copy of the serialised event with its position spliced "
            "in and a VecDeque push (and a pop once the ring is full), under the channel's "
            "striped delivery lock and the broker's state lock: "
            f"measured {fmt(r, 2)}× the CPU of history off, {v}.")
    if sm("redis-on", "ok") and sm("redis-off", "ok"):
        r_s, v_s = verdict(results, "redis-on", "redis-off", "server_us_per_event")
        r_r, v_r = verdict(results, "redis-on", "redis-off", "redis_us_per_event")
        on_r, off_r = sm("redis-on", "redis_us_per_event"), sm("redis-off", "redis_us_per_event")
        cmds = sm("redis-on", "redis_script_commands_us_per_event")
        script = sm("redis-on", "redis_script_us_per_event")
        lua = ""
        if cmds and script:
            inner = sum(cmds.values())
            lua = (f"; {100 * (script - inner) / script:.0f} % of the script's time is the Lua "
                   "call itself (interpreter, arguments, the body splice), not the commands it "
                   f"runs (the XADD being the largest of those: {cmds['xadd']:.1f} µs)")
        text.append(
            "With `--redis` the node does the same work either way (one EVALSHA instead of one "
            f"PUBLISH on its command connection): node CPU {fmt(r_s, 2)}×, {v_s}. The cost "
            f"moves into Redis: {fmt(r_r, 2)}× ({v_r}), the history script (a Lua call running "
            "HGET and HINCRBY of the meta hash, TIME, XADD with an exact MAXLEN, XTRIM MINID, "
            f"two PEXPIRE and the PUBLISH) costing several plain PUBLISHes{lua}. Redis's "
            f"single core would bound a "
            f"cluster at roughly 10⁶ ÷ {fmt(on_r)} ≈ {1e6 / on_r:,.0f} history events/s "
            f"(vs ≈ {1e6 / off_r:,.0f} without history) at this per-event cost; at "
            f"{meta['rate']:g} events/s it used {on_r * meta['rate'] / 1e4:.1f} % of a core.")
    out.append(" ".join(text))
    return out


def markdown(meta, summary, results, memory):
    m = meta["machine"]
    out = [BEGIN, "## Channel history: publish cost and memory", ""]
    out.append(
        f"Date: {meta['date']}. Machine: {m['cpu_model']}, {m['cores']} cores "
        f"({m['threads_per_core']} thread(s) per core"
        f"{', ' + m['hypervisor'] + ' VM' if m.get('hypervisor') else ''}), "
        f"{m['memory_gib']} GiB, Linux {m['kernel']}, {m['rustc']}; load average at start "
        f"{', '.join(str(x) for x in m['load_average_at_start'])}. duplex commit "
        f"{meta['commit']}, redis-server {meta['redis_version']}. A shared machine: other "
        "engineers' builds and tests ran during the run (\"others on CPU 0\" below).")
    out.append("")
    out.append(f"Command: `{meta['command']}`")
    out.append("")
    if meta.get("setups"):
        out.extend(markdown_cost(meta, summary, results))
    if memory:
        out.extend(markdown_memory(meta, memory))
    out.append(f"Raw figures: `{meta['json_output']}`.")
    out.append("")
    out.append(END)
    return "\n".join(out) + "\n"


def markdown_cost(meta, summary, results):
    out = ["### Publish cost, history on vs off", ""]
    out.append(
        f"Method: {meta['rounds']} round(s); in each, the four setups run in a rotating order, "
        "each on a freshly started `duplex serve` (with `--redis`: a fresh key prefix, one "
        "redis-server for the whole run, `--save \"\" --appendonly no`). The app's TOML has, "
        f"for \"history on\", `history = {{ channels = [\"{PATTERN}\"], size = "
        f"{meta['size']}, ttl = {TTL_S} }}`, and no `history` for \"off\". Load: `duplex "
        f"bench --mode fanout --channel {CHANNEL} -c {meta['subscribers']} --rate "
        f"{meta['rate']:g} -s {PAYLOAD}`: {meta['subscribers']} subscribers of `{CHANNEL}`, "
        f"{meta['rate']:g} events/s triggered one at a time through the REST API "
        f"(`POST /apps/{APP_ID}/events`, keep-alive), {PAYLOAD}-byte data; "
        f"{meta['warmup_s']:g} s warm-up (the ring is full before the window: every "
        f"publish in it appends one event and drops one) then {meta['duration_s']:g} s "
        f"measured. Server and redis-server pinned to CPU {meta['server_cpu']}, the client "
        f"(one thread) to CPU {meta['client_cpu']}. **Server CPU per event**: user+system "
        "time of `duplex serve` over the window (/proc/PID/stat, 10 ms ticks) ÷ events "
        f"published in it (= CPU per delivery × {meta['subscribers']}): the REST request "
        "(parse, signature, body), the broker's publish (with history: the ring append, or "
        f"the script round trip) and {meta['subscribers']} WebSocket writes. **Redis CPU per "
        "event**: redis-server's `used_cpu_user + used_cpu_sys` (`INFO cpu`, µs) over the "
        "window (the first PUBLISH, plain or inside the script, starts the load) ÷ PUBLISH "
        "calls in it (a PUBLISH a script runs counts under its own name in `INFO "
        "commandstats`); \"above idle\" subtracts the idle redis-server's "
        f"{meta.get('redis_idle_cpu_us_per_s', '?')} µs/s (its timers); \"in commands\" is "
        "`INFO commandstats` time: inside PUBLISH (off), inside the EVALSHA of the history "
        "script (on). Figures are medians over rounds; the on ÷ off ratios are taken round "
        "by round (both in the same round), then their median.")
    out.append("")
    out.append("| setup | events/s | server CPU µs/event (min–max) | Redis CPU µs/event "
               "(above idle; in commands) | server + Redis µs/event | delivery p50 / p99 ms "
               "| REST call p50 ms | server CPU | client CPU | others on CPU 0 "
               "| lost/dup/reordered |")
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for name in meta["setups"]:
        s = summary.get(name)
        if not s or not s["ok"]:
            out.append(f"| {SETUPS[name]['label']} | failed | | | | | | | | | |")
            continue
        lo, hi = s["server_span"]
        if s.get("redis_us_per_event") is not None:
            inside = s["redis_script_us_per_event"] if SETUPS[name]["history"] \
                else s["redis_publish_us_per_event"]
            rcell = (f"{fmt(s['redis_us_per_event'])} ({fmt(s['redis_us_per_event_above_idle'])}"
                     f"; {fmt(inside)})")
        else:
            rcell = "–"
        out.append(
            f"| {SETUPS[name]['label']} | {fmt(s['events_per_s'], thousands=True)} "
            f"| {fmt(s['server_us_per_event'])} ({fmt(lo)}–{fmt(hi)}) | {rcell} "
            f"| {fmt(s['total_us_per_event'])} | {fmt(s['p50_ms'], 2)} / {fmt(s['p99_ms'], 1)} "
            f"| {fmt(s['publish_p50_ms'], 2)} | {fmt(100 * s['server_utilization'], 0)} % "
            f"| {fmt(100 * s['client_utilization'], 0)} % "
            f"| ≤ {fmt(100 * s['other_load_max'], 0)} % "
            f"| {s['missing']}/{s['duplicates']}/{s['out_of_order']} "
            f"(of {s['deliveries_expected']:,}) |")
    out.append("")
    sm = lambda n, k: (summary.get(n) or {}).get(k)  # noqa: E731
    lines = []
    if sm("mem-on", "ok") and sm("mem-off", "ok"):
        r, rounds = ratio_line(results, "mem-on", "mem-off", "server_us_per_event")
        lines.append(
            f"- In-process broker: history on ÷ off, server CPU per event "
            f"{fmt(r, 2)}× (round by round: {rounds}); medians "
            f"{fmt(sm('mem-on', 'server_us_per_event'))} vs "
            f"{fmt(sm('mem-off', 'server_us_per_event'))} µs, a difference of "
            f"{fmt(sm('mem-on', 'server_us_per_event') - sm('mem-off', 'server_us_per_event'))}"
            " µs per event.")
    if sm("redis-on", "ok") and sm("redis-off", "ok"):
        r_s, rounds_s = ratio_line(results, "redis-on", "redis-off", "server_us_per_event")
        r_r, rounds_r = ratio_line(results, "redis-on", "redis-off", "redis_us_per_event")
        r_t, rounds_t = ratio_line(results, "redis-on", "redis-off", "total_us_per_event")
        lines.append(
            f"- `--redis`: history on ÷ off, server CPU per event {fmt(r_s, 2)}× (round by "
            f"round: {rounds_s}); Redis CPU per event {fmt(r_r, 2)}× ({rounds_r}); server + "
            f"Redis {fmt(r_t, 2)}× ({rounds_t}).")
        cmds = sm("redis-on", "redis_script_commands_us_per_event")
        script = sm("redis-on", "redis_script_us_per_event")
        if cmds and script is not None:
            inner = sum(cmds.values())
            parts = ", ".join(f"{c.upper()} {fmt(v, 2)}" for c, v in cmds.items())
            lines.append(
                f"- Where Redis spends it with history on (`INFO commandstats`, µs per event, "
                f"medians): the EVALSHA of the history script {fmt(script)}, of which the "
                f"commands it runs {fmt(inner)} ({parts}; PEXPIRE twice) and the Lua "
                f"interpreter, argument passing and the body splice the remaining "
                f"{fmt(script - inner)}; with history off the event is one plain PUBLISH of "
                f"{fmt(sm('redis-off', 'redis_publish_us_per_event'), 2)} µs. Redis's whole CPU "
                f"per event (INFO cpu, including reading the request and writing the reply and "
                f"the pub/sub message) goes from {fmt(sm('redis-off', 'redis_us_per_event'))} "
                f"to {fmt(sm('redis-on', 'redis_us_per_event'))} µs.")
    lines.extend(reading(meta, summary, results))
    out.extend(lines)
    out.append("")
    return out


def markdown_memory(meta, memory):
    out = ["### Memory per history channel", ""]
    ch, size = meta["memory_channels"], meta["size"]
    out.append(
        f"Method: one fresh `duplex serve` per setup (server on CPU {meta['server_cpu']}), "
        f"history `size = {size}`; {ch:,} channels `chat-m-0` … `chat-m-{ch - 1}`, no "
        f"subscribers, each sent {size:,} events of {PAYLOAD} bytes of data (event name "
        f"`history-fill`) through the signed REST API from this script (Python, one "
        f"keep-alive connection, {CHANNELS_PER_REQUEST} channels per trigger), then another "
        f"{size:,} each (every ring has wrapped: the oldest half dropped). Baseline: after "
        f"200 warm-up triggers of the same shape on channels outside the pattern, {SETTLE_S:g} "
        "s settle. RSS is VmRSS of `duplex serve` (/proc/PID/status); Redis is `INFO memory` "
        "`used_memory` (the allocator's count, no fragmentation). Per channel = delta ÷ "
        f"{ch:,}; per event = delta ÷ ({ch:,} × {size:,}). The history endpoint is checked "
        f"after each fill (offset {size} then {2 * size} on the last and first channels). "
        "One run, not rounds: memory does not depend on the machine's load.")
    out.append("")
    out.append("| setup | RSS before → after 1× → after 2× (MiB) | server RSS per channel, "
               "1× / 2× | per event, 1× / 2× | Redis used_memory per channel, 1× / 2× "
               "| per event, 1× / 2× | stored event (JSON bytes) | fill, s (triggers/s) |")
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in memory:
        label = MEMORY_SETUPS[r["setup"]]
        if r["status"] != "ok":
            out.append(f"| {label} | failed: {r.get('error', '?')} | | | | | | |")
            continue
        rss = " → ".join(f"{k / 1024:.1f}" for k in r["rss_kib"])
        pc = " / ".join(f"{x / 1024:,.1f} KiB" for x in r["rss_bytes_per_channel"])
        pe = " / ".join(f"{x:,.0f} B" for x in r["rss_bytes_per_event"])
        if r.get("redis_bytes_per_channel"):
            rc = " / ".join(f"{x / 1024:,.1f} KiB" for x in r["redis_bytes_per_channel"])
            re_ = " / ".join(f"{x:,.0f} B" for x in r["redis_bytes_per_event"])
        else:
            rc = re_ = "–"
        out.append(
            f"| {label} | {rss} | {pc} | {pe} | {rc} | {re_} "
            f"| {r.get('event_json_bytes', '–')} "
            f"| {r['fill_s'][0]:g} + {r['fill_s'][1]:g} ({r['triggers_per_s']:,.0f}) |")
    out.append("")
    by = {r["setup"]: r for r in memory if r["status"] == "ok"}
    notes = []
    if "mem-on" in by:
        r = by["mem-on"]
        notes.append(
            f"- In process, a history channel of {size:,} events of {PAYLOAD}-byte data costs "
            f"about {r['rss_bytes_per_channel'][1] / 1024:,.0f} KiB "
            f"({r['rss_bytes_per_event'][1]:,.0f} B per event, for a stored event of "
            f"{r['event_json_bytes']} bytes of JSON: the serialised event with its position, "
            "plus the ring entry (offset, expiry, `Bytes` handle) and the allocator's "
            "overhead). Budget: channels × size × that, e.g. 10,000 busy channels × 1,000 "
            f"events ≈ {r['rss_bytes_per_event'][1] * 1e7 / (1 << 30):,.1f} GiB.")
    if "redis-on" in by:
        r = by["redis-on"]
        notes.append(
            f"- With `--redis` the history lives in Redis: "
            f"{r['redis_bytes_per_channel'][1] / 1024:,.0f} KiB per channel "
            f"({r['redis_bytes_per_event'][1]:,.0f} B per event; `MEMORY USAGE` of one stream "
            f"{(r['redis_stream_memory_usage'] or 0) / 1024:,.0f} KiB; "
            f"{r['redis_keys_added'] // ch} keys per channel: the stream and its meta hash), "
            f"while the node's own RSS moves by {r['rss_bytes_per_channel'][1] / 1024:,.1f} "
            "KiB per channel.")
    if "mem-off" in by:
        r = by["mem-off"]
        notes.append(
            f"- Control, history off: the same fill moves RSS by "
            f"{r['rss_bytes_per_channel'][1] / 1024:,.1f} KiB per channel (nothing kept; this "
            "is the measurement's noise floor).")
    out.extend(notes)
    out.append("")
    return out


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="bench/history.sh",
        description="Channel history: publish cost on vs off, memory per channel "
                    "(see bench/README.md).")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds")
    p.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds")
    p.add_argument("--rate", type=float, default=1000.0, help="events per second")
    p.add_argument("--subscribers", type=int, default=10)
    p.add_argument("--size", type=int, default=1000, help="history size (events per channel)")
    p.add_argument("--channels", type=int, default=1000,
                   help="channels filled in the memory part")
    p.add_argument("--setups", default="mem-off,mem-on,redis-off,redis-on",
                   help="comma list of mem-off, mem-on, redis-off, redis-on (publish cost)")
    p.add_argument("--memory-setups", default="mem-off,mem-on,redis-on",
                   help="comma list of mem-off, mem-on, redis-on (memory part)")
    p.add_argument("--no-memory", action="store_true", help="skip the memory part")
    p.add_argument("--no-cost", action="store_true", help="skip the publish-cost part")
    p.add_argument("--quick", action="store_true",
                   help="1 round of 2 s after 1 s, 100 channels; writes "
                        "bench/results/quick.history.{md,json}")
    p.add_argument("--no-build", action="store_true")
    p.add_argument("--output", help="markdown file whose section is rewritten "
                   "(default BENCHMARKS.md; with --quick bench/results/quick.history.md)")
    p.add_argument("--server-cpu", type=int, default=0)
    p.add_argument("--client-cpu", type=int, default=1)
    a = p.parse_args(argv)
    a.setups = [] if a.no_cost else [s.strip() for s in a.setups.split(",") if s.strip()]
    a.memory_setups = [] if a.no_memory else \
        [s.strip() for s in a.memory_setups.split(",") if s.strip()]
    for s in a.setups:
        if s not in SETUPS:
            p.error(f"unknown setup {s!r}")
    for s in a.memory_setups:
        if s not in MEMORY_SETUPS:
            p.error(f"unknown memory setup {s!r}")
    if a.channels < 1 or a.size < 1 or a.size > 100_000 or a.subscribers < 1:
        p.error("--channels, --subscribers at least 1; --size 1 to 100000")
    if a.quick:
        a.rounds, a.duration, a.warmup, a.channels = 1, 2.0, 1.0, min(a.channels, 100)
    results = os.path.join(ROOT, "bench", "results")
    if a.output is None:
        a.output = (os.path.join(results, "quick.history.md") if a.quick
                    else os.path.join(ROOT, "BENCHMARKS.md"))
    a.json_output = os.path.join(results, "quick.history.json" if a.quick else "history.json")
    return a


def main(argv):
    hb.install_interrupt()
    args = parse_args(argv)
    status = hb.preflight(args, ROOT, DUPLEX, log)
    if status is not None:
        return status
    # This runner (and the REST fill of the memory part) stays off the servers' core.
    os.sched_setaffinity(0, {args.client_cpu})
    commit = hb.commit_label(ROOT)
    command_argv = os.environ.get("DUPLEX_HISTORY_BENCH_ARGV", "")
    meta = {
        "date": hb.now_utc(),
        "command": "bench/history.sh" + (" " + command_argv if command_argv else ""),
        "machine": hb.machine(topology=True),
        "commit": commit,
        "rounds": args.rounds,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "rate": args.rate,
        "subscribers": args.subscribers,
        "size": args.size,
        "ttl_s": TTL_S,
        "memory_channels": args.channels,
        "server_cpu": args.server_cpu,
        "client_cpu": args.client_cpu,
        "setups": args.setups,
        "memory_setups": args.memory_setups,
        "json_output": os.path.relpath(args.json_output, ROOT),
    }
    results, memory = [], []
    run_id = str(int(time.time()))
    with tempfile.TemporaryDirectory(prefix="history-bench-") as tmp:
        configs = {h: write_config(tmp, h, args.size) for h in (False, True)}
        redis = Redis(tmp, args.server_cpu, timeout=30)
        try:
            meta["redis_version"] = redis.version()
            meta["redis_idle_cpu_us_per_s"] = hb.measure_redis_idle(redis, log)
            for rnd in range(1, args.rounds + 1 if args.setups else 1):
                k = (rnd - 1) % len(args.setups)
                for name in args.setups[k:] + args.setups[:k]:
                    results.append(measure(name, rnd, args, redis, tmp, run_id, configs))
            for name in args.memory_setups:
                memory.append(measure_memory(name, args, redis, tmp, run_id, configs))
        finally:
            stop(redis.proc)
    summary = summarize(results)
    os.makedirs(os.path.dirname(args.json_output), exist_ok=True)
    with open(args.json_output, "w") as f:
        json.dump({"meta": meta, "summary": summary, "measurements": results,
                   "memory": memory}, f, indent=1)
        f.write("\n")
    hb.write_section(args.output, BEGIN, END, markdown(meta, summary, results, memory))
    log(f"wrote {os.path.relpath(args.output, ROOT)} and {meta['json_output']}")
    ok = all(r["status"] == "ok" for r in results + memory)
    return 0 if ok else 1


if __name__ == "__main__":
    hb.run_main(main, log)
PY
