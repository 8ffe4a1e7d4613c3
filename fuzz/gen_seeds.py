#!/usr/bin/env python3
"""Writes the seed inputs in fuzz/seeds/<target>/ (deterministic; re-run after changing it).

Each seed is a small valid input so the fuzzer starts from deep inside each parser instead of
having to discover WebSocket framing or HTTP from nothing. See README.md for the layouts.
"""
import os
import struct
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))


def write(target, name, data):
    d = os.path.join(HERE, "seeds", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def frame(opcode, payload=b"", fin=True, rsv=0, key=None):
    b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
    mask = 0x80 if key is not None else 0
    n = len(payload)
    if n <= 125:
        head = bytes([b0, mask | n])
    elif n <= 0xFFFF:
        head = bytes([b0, mask | 126]) + struct.pack(">H", n)
    else:
        head = bytes([b0, mask | 127]) + struct.pack(">Q", n)
    if key is None:
        return head + payload
    body = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return head + bytes(key) + body


def frames_seeds():
    for masked, tag in ((True, "masked"), (False, "unmasked")):
        for key_name, key in (("zero", [0, 0, 0, 0]), ("key", [0x37, 0xFA, 0x21, 0x3D])):
            k = key if masked else None
            name = f"{tag}-{key_name}" if masked else tag
            if not masked and key_name == "key":
                continue
            stream = (
                frame(0x1, "héllo wörld ✓".encode(), key=k)
                + frame(0x9, b"ping!", key=k)
                + frame(0x2, b"\x00\x01\x02" * 5, fin=False, key=k)
                + frame(0xA, b"", key=k)
                + frame(0x0, b"\xff" * 3, fin=False, key=k)
                + frame(0x0, b"end", key=k)
                + frame(0x1, "€".encode()[:2], fin=False, key=k)
                + frame(0x0, "€".encode()[2:], key=k)
                + frame(0x2, bytes(range(256)) * 2, key=k)
                + frame(0x8, struct.pack(">H", 1000) + b"bye", key=k)
            )
            for flags, sizes in ((0, [0, 0, 0, 0]), (0, [1, 7, 3, 200]), (0x22, [5, 0, 9, 2])):
                write("frame_decoder", f"{name}-{flags:02x}-{sizes[1]}", bytes([flags] + sizes) + stream)
            # Ping flood, then invalid frames of several kinds.
            write("frame_decoder", f"{name}-pings", bytes([0, 3, 3, 3, 3]) + frame(0x9, b"", key=k) * 20)
            write("frame_decoder", f"{name}-len16", bytes([0x02, 0, 0, 0, 0]) + frame(0x2, b"x" * 300, key=k))
            # A 64-bit length whose payload has not arrived yet.
            write("frame_decoder", f"{name}-len64", bytes([0, 0, 0, 0, 0]) + frame(0x2, b"y" * 70000, key=k)[:40])
            write("frame_decoder", f"{name}-badutf8", bytes([0, 2, 2, 2, 2]) + frame(0x1, b"ok\xc3\x28", key=k))
            write("frame_decoder", f"{name}-rsv1", bytes([0x80, 0, 0, 0, 0]) + frame(0x1, b"a", rsv=4, key=k) + frame(0x9, b"p", rsv=4, key=k))


def requests():
    base = (
        b"GET /chat?room=1 HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n"
        b"Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Origin: http://example.com\r\nSec-WebSocket-Version: 13\r\n"
    )
    write("handshake_request", "minimal", base + b"\r\n")
    write(
        "handshake_request",
        "full",
        base
        + b"Sec-WebSocket-Protocol: chat, superchat\r\n"
        + b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits, x-foo; a=\"1\"\r\n"
        + b"Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover\r\n\r\n"
        + b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58",
    )
    write("handshake_request", "absolute", base.replace(b"/chat?room=1", b"http://server.example.com/chat") + b"\r\n")
    write("handshake_request", "version8", base.replace(b"Version: 13", b"Version: 8") + b"\r\n")


def responses():
    base = (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
    )
    write("handshake_response", "minimal", base + b"\r\n")
    write(
        "handshake_response",
        "full",
        base
        + b"Sec-WebSocket-Protocol: chat\r\n"
        + b"Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; "
        + b"server_max_window_bits=10; client_max_window_bits=9\r\n\r\n\x81\x02hi",
    )
    write("handshake_response", "deflate-plain", base + b"Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n")
    write("handshake_response", "refused", b"HTTP/1.1 403 Forbidden\r\nContent-Length: 3\r\n\r\nno\n")


def extensions():
    for i, s in enumerate(
        [
            "permessage-deflate",
            "permessage-deflate; client_max_window_bits",
            "permessage-deflate; client_max_window_bits=10; server_max_window_bits=12; "
            "server_no_context_takeover; client_no_context_takeover, permessage-deflate",
            'x-foo; a="quoted"; b=tok, , y ; c',
            'permessage-deflate; server_max_window_bits="8"',
        ]
    ):
        write("extensions", f"ext{i}", s.encode())


def deflate():
    def raw(data, wbits=15, level=6):
        c = zlib.compressobj(level, zlib.DEFLATED, -wbits)
        out = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
        assert out.endswith(b"\x00\x00\xff\xff")
        return out[:-4]

    text = b'{"op":"update","channel":"prices","data":[1,2,3]} ' * 40
    write("deflate_inflate", "json", bytes([0x07, 0]) + raw(text))
    write("deflate_inflate", "json-frames", bytes([0x0F, 7]) + raw(text, 9, 1))
    write("deflate_inflate", "bomb", bytes([0x07, 0]) + raw(b"\x00" * 300000, 15, 9))
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    final = c.compress(b"hello hello hello") + c.flush(zlib.Z_FINISH)
    write("deflate_inflate", "bfinal", bytes([0x07, 0]) + final + raw(b"again hello"))
    write("deflate_inflate", "stored", bytes([0x27, 0]) + b"\x00")
    write("deflate_inflate", "roundtrip", bytes([0x47, 0]) + text[:300])
    write("deflate_inflate", "roundtrip-msgs", bytes([0x6B, 40]) + text[:400])


frames_seeds()
requests()
responses()
extensions()
deflate()
