#!/usr/bin/env bash
# Run the real Autobahn|Testsuite (wstest) against duplex and grade it strictly.
#
#   run.sh server|client [--sections 1-10 | --cases "1.*,2.*,7.1.6" | --all]
#          [--exclude "9.*"] [--out DIR] [--testee-cmd CMD] [--agent NAME]
#          [--deflate] [--allow-unimplemented-deflate] [--markdown FILE]
#          [--timeout SECS] [--ready-timeout SECS]
#
# server: starts the testee echo server on a free 127.0.0.1 port, then
#         `wstest -m fuzzingclient` against it.
# client: starts `wstest -m fuzzingserver` on a free port, then the testee
#         client (GET /getCaseCount, /runCase?case=N&agent=A, /updateReports).
# Then grades <out>/index.json with grade.py (strict; see README.md) and exits
# non-zero if anything failed. Everything it starts runs under `timeout` in its
# own process group and is stopped on exit (trap), so no orphans are left.
#
# Testee defaults (never built here; build them first):
#   server: ${DUPLEX_BIN:-<repo>/target/release/duplex} echo --listen 127.0.0.1:{port} [--deflate]
#   client: ${DUPLEX_AUTOBAHN_CLIENT:-<repo>/target/release/examples/autobahn_client} {url} {agent}
# --testee-cmd overrides them: a shell command with placeholders
#   {port} {url} (ws://127.0.0.1:{port}) {host} (127.0.0.1) {agent}.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
HOST=127.0.0.1

log() { printf 'run.sh: %s\n' "$*" >&2; }
die() { printf 'run.sh: ERROR: %s\n' "$*" >&2; exit 2; }
usage() { sed -n '2,24p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }

ORIG_ARGS=("$@")
[[ $# -ge 1 ]] || usage
SIDE="$1"; shift
case "$SIDE" in server|client) ;; -h|--help) usage ;; *) die "first argument must be 'server' or 'client' (got '$SIDE')" ;; esac

CASES=""; SECTIONS=""; ALL=0; EXCLUDE=""; OUT=""; TESTEE_CMD=""; AGENT="duplex"
DEFLATE=0; ALLOW_UNIMPL=0; MARKDOWN=""
TOTAL_TIMEOUT="${AUTOBAHN_TIMEOUT:-3000}"   # whole run, seconds
READY_TIMEOUT=30                           # wait for a listening port, seconds
need() { [[ $# -ge 2 && -n "$2" ]] || die "$1 needs a value"; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --cases) need "$@"; CASES="$2"; shift 2 ;;
    --sections) need "$@"; SECTIONS="$2"; shift 2 ;;
    --all) ALL=1; shift ;;
    --exclude) need "$@"; EXCLUDE="$2"; shift 2 ;;
    --out) need "$@"; OUT="$2"; shift 2 ;;
    --testee-cmd) need "$@"; TESTEE_CMD="$2"; shift 2 ;;
    --agent) need "$@"; AGENT="$2"; shift 2 ;;
    --deflate) DEFLATE=1; shift ;;
    --allow-unimplemented-deflate) ALLOW_UNIMPL=1; shift ;;
    --markdown) need "$@"; MARKDOWN="$2"; shift 2 ;;
    --timeout) need "$@"; TOTAL_TIMEOUT="$2"; shift 2 ;;
    --ready-timeout) need "$@"; READY_TIMEOUT="$2"; shift 2 ;;
    -h|--help) usage ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
[[ "$TOTAL_TIMEOUT" =~ ^[0-9]+$ && "$TOTAL_TIMEOUT" -gt 0 ]] || die "--timeout must be a positive integer"
[[ "$READY_TIMEOUT" =~ ^[0-9]+$ && "$READY_TIMEOUT" -gt 0 ]] || die "--ready-timeout must be a positive integer"
[[ "$AGENT" =~ ^[A-Za-z0-9_.-]+$ ]] || die "--agent must match [A-Za-z0-9_.-]+"
n_sel=0
[[ -n "$CASES" ]] && n_sel=$((n_sel + 1))
[[ -n "$SECTIONS" ]] && n_sel=$((n_sel + 1))
[[ "$ALL" == 1 ]] && n_sel=$((n_sel + 1))
[[ "$n_sel" -le 1 ]] || die "give only one of --cases, --sections, --all"

START_EPOCH="$(date +%s)"
DEADLINE=$((SECONDS + TOTAL_TIMEOUT))
remaining() { local r=$((DEADLINE - SECONDS)); [[ "$r" -gt 0 ]] || r=1; printf '%s\n' "$r"; }

# --- case selection (wstest patterns) ------------------------------------------
PATTERNS=()
if [[ -n "$CASES" ]]; then
  IFS=',' read -r -a PATTERNS <<<"$CASES"
elif [[ "$ALL" == 1 ]]; then
  PATTERNS=("*")
else
  SECTIONS="${SECTIONS:-1-10}"
  IFS=',' read -r -a parts <<<"$SECTIONS"
  for part in "${parts[@]}"; do
    if [[ "$part" =~ ^([0-9]+)-([0-9]+)$ ]]; then
      a="${BASH_REMATCH[1]}"; b="${BASH_REMATCH[2]}"
      [[ "$a" -le "$b" && "$b" -le 99 ]] || die "bad section range '$part'"
      for ((s = a; s <= b; s++)); do PATTERNS+=("$s.*"); done
    elif [[ "$part" =~ ^[0-9]+$ ]]; then
      PATTERNS+=("$part.*")
    else
      die "bad --sections value '$SECTIONS' (use e.g. 1-10 or 1,2,5)"
    fi
  done
fi
EXCLUDES=()
[[ -z "$EXCLUDE" ]] || IFS=',' read -r -a EXCLUDES <<<"$EXCLUDE"
PATTERNS_CSV="$(IFS=','; printf '%s' "${PATTERNS[*]}")"
N_CASES="$(python3 "$HERE/grade.py" --resolve "$PATTERNS_CSV" --exclude "$EXCLUDE" | wc -l)" \
  || die "could not resolve the case selection (see above)"
[[ "$N_CASES" -gt 0 ]] || die "the case selection '$PATTERNS_CSV' (minus '$EXCLUDE') matches no case"

# --- testee command --------------------------------------------------------------
if [[ -z "$TESTEE_CMD" ]]; then
  if [[ "$SIDE" == server ]]; then
    BIN="${DUPLEX_BIN:-$REPO/target/release/duplex}"
    [[ -x "$BIN" ]] || die "testee server binary not found: $BIN (build it: cargo build --release -p duplex-cli; or set DUPLEX_BIN / --testee-cmd)"
    TESTEE_CMD="$(printf '%q' "$BIN") echo --listen {host}:{port}"
    [[ "$DEFLATE" == 0 ]] || TESTEE_CMD+=" --deflate"
  else
    BIN="${DUPLEX_AUTOBAHN_CLIENT:-$REPO/target/release/examples/autobahn_client}"
    [[ -x "$BIN" ]] || die "testee client binary not found: $BIN (build it: cargo build --release -p duplex --example autobahn_client; or set DUPLEX_AUTOBAHN_CLIENT / --testee-cmd)"
    TESTEE_CMD="$(printf '%q' "$BIN") {url} {agent}"
    [[ "$DEFLATE" == 0 ]] || die "--deflate only applies to the default server testee; use --testee-cmd for the client"
  fi
elif [[ "$DEFLATE" == 1 ]]; then
  die "--deflate only applies to the default testee command; put the flag into --testee-cmd"
fi
if [[ "$SIDE" == server && "$TESTEE_CMD" != *"{port}"* && "$TESTEE_CMD" != *"{url}"* ]]; then
  die "--testee-cmd for the server side must contain {port} or {url} (the harness picks the port)"
fi
if [[ "$SIDE" == client && "$TESTEE_CMD" != *"{port}"* && "$TESTEE_CMD" != *"{url}"* ]]; then
  die "--testee-cmd for the client side must contain {url} or {port} (where wstest listens)"
fi

# --- output dir ----------------------------------------------------------------------
OUT="${OUT:-$REPO/reports/autobahn/$SIDE}"
MARKER=".autobahn-run-dir"
if [[ -e "$OUT" ]]; then
  [[ -d "$OUT" ]] || die "--out '$OUT' exists and is not a directory"
  if [[ -n "$(ls -A "$OUT")" && ! -e "$OUT/$MARKER" ]]; then
    die "--out '$OUT' is not empty and was not made by run.sh; refusing to wipe it"
  fi
  rm -rf "$OUT"
fi
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
touch "$OUT/$MARKER"

# --- wstest ----------------------------------------------------------------------------
WSTEST="$("$HERE/install.sh" | tail -n 1)" || die "install.sh failed (see above)"
[[ -x "$WSTEST" ]] || die "install.sh did not yield a runnable wstest ('$WSTEST')"
WSTEST_VERSION="$("$WSTEST" -a 2>&1 | tr '\n' ' ' | sed 's/ *$//')"

# --- process management ------------------------------------------------------------------
PIDS=()
stop_group() {
  # $1 = pid of a `timeout` we started: it leads its own process group.
  local pid="$1" i
  kill -0 "$pid" 2>/dev/null || kill -0 -- "-$pid" 2>/dev/null || return 0
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do
    kill -0 -- "-$pid" 2>/dev/null || kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  local rc=$? p
  trap - EXIT INT TERM
  for p in "${PIDS[@]+"${PIDS[@]}"}"; do stop_group "$p"; done
  exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

LAST_PID=""
start_bg() {  # start_bg EXTRA_SECS LOGFILE CMD... ; sets LAST_PID
  # runs CMD under `timeout` for the remaining budget + EXTRA_SECS (the
  # process that serves the other one outlives it, so a budget overrun is
  # blamed on the right process and partial reports can still be written).
  local extra="$1" logf="$2"; shift 2
  ( cd "$OUT" && exec timeout -k 5 "$(( $(remaining) + extra ))" "$@" ) >"$logf" 2>&1 </dev/null &
  LAST_PID=$!
  PIDS+=("$LAST_PID")
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

wait_port() {  # wait_port PORT PID -> 0 ready, 1 timeout, 2 process died
  local port="$1" pid="$2" i
  for ((i = 0; i < READY_TIMEOUT * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || return 2
    if (exec 3<>"/dev/tcp/$HOST/$port") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  return 1
}

subst() {  # expand placeholders in the testee command
  local c="$1"
  c="${c//\{url\}/ws://$HOST:$PORT}"
  c="${c//\{port\}/$PORT}"
  c="${c//\{host\}/$HOST}"
  c="${c//\{agent\}/$AGENT}"
  printf '%s\n' "$c"
}

json_str() { python3 -c 'import json,sys; print(json.dumps(sys.argv[1]))' "$1"; }
json_list() { python3 -c 'import json,sys; print(json.dumps([a for a in sys.argv[1:] if a]))' "$@"; }

HARNESS_FAILURES=()
fail_harness() { log "FAILURE: $*"; HARNESS_FAILURES+=("$*"); }

PORT="$(free_port)"
URL="ws://$HOST:$PORT"
CMD="$(subst "$TESTEE_CMD")"
SPEC="$OUT/spec.json"
CASES_JSON="$(json_list "${PATTERNS[@]}")"
EXCL_JSON="$(json_list "${EXCLUDES[@]+"${EXCLUDES[@]}"}")"
# failByDrop=false: on a protocol violation the fuzzer itself performs a clean
# closing handshake instead of dropping TCP. wstest forces exactly this in both
# modes anyway ("spec conformance"); it is spelled out here so the spec is
# self-describing. All other options stay at Autobahn's defaults.
if [[ "$SIDE" == server ]]; then
  cat >"$SPEC" <<EOF
{
  "outdir": $(json_str "$OUT"),
  "servers": [{"agent": "$AGENT", "url": "$URL"}],
  "cases": $CASES_JSON,
  "exclude-cases": $EXCL_JSON,
  "exclude-agent-cases": {},
  "options": {"failByDrop": false}
}
EOF
else
  cat >"$SPEC" <<EOF
{
  "url": "$URL",
  "outdir": $(json_str "$OUT"),
  "cases": $CASES_JSON,
  "exclude-cases": $EXCL_JSON,
  "exclude-agent-cases": {},
  "options": {"failByDrop": false}
}
EOF
fi

log "$SIDE side: $N_CASES cases ($PATTERNS_CSV${EXCLUDE:+ minus $EXCLUDE}), port $PORT, out $OUT, budget ${TOTAL_TIMEOUT}s"
log "testee: $CMD"
T0=$SECONDS
TESTEE_RC=""
if [[ "$SIDE" == server ]]; then
  start_bg 30 "$OUT/testee.log" bash -c "$CMD"
  TPID="$LAST_PID"
  rc=0; wait_port "$PORT" "$TPID" || rc=$?
  if [[ "$rc" == 2 ]]; then tail -n 20 "$OUT/testee.log" >&2 || true; die "testee server exited before listening on $PORT (log: $OUT/testee.log)"; fi
  if [[ "$rc" != 0 ]]; then tail -n 20 "$OUT/testee.log" >&2 || true; die "testee server did not listen on $PORT within ${READY_TIMEOUT}s (log: $OUT/testee.log)"; fi
  log "testee server ready after $((SECONDS - T0))s; running wstest -m fuzzingclient ..."
  start_bg 0 "$OUT/wstest.log" "$WSTEST" -m fuzzingclient -s "$SPEC"
  WPID="$LAST_PID"
  wrc=0; wait "$WPID" || wrc=$?
  if [[ ( "$wrc" == 124 || "$wrc" == 137 ) && "$SECONDS" -ge $((DEADLINE - 2)) ]]; then
    fail_harness "wstest fuzzingclient hit the ${TOTAL_TIMEOUT}s run budget and was killed (it writes no report then; raise --timeout)"
  elif [[ "$wrc" != 0 ]]; then
    fail_harness "wstest fuzzingclient exited with code $wrc (log: $OUT/wstest.log)"
  fi
  if ! kill -0 "$TPID" 2>/dev/null; then
    trc=0; wait "$TPID" || trc=$?
    TESTEE_RC="$trc"
    fail_harness "testee server exited during the run (exit code $trc; log: $OUT/testee.log)"
  fi
  if grep -q "Connection to .* failed" "$OUT/wstest.log"; then
    fail_harness "wstest could not connect to the testee server: $(grep -m1 'Connection to .* failed' "$OUT/wstest.log")"
  fi
  stop_group "$TPID"
else
  start_bg 120 "$OUT/wstest.log" "$WSTEST" -m fuzzingserver -s "$SPEC" -u 0
  WPID="$LAST_PID"
  rc=0; wait_port "$PORT" "$WPID" || rc=$?
  if [[ "$rc" != 0 ]]; then tail -n 20 "$OUT/wstest.log" >&2 || true; die "wstest fuzzingserver did not listen on $PORT within ${READY_TIMEOUT}s (log: $OUT/wstest.log)"; fi
  log "wstest fuzzingserver ready after $((SECONDS - T0))s; running the testee client ..."
  start_bg 0 "$OUT/testee.log" bash -c "$CMD"
  TPID="$LAST_PID"
  trc=0; wait "$TPID" || trc=$?
  TESTEE_RC="$trc"
  if [[ ( "$trc" == 124 || "$trc" == 137 ) && "$SECONDS" -ge $((DEADLINE - 2)) ]]; then
    fail_harness "testee client hit the ${TOTAL_TIMEOUT}s run budget and was killed (log: $OUT/testee.log)"
  elif [[ "$trc" != 0 ]]; then
    fail_harness "testee client exited with code $trc (log: $OUT/testee.log)"
  fi
  if ! grep -q "Updating reports, requested by peer" "$OUT/wstest.log"; then
    fail_harness "testee client never requested /updateReports?agent=$AGENT"
  fi
  if kill -0 "$WPID" 2>/dev/null; then
    # (Re)write the reports ourselves so the cases that did run are graded
    # even if the client died early; it changes no case outcome.
    timeout 90 python3 "$HERE/update_reports.py" "$PORT" "$AGENT" 60 \
      || fail_harness "could not get wstest to write its reports (/updateReports)"
  else
    fail_harness "wstest fuzzingserver died during the run (log: $OUT/wstest.log)"
  fi
  stop_group "$WPID"
fi
ELAPSED=$((SECONDS - T0))
log "$SIDE side: wstest run took ${ELAPSED}s"

# command line as given, with the script path relative to the repo when inside it
SELF="$0"
case "$(cd "$(dirname "$0")" && pwd)/$(basename "$0")" in
  "$REPO"/*) SELF="${HERE#"$REPO"/}/run.sh" ;;
esac
shq() {  # quote like python's shlex.quote
  if [[ "$1" =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then printf '%s' "$1"; else printf "'%s'" "${1//\'/\'\\\'\'}"; fi
}
RUN_CMD="$(shq "$SELF")"
for a in "${ORIG_ARGS[@]+"${ORIG_ARGS[@]}"}"; do RUN_CMD+=" $(shq "$a")"; done
python3 - "$OUT/run-info.json" <<EOF
import json, sys, datetime
info = {
  "side": "$SIDE",
  "command": $(json_str "$RUN_CMD"),
  "testee_cmd": $(json_str "$CMD"),
  "testee_cmd_template": $(json_str "$TESTEE_CMD"),
  "testee_exit": ${TESTEE_RC:-None},
  "wstest_version": $(json_str "$WSTEST_VERSION"),
  "agent": "$AGENT",
  "port": $PORT,
  "cases": $CASES_JSON,
  "exclude_cases": $EXCL_JSON,
  "n_cases": $N_CASES,
  "started": datetime.datetime.fromtimestamp($START_EPOCH, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
  "finished": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
  "elapsed_s": $ELAPSED,
  "harness_failures": $(json_list "${HARNESS_FAILURES[@]+"${HARNESS_FAILURES[@]}"}"),
}
with open(sys.argv[1], "w") as f:
    json.dump(info, f, indent=2)
EOF

GRADE_ARGS=(--side "$SIDE" --report "$OUT" --agent "$AGENT")
[[ "$ALLOW_UNIMPL" == 0 ]] || GRADE_ARGS+=(--allow-unimplemented-deflate)
for f in "${HARNESS_FAILURES[@]+"${HARNESS_FAILURES[@]}"}"; do GRADE_ARGS+=(--harness-failure "$f"); done
[[ -z "$MARKDOWN" ]] || GRADE_ARGS+=(--markdown "$MARKDOWN" --command "$RUN_CMD")
grc=0
python3 "$HERE/grade.py" "${GRADE_ARGS[@]}" || grc=$?
exit "$grc"
