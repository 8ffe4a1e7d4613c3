"""The official Python `pusher` server SDK, driven line by line over stdin/stdout.

Used by crates/duplex-cli/tests/serve_pusher_python.rs, which holds the WebSocket subscribers
and makes the assertions; this script only calls the SDK and reports what it returned.

    python sdk_rpc.py HOST PORT APP_ID KEY SECRET MASTER_KEY_BASE64

Each input line is a JSON object {"call": METHOD, "args": [...], "kwargs": {...}, "client":
"good" | "forged"}; each output line is {"ok": RESULT} or {"error": {"type": NAME, "message":
TEXT}}. "forged" is a client with the wrong secret. Only the SDK methods listed in CALLS can be
called.
"""

import json
import sys

import pusher

CALLS = {
    "trigger",
    "trigger_batch",
    "send_to_user",
    "channels_info",
    "channel_info",
    "users_info",
    "terminate_user_connections",
    "authenticate",
    "authenticate_user",
    "validate_webhook",
}


def to_json(value):
    # authenticate() returns the shared secret of encrypted channels as base64 bytes.
    if isinstance(value, bytes):
        return value.decode("ascii")
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def main():
    host, port, app_id, key, secret, master = sys.argv[1:7]
    common = dict(ssl=False, host=host, port=int(port), timeout=10, encryption_master_key_base64=master)
    clients = {
        "good": pusher.Pusher(app_id=app_id, key=key, secret=secret, **common),
        "forged": pusher.Pusher(app_id=app_id, key=key, secret="not-the-secret", **common),
    }
    print(json.dumps({"ok": {"version": pusher.version.VERSION}}), flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        if req["call"] not in CALLS:
            raise SystemExit(f"sdk_rpc.py: {req['call']!r} is not an SDK call this script offers")
        method = getattr(clients[req.get("client", "good")], req["call"])
        try:
            out = {"ok": method(*req.get("args", []), **req.get("kwargs", {}))}
        except Exception as err:  # reported to the Rust test, which asserts on it
            out = {"error": {"type": type(err).__name__, "message": str(err)}}
        print(json.dumps(out, default=to_json), flush=True)


if __name__ == "__main__":
    main()
