"""Helpers shared by the hub benchmarks that run `duplex serve` (and redis-server) against
`duplex bench`. Python 3 standard library only.

Used by bench/cluster.sh (cluster fan-out) and bench/history.sh (channel history): their
embedded Python puts bench/lib on sys.path and imports this module as `hb`.

It provides
  - make_log(name): a logger printing "[name HH:MM:SS] msg" to stderr;
  - processes: _die_with_parent (PR_SET_PDEATHSIG in the child), free_port, spawn (pinned with
    taskset, DUPLEX_* environment dropped, DUPLEX_LOG=warn), stop (SIGTERM, then SIGKILL),
    tail (last lines of a log), sh (a command's stdout, "" on failure);
  - start_node: one `duplex serve` (optionally with --config / --redis), waited for on /ready;
    run_client: one `duplex bench` pinned to the client's CPU, with a deadline;
  - Redis: a redis-server without persistence and a small RESP client (command, info,
    commandstats, publish_stats, publish_calls, cpu_s, numsub, used_memory, version),
    measure_redis_idle (its idle CPU per second);
  - CPU accounting from /proc: core_ticks, process_ticks, other_load;
  - the report: machine(), median, span, fmt, write_section (rewrites the part of a markdown
    file between two markers), commit_label, now_utc;
  - the runner: preflight (tools, build, binary, CPUs), install_interrupt and run_main
    (SIGTERM/SIGINT unwind through the cleanup; exit 130).
"""

import datetime
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request

PORT_WAIT_S = 15.0
STOP_S = 5.0


def make_log(name):
    def log(msg):
        print(f"[{name} {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    return log


# ---------------------------------------------------------------------------------------------
# Processes


def _die_with_parent():
    """In the child: SIGTERM when this runner dies (PR_SET_PDEATHSIG), so nothing outlives it."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc, grace=STOP_S):
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
            lines = [l.rstrip() for l in f if l.strip()]
        return " | ".join(lines[-n:])
    except OSError:
        return ""


def sh(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def spawn(argv, logfile, cpu):
    env = {k: v for k, v in os.environ.items() if not k.startswith("DUPLEX_")}
    env["DUPLEX_LOG"] = "warn"
    return subprocess.Popen(
        ["taskset", "-c", str(cpu)] + argv,
        stdin=subprocess.DEVNULL,
        stdout=logfile,
        stderr=subprocess.STDOUT,
        env=env,
        preexec_fn=_die_with_parent,
    )


def start_node(duplex, logpath, cpu, redis=None, prefix=None, config=None, name="node"):
    """`duplex serve` on a free port (with `config`, and with `redis` under key `prefix`),
    pinned to `cpu`; returns (proc, port, logpath) once /ready answers 200 (with Redis: once
    the node is registered)."""
    port = free_port()
    argv = [duplex, "serve"]
    if config is not None:
        argv += ["--config", config]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--no-demo"]
    if redis is not None:
        argv += ["--redis", redis.url, "--redis-prefix", prefix]
    with open(logpath, "w") as logfile:
        proc = spawn(argv, logfile, cpu)
    deadline = time.monotonic() + PORT_WAIT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=1) as r:
                if r.status == 200:
                    return proc, port, logpath
        except OSError:
            pass
        time.sleep(0.05)
    stop(proc)
    raise RuntimeError(f"{name} did not become ready: {tail(logpath)}")


def run_client(argv, cpu, out_path, timeout_s, watch=None):
    """Runs `argv` (duplex bench) pinned to `cpu`, stdout to `out_path`, stderr to
    `out_path`.err; `watch(client, deadline)`, if given, runs while it does and its result is
    returned. RuntimeError if it is still running `timeout_s` after the start."""
    with open(out_path, "w") as out, open(out_path + ".err", "w") as err:
        client = subprocess.Popen(["taskset", "-c", str(cpu)] + argv,
                                  stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                  preexec_fn=_die_with_parent)
        deadline = time.monotonic() + timeout_s
        seen = watch(client, deadline) if watch is not None else {}
        while client.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        if client.poll() is None:
            client.kill()
            client.wait()
            raise RuntimeError("duplex bench did not finish in time")
    return seen


# ---------------------------------------------------------------------------------------------
# Redis


class Redis:
    """redis-server without persistence, pinned to the servers' CPU; RESP over a socket
    (one connection per command, `timeout` seconds)."""

    def __init__(self, tmp, cpu, timeout=5):
        self.port = free_port()
        self.timeout = timeout
        self.log = os.path.join(tmp, "redis.log")
        self.proc = spawn(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--protected-mode", "no", "--dir", tmp,
             "--logfile", self.log],
            subprocess.DEVNULL, cpu)
        deadline = time.monotonic() + PORT_WAIT_S
        while time.monotonic() < deadline:
            try:
                if self.command("PING") == "PONG":
                    return
            except OSError:
                pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start: {tail(self.log)}")

    @property
    def pid(self):
        return self.proc.pid  # taskset execs redis-server: same pid

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self, *args):
        req = f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)
        with socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout) as s:
            s.sendall(req.encode())
            f = s.makefile("rb")
            return self._reply(f)

    def _reply(self, f):
        line = f.readline().decode().rstrip("\r\n")
        kind, rest = line[:1], line[1:]
        if kind == "+":
            return rest
        if kind == "-":
            raise OSError(f"redis: {rest}")
        if kind == ":":
            return int(rest)
        if kind == "$":
            n = int(rest)
            if n < 0:
                return None
            data = f.read(n + 2)
            return data[:-2].decode(errors="replace")
        if kind == "*":
            return [self._reply(f) for _ in range(int(rest))]
        raise OSError(f"redis: unexpected reply {line!r}")

    def info(self, section):
        return dict(l.split(":", 1) for l in self.command("INFO", section).splitlines()
                    if ":" in l and not l.startswith("#"))

    def commandstats(self):
        """{command: (calls, usec)} so far (INFO commandstats; commands a script runs count
        too, under their own names)."""
        out = {}
        for name, value in self.info("commandstats").items():
            fields = dict(kv.split("=", 1) for kv in value.split(","))
            out[name.removeprefix("cmdstat_")] = (int(fields["calls"]), int(fields["usec"]))
        return out

    def publish_stats(self):
        """(calls, usec) of PUBLISH so far (INFO commandstats)."""
        return self.commandstats().get("publish", (0, 0))

    def publish_calls(self):
        return self.publish_stats()[0]

    def cpu_s(self):
        """used_cpu_user + used_cpu_sys of redis-server (getrusage: microsecond resolution)."""
        info = self.info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])

    def numsub(self, channel):
        reply = self.command("PUBSUB", "NUMSUB", channel)
        return int(reply[1])

    def used_memory(self):
        return int(self.info("memory")["used_memory"])

    def version(self):
        return self.info("server").get("redis_version", "?").strip()


def measure_redis_idle(redis, log, seconds=3.0):
    """CPU an idle redis-server uses (its timers): sets redis.idle_cpu_per_s and returns it in
    µs per second, rounded to 0.1."""
    a = redis.cpu_s()
    time.sleep(seconds)
    redis.idle_cpu_per_s = (redis.cpu_s() - a) / seconds
    us = round(redis.idle_cpu_per_s * 1e6, 1)
    log(f"redis-server idle: {us} µs of CPU per second")
    return us


# ---------------------------------------------------------------------------------------------
# CPU accounting


def core_ticks():
    """{cpu index: (busy, total)} clock ticks since boot, from /proc/stat."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            name, *fields = line.split()
            if name.startswith("cpu") and name[3:].isdigit():
                v = [int(x) for x in fields[:8]]
                out[int(name[3:])] = (sum(v) - v[3] - v[4], sum(v))
    return out


def process_ticks(pid):
    """utime + stime of a process and its threads, in clock ticks (None once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return None


def other_load(before, after, cpu, own_ticks):
    """Share of `cpu` used by processes other than ours between two core_ticks() samples."""
    try:
        busy = after[cpu][0] - before[cpu][0]
        total = after[cpu][1] - before[cpu][1]
    except KeyError:
        return None
    if total <= 0:
        return None
    return round(min(1.0, max(0.0, (busy - own_ticks) / total)), 3)


# ---------------------------------------------------------------------------------------------
# Report


def machine(topology=False):
    """The machine, for the report; with `topology` also threads per core and the hypervisor
    (lscpu)."""
    lscpu = {}
    for line in sh(["lscpu"]).splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            lscpu[k.strip()] = v.strip()
    mem_kib = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    out = {
        "cpu_model": lscpu.get("Model name") or platform.processor() or "unknown",
        "cores": os.cpu_count(),
    }
    if topology:
        out["threads_per_core"] = lscpu.get("Thread(s) per core")
        out["hypervisor"] = lscpu.get("Hypervisor vendor")
    out.update({
        "memory_gib": round(mem_kib / (1 << 20), 1),
        "kernel": platform.release(),
        "rustc": sh(["rustc", "--version"]),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    })
    return out


def median(rows, key):
    vals = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def span(rows, key):
    vals = [r[key] for r in rows if r.get(key) is not None]
    return (min(vals), max(vals)) if vals else None


def fmt(x, digits=2, thousands=False):
    if x is None:
        return "–"
    if thousands:
        return f"{x:,.0f}"
    return f"{x:.{digits}f}"


def write_section(path, begin, end, section):
    """Replaces the text from `begin` to `end` (the markers) of the markdown file `path` with
    `section` (which carries the markers), or appends it if the markers are not there."""
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        text = "# Benchmarks\n"
    start, stop_ = text.find(begin), text.find(end)
    if start != -1 and stop_ != -1 and stop_ > start:
        text = text[:start] + section + text[stop_ + len(end):].lstrip("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    with open(path, "w") as f:
        f.write(text)


def commit_label(root):
    """Short HEAD commit, noting uncommitted changes under crates/."""
    commit = sh(["git", "-C", root, "rev-parse", "--short", "HEAD"])
    if sh(["git", "-C", root, "status", "--porcelain", "--untracked-files=no", "--", "crates"]):
        commit += " (plus uncommitted changes under crates/)"
    return commit


def now_utc():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


# ---------------------------------------------------------------------------------------------
# Runner


def preflight(args, root, duplex, log):
    """taskset and redis-server installed, duplex built (unless --no-build), the two CPUs
    there. Returns None when all is well, else the exit status (2), having logged why."""
    for tool in ["taskset", "redis-server"]:
        if not sh(["sh", "-c", f"command -v {tool}"]):
            log(f"error: {tool} is not installed (redis-server: apt-get install redis-server)")
            return 2
    if not args.no_build:
        log("building (cargo build --release -p duplex-cli)")
        if subprocess.run(["cargo", "build", "--release", "-p", "duplex-cli"],
                          cwd=root).returncode != 0:
            log("error: the build failed")
            return 2
    if not os.access(duplex, os.X_OK):
        log(f"error: {duplex} is not built")
        return 2
    if os.cpu_count() and max(args.server_cpu, args.client_cpu) >= os.cpu_count():
        log(f"error: CPUs {args.server_cpu} and {args.client_cpu} needed")
        return 2
    return None


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def install_interrupt():
    """SIGTERM and SIGINT raise KeyboardInterrupt, so they unwind through the cleanup."""
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)


def run_main(main, log):
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt as e:
        log(f"interrupted ({e})")
        sys.exit(130)
