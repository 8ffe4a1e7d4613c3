#!/usr/bin/env python3
"""Ask a running wstest fuzzingserver to (re)write its reports for an agent.

Used by run.sh after the testee client has exited, so that the cases the
client did run are reported even if it crashed before requesting
/updateReports itself (run.sh still counts that as a failure). A minimal,
stdlib-only WebSocket handshake: GET /updateReports?agent=AGENT, then wait
for the server's close frame (sent after the reports are written).

usage: update_reports.py PORT AGENT [TIMEOUT_SECONDS]
"""

import base64
import os
import socket
import sys
import time
import urllib.parse


def main():
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    port = int(sys.argv[1])
    agent = sys.argv[2]
    timeout = float(sys.argv[3]) if len(sys.argv) > 3 else 60.0
    deadline = time.monotonic() + timeout
    key = base64.b64encode(os.urandom(16)).decode()
    path = "/updateReports?agent=" + urllib.parse.quote(agent, safe="")
    req = (
        "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n"
        % (path, port, key)
    )
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(req.encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            s.settimeout(max(0.1, deadline - time.monotonic()))
            chunk = s.recv(4096)
            if not chunk:
                print("update_reports: connection closed during handshake", file=sys.stderr)
                return 1
            buf += chunk
        head, _, rest = buf.partition(b"\r\n\r\n")
        status = head.split(b"\r\n", 1)[0]
        if b" 101 " not in status + b" ":
            print("update_reports: handshake refused: %r" % status, file=sys.stderr)
            return 1
        # read frames until a close frame (opcode 8) arrives
        buf = rest
        while True:
            while len(buf) >= 2:
                b0, b1 = buf[0], buf[1]
                n = b1 & 0x7F
                hdr = 2
                if n == 126:
                    if len(buf) < 4:
                        break
                    n = int.from_bytes(buf[2:4], "big")
                    hdr = 4
                elif n == 127:
                    if len(buf) < 10:
                        break
                    n = int.from_bytes(buf[2:10], "big")
                    hdr = 10
                if len(buf) < hdr + n:
                    break
                if b0 & 0x0F == 8:
                    # echo a masked close (no status code) and finish
                    s.sendall(bytes([0x88, 0x80]) + os.urandom(4))
                    return 0
                buf = buf[hdr + n:]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                print("update_reports: timed out waiting for the server's close", file=sys.stderr)
                return 1
            s.settimeout(remaining)
            chunk = s.recv(65536)
            if not chunk:
                return 0  # server dropped after writing reports
            buf += chunk


if __name__ == "__main__":
    sys.exit(main())
