#!/usr/bin/env bash
# Scale-out test (SPEC §14): HAProxy and three tracer replicas on 127.0.0.1, configured
# from deploy/haproxy.cfg, driven by `loadtest` through HAProxy (KUMA-like: one request
# in flight per connection, every answer checked, a new connection when one breaks).
#
#   a. throughput through HAProxy vs one replica direct, same load (two rounds)
#   b. rolling restart, plain: SIGTERM a replica, wait for its exit, start it, wait
#      until HAProxy sees it up, next one
#   c. rolling restart, the HAProxy way: the same, with the replica set to `drain` on
#      HAProxy's stats socket first and back to `ready` after (deploy/haproxy.cfg)
#   d. SIGKILL of one replica under load; then it is started again
#   e. an index update compiled once, renamed over the served file, SIGHUP to all
#      three under load; every replica must then answer from it
#   f. the HTTP API through HAProxy (TLS ends there, replicas on plain HTTP): /health
#      and checked lookups
#
# Requirements (the script exits 1 if one fails, after running every part):
# 0 wrong answers everywhere; in e 0 lost requests; in b and c no connection cut by
# the drain timeout, no session HAProxy saw reset or closed early by a replica (from
# its log), and no lost request (counted by loadtest) other than one that reached a
# replica after its connection's FIN (from tracer's drain log line: the line
# protocol's limit, see the check) — at most 2 such, or 2 % of the closed
# connections; in d the load goes on (every second carries answers), no more
# requests are lost than the killed replica had sessions, and it comes back. A
# summary table ends the output. About 2.5 minutes on 2 cores.
#
#   scripts/scale-out.sh
#   SECS=5 ENTRIES=100000 scripts/scale-out.sh    # shorter
#   KEEP=1 scripts/scale-out.sh                    # keep the work dir (logs, reports)
#   LOADTEST=/path/to/loadtest scripts/scale-out.sh
#
# Needs haproxy (2.4+), python3, and ports BASE..BASE+30 (default 17700) free on
# 127.0.0.1. Every process it starts is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
BASE=${BASE:-17700}
ENTRIES=${ENTRIES:-300000}
SECS=${SECS:-10}
CONNECTIONS=${CONNECTIONS:-32}
T=target/release/tracer
LT=${LOADTEST:-target/release/loadtest}
W=$(mktemp -d /tmp/tracer-scaleout.XXXXXX)

HAPROXY_LINE=$BASE               # HAProxy: line protocol
HAPROXY_HTTP=$((BASE + 1))       # HAProxy: HTTPS
HAPROXY_STATS=$((BASE + 2))      # HAProxy: stats page
line_port() { echo $((BASE + 10 + $1)); }   # replica i: line protocol
http_port() { echo $((BASE + 20 + $1)); }   # replica i: plain HTTP

declare -A REPLICA=()
HAPROXY=""
LOAD=""
FAILED=()
cleanup() {
  local rc=$?
  for pid in "${REPLICA[@]}" $HAPROXY $LOAD; do
    kill "$pid" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  if [ "${KEEP:-0}" = 1 ] || [ $rc -ne 0 ]; then
    echo "work dir kept: $W" >&2
  else
    rm -rf "$W"
  fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# `fail`: the setup cannot go on. `check COND MESSAGE`: a requirement, recorded.
fail() { echo "FAIL: $*" >&2; exit 1; }
check() {
  if eval "$1"; then return 0; fi
  echo "   FAIL: $2" >&2
  FAILED+=("$2")
}
PATH=$PATH:/usr/sbin:/sbin   # haproxy's place on Debian, outside a non-root PATH
command -v haproxy >/dev/null || fail "haproxy is not installed (apt-get install haproxy)"
command -v python3 >/dev/null || fail "python3 is needed"

echo "== build, data, index"
cargo build --release -p tracer -p loadtest >/dev/null 2>&1 || cargo build --release -p tracer -p loadtest
"$T" generate --out "$W/data" --urls 0 --hashes 0 --ips 0 --domains 0 --mixed "$ENTRIES" >/dev/null 2>&1
# Compiled once; every replica serves this same file (a cluster would get copies).
"$T" compile "$W/data/mixed.csv" -k ioc --category mixed -o "$W/index.tracer" >/dev/null 2>&1
HITS=$W/data/mixed_hits.txt
MISSES=$W/data/misses.txt
echo "   $ENTRIES entries, index $(stat -c %s "$W/index.tracer") bytes"

# ---- replicas -----------------------------------------------------------------------
for i in 1 2 3; do
  cat >"$W/replica$i.toml" <<EOF
listen = "127.0.0.1:$(line_port "$i")"
threads = 1
drain_timeout = "5s"
[[index]]
path = "$W/index.tracer"
[http]
listen = "127.0.0.1:$(http_port "$i")"
tls = false
EOF
done

# PING → PONG on the line protocol.
pong() {
  local line=""
  { exec 3<>"/dev/tcp/127.0.0.1/$1"; } 2>/dev/null || return 1
  printf 'X-KF-ReplyBackPING\n' >&3
  IFS= read -r -t 2 line <&3 || true
  exec 3<&- 3>&-
  [ "$line" = PONG ]
}

start_replica() {
  local i=$1
  "$T" serve --config "$W/replica$i.toml" 2>>"$W/replica$i.log" &
  REPLICA[$i]=$!
  for _ in $(seq 200); do
    pong "$(line_port "$i")" && return 0
    kill -0 "${REPLICA[$i]}" 2>/dev/null || fail "replica $i exited at start: $(tail -3 "$W/replica$i.log")"
    sleep 0.05
  done
  fail "replica $i did not answer PING within 10 s"
}

# SIGTERM, then wait: tracer drains and must exit 0.
stop_replica() {
  local i=$1 rc=0
  kill -TERM "${REPLICA[$i]}"
  wait "${REPLICA[$i]}" || rc=$?
  unset "REPLICA[$i]"
  check "[ $rc -eq 0 ]" "replica $i exited with $rc after SIGTERM"
}

# A command on HAProxy's stats socket.
hactl() {
  python3 - "$W/admin.sock" "$1" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(sys.argv[2].encode() + b"\n")
data = b""
while chunk := s.recv(65536):
    data += chunk
sys.stdout.write(data.decode())
PY
}

# HAProxy's view of a server: "STATUS|current connections", e.g. "UP|11", "DRAIN|0".
server_status() {
  hactl "show stat" | awk -F, -v b="$1" -v s="$2" '$1 == b && $2 == s { print $18 "|" $5 }'
}

wait_haproxy_up() {
  local i=$1 st=""
  for _ in $(seq 200); do
    st=$(server_status tracer_cybertrace "tracer$i" | cut -d'|' -f1)
    [ "$st" = UP ] && return 0
    sleep 0.1
  done
  fail "HAProxy does not see tracer$i up after 20 s (status: $st)"
}

# ---- HAProxy, from deploy/haproxy.cfg -------------------------------------------------
mkdir -p "$W/tls"
"$T" cert --host 127.0.0.1 --host localhost --out "$W/tls" >/dev/null
cat "$W/tls/cert.pem" "$W/tls/key.pem" >"$W/tls/haproxy.pem"
sed_args=(
  -e '/^ *#/d' -e '/^ *chroot /d' -e '/^ *user haproxy/d' -e '/^ *group haproxy/d' -e '/^ *daemon$/d'
  -e 's#^\( *\)log /dev/log local0#\1log stdout format raw local0#'
  -e 's#^\( *\)maxconn 100000#\1maxconn 4096#'
  -e "s#stats socket /run/haproxy/admin.sock#stats socket $W/admin.sock#"
  -e "s#bind :16666#bind 127.0.0.1:$HAPROXY_LINE#"
  -e "s#bind :9443 ssl crt /etc/haproxy/tracer.pem#bind 127.0.0.1:$HAPROXY_HTTP ssl crt $W/tls/haproxy.pem#"
  -e "s#bind 127.0.0.1:8404#bind 127.0.0.1:$HAPROXY_STATS#"
)
for i in 1 2 3; do
  sed_args+=(-e "s#10\.0\.0\.1$i:16666#127.0.0.1:$(line_port "$i")#"
             -e "s#10\.0\.0\.1$i:9080#127.0.0.1:$(http_port "$i")#")
done
sed "${sed_args[@]}" deploy/haproxy.cfg >"$W/haproxy.cfg"
if grep -nE '10\.0\.0\.|bind :|/etc/haproxy|/run/haproxy' "$W/haproxy.cfg"; then
  fail "deploy/haproxy.cfg changed shape: the lines above were not rewritten for loopback"
fi
haproxy -c -q -f "$W/haproxy.cfg" || fail "haproxy -c rejects the derived config"

for i in 1 2 3; do start_replica "$i"; done
haproxy -db -f "$W/haproxy.cfg" >"$W/haproxy.log" 2>&1 &
HAPROXY=$!
for i in 1 2 3; do wait_haproxy_up "$i"; done
# awk reads all of it: `head` would leave haproxy a closed pipe (SIGPIPE under pipefail).
HAPROXY_VERSION=$(haproxy -v | awk 'NR == 1 { print $3 }')
echo "   HAProxy $HAPROXY_VERSION on 127.0.0.1:$HAPROXY_LINE, replicas on $(line_port 1)-$(line_port 3), all UP"

# ---- load -----------------------------------------------------------------------------
WORKLOAD=(--hits "$HITS" --misses "$MISSES" --per-request 2 --connections "$CONNECTIONS")

# Run loadtest to completion; the report goes to $W/$name.json.
measure() {
  local name=$1; shift
  # Judged from the report, not from the exit code.
  "$LT" "${WORKLOAD[@]}" --quiet --json "$@" >"$W/$name.json" 2>"$W/$name.err" || true
  [ -s "$W/$name.json" ] || fail "$name: loadtest wrote no report: $(tail -3 "$W/$name.err")"
}
# Start loadtest in the background (a progress line each second on stderr, "t=  5s  N req/s …").
load_start() {
  local name=$1; shift
  "$LT" "${WORKLOAD[@]}" --json "$@" >"$W/$name.json" 2>"$W/$name.err" &
  LOAD=$!
}
load_wait() {
  wait "$LOAD" || true
  LOAD=""
  [ -s "$W/$1.json" ] || fail "$1: loadtest wrote no report: $(tail -3 "$W/$1.err")"
}
# A number from a report: requests_per_sec, requests, lost, reconnects, errors (summed).
field() {
  python3 - "$W/$1.json" "$2" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["runs"][0]
v = r[sys.argv[2]]
print(sum(v.values()) if isinstance(v, dict) else (f"{v:.0f}" if isinstance(v, float) else v))
PY
}
show() {
  python3 - "$W/$1.json" "$2" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["runs"][0]
err = sum(r["errors"].values())
print(f"   {sys.argv[2]:<36} {r['requests_per_sec']:>9.0f} req/s  p99 {r['latency_us']['p99']:>6} µs  "
      f"errors {err}  lost {r['lost']}  reconnects {r['reconnects']}")
for e in (r["first_errors"] + r["first_lost"])[:3]:
    print(f"      {e}")
PY
}

# Each replica's log and HAProxy's log, from a mark on: what happened during one part.
mark() { for f in "$W"/replica*.log "$W/haproxy.log"; do wc -l <"$f" >"$f.mark"; done; }
since_mark() { tail -n +"$(($(cat "$1.mark") + 1))" "$1"; }
# tracer's account of its drains since the mark: "closed answered cut late ms" each.
drains() {
  for i in 1 2 3; do since_mark "$W/replica$i.log"; done | sed -n \
    's/.*connections_closed=\([0-9]*\) requests_answered=\([0-9]*\) cut_at_timeout=\([0-9]*\) lines_after_close=\([0-9]*\) ms=\([0-9]*\).*/\1 \2 \3 \4 \5/p'
}
# HAProxy's tcplog since the mark: line-protocol sessions the server side ended
# abnormally (termination state S…: reset, or closed before any answer).
server_aborts() {
  since_mark "$W/haproxy.log" | awk '$3 == "cybertrace" && $7 ~ /^S/ { n++ } END { print n + 0 }'
}

echo "== a. throughput: $CONNECTIONS connections, 1 request in flight each, 2 indicators per request, ${SECS} s"
for round in 1 2; do
  measure "direct$round" --addr "127.0.0.1:$(line_port 1)" --duration "$SECS" --warmup 1
  show "direct$round" "one replica direct (round $round)"
  measure "haproxy$round" --addr "127.0.0.1:$HAPROXY_LINE" --duration "$SECS" --warmup 1
  show "haproxy$round" "HAProxy, 3 replicas (round $round)"
  for r in "direct$round" "haproxy$round"; do
    check "[ $(field "$r" errors) = 0 ] && [ $(field "$r" lost) = 0 ]" "a: $r: wrong answers or lost requests"
  done
done

# A rolling restart under load; $1 = rolling (plain) or drained (HAProxy drain first).
rolling() {
  local name=$1 i t0 t1 t2
  mark
  load_start "$name" --addr "127.0.0.1:$HAPROXY_LINE" --duration 25 --warmup 0
  sleep 2
  for i in 1 2 3; do
    t0=$(date +%s.%N)
    if [ "$name" = drained ]; then
      # No new connections for it; those it has stay until tracer closes them.
      hactl "set server tracer_cybertrace/tracer$i state drain" >/dev/null
      hactl "set server tracer_http/tracer$i state drain" >/dev/null
    fi
    stop_replica "$i"
    t1=$(date +%s.%N)
    start_replica "$i"
    if [ "$name" = drained ]; then
      hactl "set server tracer_cybertrace/tracer$i state ready" >/dev/null
      hactl "set server tracer_http/tracer$i state ready" >/dev/null
    fi
    wait_haproxy_up "$i"
    t2=$(date +%s.%N)
    awk -v i="$i" -v a="$t0" -v b="$t1" -v c="$t2" 'BEGIN {
      printf "   tracer%s: stopped in %.2f s, up in HAProxy %.2f s later\n", i, b - a, c - b }'
    sleep 1
  done
  check "kill -0 $LOAD 2>/dev/null" "$name: the restarts outlasted the load run"
  load_wait "$name"
  show "$name" "$2"
  drains | awk '{ printf "   drain: %s connections closed, %s requests answered, %s cut by the timeout, %s requests after FIN, %s ms\n", $1, $2, $3, $4, $5 }'
  local closed cut crossed lost aborts
  closed=$(drains | awk '{ s += $1 } END { print s + 0 }')
  cut=$(drains | awk '{ s += $3 } END { print s + 0 }')
  crossed=$(drains | awk '{ s += $4 } END { print s + 0 }')
  lost=$(field "$name" lost)
  aborts=$(server_aborts)
  echo "   HAProxy: $aborts sessions ended abnormally by a replica"
  check "[ $(field "$name" errors) = 0 ]" "$name: wrong answers"
  check "[ $cut = 0 ]" "$name: $cut connections cut by the drain timeout"
  check "[ $aborts = 0 ]" "$name: HAProxy saw $aborts sessions reset or closed early by a replica"
  # A drain closes each connection right after an answer; through HAProxy the answer
  # and the FIN travel separately, and a client may send one more request in between
  # (the line protocol has no goodbye; README "More than one machine"). Such a
  # request is the only loss allowed, and only rarely: at most 2, or 2 % of the
  # connections closed. Anything else lost is a failure.
  if [ "$lost" != 0 ]; then
    echo "   $lost requests lost; $crossed requests reached a replica after its connection's FIN"
  fi
  check "[ $lost -le $crossed ]" "$name: $lost requests lost, only $crossed of them crossed a FIN"
  check "[ $crossed -le 2 ] || [ $((crossed * 50)) -le $closed ]" \
    "$name: $crossed of $closed drained connections got a request after their FIN"
}

echo "== b. rolling restart under load: SIGTERM, exit, start, up in HAProxy; one by one"
rolling rolling "rolling restart, plain (25 s)"
echo "== c. rolling restart under load, each replica set to drain in HAProxy first"
rolling drained "rolling restart, drain first (25 s)"

echo "== d. SIGKILL of one replica under load"
mark
load_start kill --addr "127.0.0.1:$HAPROXY_LINE" --duration 16 --warmup 0
sleep 4
on_killed=$(server_status tracer_cybertrace tracer2 | cut -d'|' -f2)
kill -KILL "${REPLICA[2]}"
wait "${REPLICA[2]}" 2>/dev/null || true
unset "REPLICA[2]"
# Answers keep flowing from the other two: loadtest's progress line for each of the
# 5 seconds after the kill (t=5..9 s of the run) must count some.
sleep 6
start_replica 2
wait_haproxy_up 2
load_wait kill
show kill "SIGKILL tracer2 (16 s)"
lost_kill=$(field kill lost)
# Sessions HAProxy had with tracer2 that ended during the run: each loses at most
# the one request in flight on it.
ended_kill=$(since_mark "$W/haproxy.log" | awk '$3 == "cybertrace" && $4 == "tracer_cybertrace/tracer2" { n++ } END { print n + 0 }')
echo "   tracer2 had $on_killed connections; $lost_kill requests lost; $ended_kill sessions with tracer2 ended; HAProxy: $(server_aborts) ended abnormally"
min_after=$(sed -n 's/^t= *\([0-9]*\)s *\([0-9]*\) req\/s.*/\1 \2/p' "$W/kill.err" |
  awk '$1 >= 5 && $1 <= 9 { if (min == "" || $2 < min) min = $2 } END { print min + 0 }')
echo "   answers in the slowest second of the 5 after the kill: $min_after"
check "[ $(field kill errors) = 0 ]" "kill: wrong answers"
check "[ $min_after -gt 0 ]" "kill: a second without any answer after the kill"
check "[ $lost_kill -le $ended_kill ]" "kill: $lost_kill requests lost, more than the $ended_kill sessions tracer2 had"

echo "== e. index update: compile once, rename over the served file, SIGHUP all three"
mark
sed 's/,mixed_\([0-9]*\)$/,updated_\1/' "$W/data/mixed.csv" >"$W/data/mixed-v2.csv"
load_start update --addr "127.0.0.1:$HAPROXY_LINE" --duration 12 --warmup 0
sleep 3
"$T" compile "$W/data/mixed-v2.csv" -k ioc --category mixed -o "$W/index.tracer.new" >/dev/null 2>&1
mv "$W/index.tracer.new" "$W/index.tracer"
for i in 1 2 3; do kill -HUP "${REPLICA[$i]}"; done
load_wait update
show update "index update + SIGHUP (12 s)"
reloaded=$(for i in 1 2 3; do since_mark "$W/replica$i.log"; done | grep -c 'index reloaded' || true)
hit=$(grep -m1 '^hash=' "$HITS")
fresh=0
for i in 1 2 3; do
  answer=$(exec 3<>"/dev/tcp/127.0.0.1/$(line_port "$i")"; printf '%s\n' "$hit" >&3; IFS= read -r -t 2 l <&3; echo "$l")
  case $answer in *context=updated_*) fresh=$((fresh + 1)) ;; esac
done
echo "   $reloaded replicas logged \"index reloaded\"; $fresh of 3 answer from the new index"
check "[ $(field update errors) = 0 ] && [ $(field update lost) = 0 ]" "update: wrong answers or lost requests"
check "[ $(server_aborts) = 0 ]" "update: HAProxy saw sessions ended abnormally"
check "[ $fresh = 3 ]" "update: $((3 - fresh)) replicas still answer from the old index"

echo "== f. HTTP API through HAProxy (TLS at HAProxy, plain HTTP to the replicas)"
health=$(python3 - "$HAPROXY_HTTP" "$W/tls/cert.pem" <<'PY' || true
import ssl, sys, urllib.request
ctx = ssl.create_default_context(cafile=sys.argv[2])
with urllib.request.urlopen(f"https://127.0.0.1:{sys.argv[1]}/health", context=ctx, timeout=5) as r:
    print(r.status)
PY
)
up_http=0
for i in 1 2 3; do
  [ "$(server_status tracer_http "tracer$i" | cut -d'|' -f1)" = UP ] && up_http=$((up_http + 1))
done
echo "   GET /health through HAProxy: ${health:-failed}; $up_http of 3 replicas UP in the HTTP backend"
check "[ '$health' = 200 ] && [ $up_http = 3 ]" "http: /health through HAProxy, or the HTTP backend's checks"
"$LT" --hits "$HITS" --misses "$MISSES" --connections "$CONNECTIONS" --quiet --json \
  --http "https://127.0.0.1:$HAPROXY_HTTP/api/1.1/lookup" --ca-file "$W/tls/cert.pem" \
  --objects-per-request 2 --duration 3 --warmup 1 >"$W/http.json" 2>"$W/http.err" || true
[ -s "$W/http.json" ] || fail "http: loadtest wrote no report: $(tail -3 "$W/http.err")"
show http "HTTPS lookups through HAProxy (3 s)"
check "[ $(field http errors) = 0 ] && [ $(field http lost) = 0 ]" "http: wrong answers or lost requests"

# ---- summary ----------------------------------------------------------------------------
echo
echo "== summary: $(nproc) cores, HAProxy $HAPROXY_VERSION, $ENTRIES entries, $CONNECTIONS connections, 1 request in flight each"
python3 - "$W" "$on_killed" <<'PY'
import json, sys
w, on_killed = sys.argv[1], sys.argv[2]
def r(name): return json.load(open(f"{w}/{name}.json"))["runs"][0]
d = [r(f"direct{i}")["requests_per_sec"] for i in (1, 2)]
h = [r(f"haproxy{i}")["requests_per_sec"] for i in (1, 2)]
rows = [
    ("one replica direct, req/s (2 rounds)", " / ".join(f"{x:,.0f}" for x in d)),
    ("HAProxy + 3 replicas, req/s", " / ".join(f"{x:,.0f}" for x in h)),
    ("HAProxy / direct", " / ".join(f"{b / a:.2f}" for a, b in zip(d, h))),
]
for name, label in [("rolling", "rolling restart, plain"), ("drained", "rolling restart, drain first"),
                    ("kill", "SIGKILL one replica"), ("update", "index update + SIGHUP"),
                    ("http", "HTTPS via HAProxy")]:
    x = r(name)
    rows.append((f"{label}: requests / errors / lost / reconnects",
                 f"{x['requests']:,} / {sum(x['errors'].values())} / {x['lost']} / {x['reconnects']}"))
rows.append(("SIGKILL: connections on the killed replica", on_killed))
width = max(len(a) for a, _ in rows)
for a, b in rows:
    print(f"{a:<{width}}  {b}")
PY
if [ ${#FAILED[@]} -gt 0 ]; then
  echo "FAILED:"
  printf '  %s\n' "${FAILED[@]}"
  exit 1
fi
echo "PASS"
