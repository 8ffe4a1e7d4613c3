#!/usr/bin/env python3
"""Python `websockets` peer of duplex's interop tests (crates/duplex/tests/interop.rs).

    peer.py client URL --scenario NAME [--origin ORIGIN] [--tls CA_FILE]
    peer.py server --port 0 --scenario NAME [--cert CHAIN_FILE --key KEY_FILE]

A wss:// URL makes the client speak TLS, trusting CA_FILE only (`--tls`) or, without it,
Python's default roots (scenario `tls-untrusted`: duplex's certificate must be refused).
`--cert/--key` make the server speak TLS with that certificate chain (leaf first) and key.

Each scenario is one scripted dialogue with duplex (see tests/interop/README.md). The peer
checks what duplex does and prints JSON lines on stdout:

    {"event": "listening", "port": N}              server mode, once bound
    {"event": "result", "ok": true, ...}           always last; ok=false with "error"

and exits 0 when its checks passed, 1 otherwise. Everything else goes to stderr.
"""

import argparse
import asyncio
import http
import json
import os
import ssl
import sys
import traceback

import websockets
from websockets.asyncio.client import connect
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.extensions.permessage_deflate import (
    ClientPerMessageDeflateFactory,
    ServerPerMessageDeflateFactory,
)

STEP = 20.0  # seconds allowed for any single wait
TOTAL = 90.0  # hard limit for the whole run: never linger

# ---------------------------------------------------------------- shared test data
# Must match crates/duplex/tests/interop_support/mod.rs, peer.js and web/index.html.
TEXT = "hello, ünïcødé ✓"
US_TEXT = "duplex says hi ✓"
BIN_A = bytes(range(256))
BIN_B = bytes(reversed(range(256)))
US_BIN = b"\x00\xffduplex"
FRAG_TEXT = "fragmented ✓ text"
FRAG_TEXT_PARTS = ["frag", "mented ✓", " text"]
FRAG_BIN = bytes(range(1, 10))
US_FRAG_TEXT = "split ✓ code point"
MIB = 1 << 20
RANDOM_LEN = 256 << 10
SMALL = "hello hello hello"
ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789 "


def pattern(n):
    """Binary test pattern: byte i = (31 i + (i >> 11)) mod 256."""
    return bytes(((i * 31) + (i >> 11)) & 0xFF for i in range(n))


def text_pattern(n):
    """ASCII test text: char i = ALPHABET[(7 i + i // 1000) mod 37]."""
    return "".join(ALPHABET[(i * 7 + i // 1000) % 37] for i in range(n))


class Fail(Exception):
    """The other side (duplex) did something the scenario does not allow."""


def log(*args):
    print("[python peer]", *args, file=sys.stderr, flush=True)


def emit(**obj):
    print(json.dumps(obj), flush=True)


def describe(data):
    if isinstance(data, str):
        head = data[:40]
        return f"text({len(data.encode())} bytes: {head!r}{'...' if len(data) > 40 else ''})"
    head = data[:16].hex()
    return f"binary({len(data)} bytes: {head}{'...' if len(data) > 16 else ''})"


def expect(got, want, what):
    if type(got) is not type(want) or got != want:
        raise Fail(f"{what}: expected {describe(want)}, got {describe(got)}")


async def recv(ws, what):
    try:
        return await asyncio.wait_for(ws.recv(), STEP)
    except asyncio.TimeoutError:
        raise Fail(f"timed out after {STEP}s waiting for {what}") from None
    except ConnectionClosed as e:
        raise Fail(f"connection closed while waiting for {what}: {e}") from None


async def close(ws, code, reason, info):
    """Start the closing handshake and record duplex's answering close frame."""
    await asyncio.wait_for(ws.close(code, reason), STEP)
    rcvd = ws.protocol.close_rcvd
    if rcvd is None:
        raise Fail(f"closed with {code} {reason!r} but duplex never answered with a close frame")
    info["close"] = {"code": rcvd.code, "reason": rcvd.reason}


async def await_close(ws, info):
    """Wait for duplex to close; record its close frame."""
    try:
        extra = await asyncio.wait_for(ws.recv(), STEP)
        raise Fail(f"expected duplex to close, got a message {describe(extra)}")
    except asyncio.TimeoutError:
        raise Fail(f"timed out after {STEP}s waiting for duplex's close frame") from None
    except ConnectionClosed as e:
        if e.rcvd is None:
            raise Fail(f"connection ended without a close frame from duplex: {e}") from None
        info["close"] = {"code": e.rcvd.code, "reason": e.rcvd.reason}
        info["clean"] = e.rcvd_then_sent is not None
    await asyncio.wait_for(ws.wait_closed(), STEP)


# ---------------------------------------------------------------- scenarios
# Each takes the open connection and a dict to fill with what the Rust side should check.


async def sc_text(ws, info):
    await ws.send(TEXT)
    expect(await recv(ws, "echo of our text"), TEXT, "echo of our text")
    expect(await recv(ws, "duplex's text"), US_TEXT, "duplex's text")
    await close(ws, 1000, "done", info)


async def sc_binary(ws, info):
    await ws.send(BIN_A)
    expect(await recv(ws, "echo of binary A"), BIN_A, "echo of binary A")
    await ws.send(BIN_B)
    expect(await recv(ws, "echo of binary B"), BIN_B, "echo of binary B")
    expect(await recv(ws, "duplex's binary"), US_BIN, "duplex's binary")
    await close(ws, 1000, "done", info)


async def sc_empty(ws, info):
    await ws.send("")
    expect(await recv(ws, "echo of empty text"), "", "echo of empty text")
    await ws.send(b"")
    expect(await recv(ws, "echo of empty binary"), b"", "echo of empty binary")
    await close(ws, 1000, "done", info)


async def sc_large(ws, info):
    big = pattern(MIB)
    await ws.send(big)
    expect(await recv(ws, "echo of 1 MiB binary"), big, "echo of 1 MiB binary")
    expect(await recv(ws, "duplex's 1 MiB text"), text_pattern(MIB), "duplex's 1 MiB text")
    await close(ws, 1000, "done", info)


async def sc_fragments(ws, info):
    # websockets sends an iterable as one fragmented message, one frame per item.
    await ws.send(FRAG_TEXT_PARTS)
    await ws.send([FRAG_BIN[0:3], FRAG_BIN[3:6], FRAG_BIN[6:9]])
    expect(await recv(ws, "duplex's fragmented text"), US_FRAG_TEXT, "duplex's fragmented text")
    expect(await recv(ws, "duplex's streamed binary"), pattern(3000), "duplex's streamed binary")
    await close(ws, 1000, "done", info)


async def sc_ping(ws, info):
    # duplex pings us first; websockets answers automatically and duplex says when it saw it.
    expect(await recv(ws, "duplex's 'got-pong'"), "got-pong", "duplex's 'got-pong'")
    waiter = await ws.ping(b"peer-ping")
    try:
        await asyncio.wait_for(waiter, STEP)
    except asyncio.TimeoutError:
        raise Fail("duplex never answered our ping 'peer-ping' with a pong") from None
    info["pong_received"] = True
    await ws.send("done")
    await close(ws, 1000, "done", info)


async def sc_subprotocol(ws, info):
    info["protocol"] = ws.subprotocol
    if ws.subprotocol != "v1":
        raise Fail(f"expected subprotocol 'v1', negotiated {ws.subprotocol!r}")
    await ws.send(ws.subprotocol)
    expect(await recv(ws, "duplex's subprotocol"), "v1", "duplex's subprotocol")
    await close(ws, 1000, "done", info)


async def sc_subprotocol_none(ws, info):
    info["outcome"] = "open"
    info["protocol"] = ws.subprotocol
    await ws.send(f"open:{ws.subprotocol or 'none'}")
    await close(ws, 1000, "done", info)


async def sc_close_by_peer(ws, info):
    await close(ws, 4001, "bye", info)


async def sc_close_by_us(ws, info):
    await ws.send("ready")
    await await_close(ws, info)


async def deflate_dialogue(ws, info):
    exts = ws.protocol.extensions
    info["extensions"] = [repr(e) for e in exts]
    if not any(e.name == "permessage-deflate" for e in exts):
        raise Fail(f"permessage-deflate was not negotiated (extensions: {exts!r})")
    # Phase 1: we send, duplex echoes, we compare.
    messages = [SMALL, SMALL, "", text_pattern(MIB), pattern(MIB), os.urandom(RANDOM_LEN)]
    for i, m in enumerate(messages):
        await ws.send(m)
        expect(await recv(ws, f"echo of message {i}"), m, f"echo of message {i}")
    # Phase 2: duplex sends, we echo, duplex compares.
    await ws.send("your-turn")
    for i in range(4):
        await ws.send(await recv(ws, f"duplex's message {i}"))
    await close(ws, 1000, "done", info)


SCENARIOS = {
    "text": sc_text,
    "binary": sc_binary,
    "empty": sc_empty,
    "large": sc_large,
    "fragments": sc_fragments,
    "ping": sc_ping,
    "subprotocol": sc_subprotocol,
    "subprotocol-none": sc_subprotocol_none,
    "close-by-peer": sc_close_by_peer,
    "close-by-us": sc_close_by_us,
    "reject-origin": None,  # client only: the handshake must be refused
    "reject-403": None,  # server only: we refuse the handshake
    "deflate": deflate_dialogue,
    "deflate-no-takeover": deflate_dialogue,
    "deflate-server-no-takeover": deflate_dialogue,
    "deflate-peer-no-takeover": deflate_dialogue,
    "tls-untrusted": None,  # the TLS handshake must fail (see run_client, run_untrusted_server)
}


def common_options(scenario):
    opts = {"max_size": 16 * MIB, "ping_interval": None, "close_timeout": STEP}
    if scenario == "deflate-peer-no-takeover":
        opts["compression"] = None
    elif scenario.startswith("deflate"):
        opts["compression"] = "deflate"  # websockets' defaults
    else:
        opts["compression"] = None
    return opts


def record_tls(transport, info):
    """What TLS the connection runs over (None over ws://)."""
    ssl_object = transport.get_extra_info("ssl_object")
    info["tls"] = ssl_object.version() if ssl_object else None


# ---------------------------------------------------------------- client mode
async def run_client(args, info):
    scenario = args.scenario
    opts = common_options(scenario)
    if scenario == "deflate-peer-no-takeover":
        opts["extensions"] = [
            ClientPerMessageDeflateFactory(
                server_no_context_takeover=True,
                client_no_context_takeover=True,
                compress_settings={"memLevel": 5},
            )
        ]
    if scenario in ("subprotocol", "subprotocol-none"):
        opts["subprotocols"] = ["v2", "v1"]
    if args.tls:
        opts["ssl"] = ssl.create_default_context(cafile=args.tls)
    try:
        ws = await connect(
            args.url, origin=args.origin, proxy=None, open_timeout=STEP, **opts
        )
    except ssl.SSLCertVerificationError as e:
        info["outcome"] = "failed"
        info["cert_error"] = e.verify_message
        info["error"] = str(e)
        if scenario == "tls-untrusted":
            return
        raise Fail(f"TLS handshake failed: {e}") from None
    except InvalidStatus as e:
        info["outcome"] = "refused"
        info["status"] = e.response.status_code
        info["error"] = str(e)
        if scenario in ("reject-origin", "subprotocol-none"):
            return
        raise Fail(f"handshake refused: {e}") from None
    except InvalidHandshake as e:
        info["outcome"] = "failed"
        info["error"] = f"{type(e).__name__}: {e}"
        if scenario == "subprotocol-none":
            return
        raise Fail(f"handshake failed: {e}") from None
    if scenario == "reject-origin":
        await ws.close()
        raise Fail("duplex accepted a handshake from a forbidden origin")
    if scenario == "tls-untrusted":
        await ws.close()
        raise Fail("the certificate of a CA we were not told to trust was accepted")
    record_tls(ws.transport, info)
    async with ws:
        await SCENARIOS[scenario](ws, info)


# ---------------------------------------------------------------- server mode
def server_tls_context(args, info):
    """TLS with --cert/--key (None without), recording the SNI the client sends."""
    if not args.cert:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(args.cert, args.key)

    def sni(_ssl_object, name, _ctx):
        info["sni"] = name

    ctx.sni_callback = sni
    return ctx


async def run_untrusted_server(args, info, ctx):
    """tls-untrusted: our certificate is from a CA duplex does not trust, so duplex must abort
    the TLS handshake. websockets never hears of a connection whose TLS handshake failed
    (asyncio drops it silently), so this runs the server side of the TLS handshake itself,
    with the SSL context serve() would get, to report how duplex aborted it."""
    loop = asyncio.get_running_loop()
    accepted = asyncio.Queue()

    class Held(asyncio.Protocol):
        def connection_made(self, transport):
            # Read nothing before start_tls: the ClientHello must reach the TLS layer.
            transport.pause_reading()
            accepted.put_nowait(transport)

    server = await loop.create_server(Held, "127.0.0.1", args.port)
    async with server:
        emit(event="listening", port=server.sockets[0].getsockname()[1])
        transport = await asyncio.wait_for(accepted.get(), STEP)
        try:
            await loop.start_tls(
                transport, asyncio.Protocol(), ctx, server_side=True, ssl_handshake_timeout=STEP
            )
        except ssl.SSLError as e:
            info["outcome"] = "failed"
            info["tls_error"] = str(e)
            return
        finally:
            transport.close()
        raise Fail("duplex accepted a certificate from a CA it does not trust")


async def run_server(args, info):
    scenario = args.scenario
    ctx = server_tls_context(args, info)
    if scenario == "tls-untrusted":
        if ctx is None:
            raise Fail("tls-untrusted needs --cert and --key")
        return await run_untrusted_server(args, info, ctx)
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    opts = common_options(scenario)
    if scenario == "deflate-peer-no-takeover":
        opts["extensions"] = [
            ServerPerMessageDeflateFactory(
                server_no_context_takeover=True,
                client_no_context_takeover=True,
                server_max_window_bits=12,
                client_max_window_bits=12,
                compress_settings={"memLevel": 5},
            )
        ]
    if scenario in ("subprotocol", "subprotocol-none"):
        opts["subprotocols"] = ["v1"]

    def process_request(conn, request):
        info["request_path"] = request.path
        info["request_extensions"] = request.headers.get("Sec-WebSocket-Extensions")
        info["request_protocols"] = request.headers.get("Sec-WebSocket-Protocol")
        if scenario == "reject-403":
            return conn.respond(http.HTTPStatus.FORBIDDEN, "forbidden by the python peer\n")
        return None

    def process_response(conn, request, response):
        if response.status_code != 101 and not done.done():
            info["outcome"] = "refused"
            info["status"] = response.status_code
            info["body"] = response.body.decode(errors="replace")
            done.set_result(None)

    async def handler(ws):
        try:
            record_tls(ws.transport, info)
            await SCENARIOS[scenario](ws, info)
            if not done.done():
                done.set_result(None)
        except BaseException as e:  # noqa: BLE001 - reported to the main task
            if not done.done():
                done.set_exception(e)

    async with serve(
        handler,
        "127.0.0.1",
        args.port,
        process_request=process_request,
        process_response=process_response,
        ssl=ctx,
        **opts,
    ) as server:
        port = server.sockets[0].getsockname()[1]
        emit(event="listening", port=port)
        await done
    if scenario == "reject-403" and info.get("status") != 403:
        raise Fail("expected to refuse the handshake with 403")


# ---------------------------------------------------------------- main
def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    client = sub.add_parser("client")
    client.add_argument("url")
    client.add_argument("--scenario", required=True, choices=sorted(SCENARIOS))
    client.add_argument("--origin")
    client.add_argument("--tls", metavar="CA_FILE", help="trust this CA (PEM) for wss://")
    server = sub.add_parser("server")
    server.add_argument("--port", type=int, default=0)
    server.add_argument("--scenario", required=True, choices=sorted(SCENARIOS))
    server.add_argument("--cert", metavar="CHAIN_FILE", help="serve wss:// with this chain (PEM)")
    server.add_argument("--key", metavar="KEY_FILE", help="the private key of --cert (PEM)")
    args = parser.parse_args()
    if args.mode == "server" and bool(args.cert) != bool(args.key):
        parser.error("--cert and --key go together")

    info = {"peer": f"python websockets {websockets.__version__}", "scenario": args.scenario}
    run = run_client if args.mode == "client" else run_server

    async def bounded():
        await asyncio.wait_for(run(args, info), TOTAL)

    try:
        asyncio.run(bounded())
    except Fail as e:
        log("FAIL:", e)
        emit(event="result", ok=False, error=str(e), **info)
        sys.exit(1)
    except BaseException as e:  # noqa: BLE001 - any crash is a failed run
        log("ERROR:", traceback.format_exc())
        emit(event="result", ok=False, error=f"{type(e).__name__}: {e}", **info)
        sys.exit(1)
    emit(event="result", ok=True, **info)


if __name__ == "__main__":
    main()
