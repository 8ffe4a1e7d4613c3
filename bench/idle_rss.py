#!/usr/bin/env python3
"""Server RSS per idle WebSocket connection.

    python3 bench/idle_rss.py [--connections 15000] [--server-cpu 0] [--client-cpu 1]
        [--duplex PATH] [--json] -- SERVER_ARGV...

SERVER_ARGV contains the token {addr}, replaced with 127.0.0.1:PORT (a free port), e.g.
    python3 bench/idle_rss.py -- target/release/duplex echo --threads 1 --listen {addr}

Starts the server pinned with taskset, waits for its port, opens and closes one warm-up
connection and reads the server's VmRSS (the baseline); then opens the connections from several
`duplex bench --idle` client processes (at most 6000 each, at least 3, each from its own
127.0.0.x source addresses: the open-files limit is per process), waits until all report, lets
things settle for 2 s, reads VmRSS again and stops clients and server.
Exits non-zero with a message if the server died or fewer than 99% of the connections opened.
Python 3 standard library only.
"""

import argparse
import json
import math
import os
import queue
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

MAX_PER_CLIENT = 6000
MIN_CLIENTS = 3
# Source addresses per client process: 127.0.0.(2 + i*SOURCES_PER_CLIENT)...
SOURCES_PER_CLIENT = 8
SETTLE_S = 2.0
PORT_WAIT_S = 15.0
CLIENT_EXIT_S = 30.0
SERVER_EXIT_S = 10.0
# Clients hold at most this long even if this script is killed without closing their stdin.
CLIENT_HOLD = "900s"
REQUIRED_FRACTION = 0.99


class Failure(Exception):
    """A measurement that cannot be trusted; the message says why."""


def repo_root():
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def vm_rss_bytes(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    parts = line.split()
                    # "VmRSS:   1234 kB"
                    return int(parts[1]) * 1024
    except FileNotFoundError:
        pass
    raise Failure(f"cannot read VmRSS of pid {pid} (did the server exit?)")


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def tail(path, lines=20):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


class Server:
    def __init__(self, argv, cpu, log_path):
        self.log_path = log_path
        self.log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            ["taskset", "-c", str(cpu)] + argv,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            preexec_fn=raise_nofile,
        )

    @property
    def pid(self):
        # taskset execs the command: same pid.
        return self.proc.pid

    def check_alive(self, when):
        if self.proc.poll() is not None:
            raise Failure(
                f"the server exited (status {self.proc.returncode}) {when}; its output:\n"
                + tail(self.log_path)
            )

    def wait_port(self, port):
        deadline = time.monotonic() + PORT_WAIT_S
        while time.monotonic() < deadline:
            self.check_alive("before listening")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise Failure(f"the server did not listen on 127.0.0.1:{port} within {PORT_WAIT_S}s")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(SERVER_EXIT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


class Client:
    """One `duplex bench --idle` process; its established line is read by a thread."""

    def __init__(self, duplex, url, count, sources, cpu, index, log_dir):
        self.count = count
        self.lines = queue.Queue()
        self.log_path = os.path.join(log_dir, f"client-{index}.log")
        self.log = open(self.log_path, "wb")
        argv = [
            "taskset", "-c", str(cpu), duplex, "bench", url, "--idle",
            "-c", str(count), "--source", sources, "--duration", CLIENT_HOLD,
            "--connect-timeout", "10s", "--json",
        ]
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            preexec_fn=raise_nofile,
        )
        threading.Thread(target=self._read, daemon=True).start()
        self.result = None

    def _read(self):
        for raw in self.proc.stdout:
            self.lines.put(raw.decode(errors="replace"))
        self.lines.put(None)

    def wait_established(self, deadline):
        while self.result is None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Failure(f"a client did not report within the time allowed; see {self.log_path}")
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise Failure(
                    f"a client exited (status {self.proc.wait()}) before reporting; its output:\n"
                    + tail(self.log_path)
                )
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("event") == "established":
                self.result = event
        return self.result

    def close_stdin(self):
        try:
            self.proc.stdin.close()
        except OSError:
            pass

    def stop(self, deadline):
        self.close_stdin()
        try:
            self.proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def spread(total, parts):
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def measure(args, server_argv):
    if not os.access(args.duplex, os.X_OK):
        raise Failure(f"{args.duplex} is not an executable (build it: cargo build --release -p duplex-cli)")
    port = free_port()
    addr = f"127.0.0.1:{port}"
    url = f"ws://{addr}/"
    argv = [tok.replace("{addr}", addr) for tok in server_argv]
    if argv == server_argv:
        raise Failure("SERVER_ARGV must contain {addr} (the address to listen on)")
    n_clients = max(MIN_CLIENTS, math.ceil(args.connections / MAX_PER_CLIENT))
    if 2 + n_clients * SOURCES_PER_CLIENT > 255:
        raise Failure(f"too many client processes ({n_clients}) for the 127.0.0.x source ranges")

    log_dir = tempfile.mkdtemp(prefix="idle_rss.")
    server = Server(argv, args.server_cpu, os.path.join(log_dir, "server.log"))
    clients = []
    try:
        server.wait_port(port)
        # Warm-up: one connection opened and closed, so one-time allocations (runtime, accept
        # path, first task) are in the baseline.
        warm = Client(args.duplex, url, 1, "127.0.0.2", args.client_cpu, "warmup", log_dir)
        try:
            result = warm.wait_established(time.monotonic() + 30)
            if result.get("connections") != 1:
                raise Failure(f"the warm-up connection failed; see {warm.log_path}")
        finally:
            warm.stop(time.monotonic() + CLIENT_EXIT_S)
        time.sleep(0.5)
        server.check_alive("after the warm-up connection")
        baseline = vm_rss_bytes(server.pid)

        counts = [c for c in spread(args.connections, n_clients) if c > 0]
        for i, count in enumerate(counts):
            first = 2 + i * SOURCES_PER_CLIENT
            sources = f"127.0.0.{first}-127.0.0.{first + SOURCES_PER_CLIENT - 1}"
            clients.append(Client(args.duplex, url, count, sources, args.client_cpu, i, log_dir))
        # Each attempt is bounded by the connect timeout (10 s) at 64 in flight per client.
        deadline = time.monotonic() + 60 + args.connections / 100
        opened = failed = 0
        for c in clients:
            r = c.wait_established(deadline)
            opened += int(r.get("connections", 0))
            failed += int(r.get("failed", 0))
        time.sleep(SETTLE_S)
        server.check_alive("while the connections were open")
        rss = vm_rss_bytes(server.pid)
        for c in clients:
            if c.proc.poll() is not None:
                raise Failure(f"a client exited while holding its connections; see {c.log_path}")
    finally:
        stop_by = time.monotonic() + CLIENT_EXIT_S
        for c in clients:
            c.close_stdin()
        for c in clients:
            c.stop(stop_by)
        alive = server.proc.poll() is None
        server.stop()
    if not alive:
        raise Failure("the server exited while the clients were closing; output:\n" + tail(server.log_path))
    result = {
        "connections": opened,
        "failed": failed,
        "baseline_rss_bytes": baseline,
        "rss_bytes": rss,
        "per_connection_bytes": (rss - baseline) / opened if opened else None,
        "client_processes": len(clients),
    }
    if opened < REQUIRED_FRACTION * args.connections:
        sample = tail(clients[0].log_path, 8) if clients else ""
        raise Failure(
            f"only {opened} of {args.connections} connections opened ({failed} failed); "
            f"logs in {log_dir}:\n{sample}\n{json.dumps(result)}"
        )
    return result


def main():
    argv = sys.argv[1:]
    if "--" not in argv:
        print("usage: idle_rss.py [options] -- SERVER_ARGV... (containing {addr})", file=sys.stderr)
        return 2
    split = argv.index("--")
    ours, server_argv = argv[:split], argv[split + 1:]
    p = argparse.ArgumentParser(description="Server RSS per idle WebSocket connection.")
    p.add_argument("--connections", type=int, default=15000)
    p.add_argument("--server-cpu", type=int, default=0)
    p.add_argument("--client-cpu", type=int, default=1)
    p.add_argument(
        "--duplex",
        default=os.path.join(repo_root(), "target", "release", "duplex"),
        help="the duplex binary whose `bench --idle` opens the connections",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(ours)
    if not server_argv:
        p.error("SERVER_ARGV is missing after --")
    if not 1 <= args.connections <= 100000:
        p.error("--connections must be 1..=100000")
    raise_nofile()
    try:
        result = measure(args, server_argv)
    except Failure as e:
        print(f"idle_rss: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"{result['connections']} idle connections ({result['failed']} failed) over "
            f"{result['client_processes']} client processes: server RSS "
            f"{result['baseline_rss_bytes'] / 1024:.0f} KiB -> {result['rss_bytes'] / 1024:.0f} KiB, "
            f"{result['per_connection_bytes']:.0f} bytes per connection"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
