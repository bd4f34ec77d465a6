#!/usr/bin/env bash
# Server CPU per lookup, tracer beside Redis, on this machine.
#
# The measure is the server process's own CPU time (utime + stime from
# /proc/PID/stat) over a fixed run, divided by the requests it answered: it does not
# depend on how fast the client is. Both servers answer 32 connections on 127.0.0.1:
#
#   Redis 7 (distribution package): 1M keys with 100-byte values, `GET` of random keys
#     from redis-benchmark (-c 32; -P 1 and -P 64);
#   tracer: 1M MD5 keys from `tracer generate`, loadtest with one hash per request,
#     60 % hits (--connections 32; --depth 1 and --depth 64), every answer checked;
#     once with its default worker threads (one per core) and once with --threads 1.
#
# "closed loop" is one request in flight per connection (KUMA's way), "pipelined" 64.
#
#   scripts/bench-redis.sh              # 3 alternating rounds, about 6 minutes
#   TRACER_BIN=/path/to/other/tracer NOBUILD=1 scripts/bench-redis.sh   # another build
#   ROUNDS=1 SECS=5 scripts/bench-redis.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
SECS=${SECS:-10}
WORK=${WORK:-/tmp/tracer-redis-bench}
TRACER_BIN=${TRACER_BIN:-$PWD/target/release/tracer}
LT=${LOADTEST_BIN:-$PWD/target/release/loadtest}
RPORT=17379
TPORT=17380
T1PORT=17381

if ! command -v redis-server >/dev/null || ! command -v redis-benchmark >/dev/null; then
  echo "installing redis from the distribution's packages"
  SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
  $SUDO apt-get install -y redis-server redis-tools >/dev/null
fi
[ -n "${NOBUILD:-}" ] || cargo build --release -p tracer -p loadtest >/dev/null 2>&1
mkdir -p "$WORK"
if [ ! -f "$WORK/hashes.csv" ]; then
  "$TRACER_BIN" generate --out "$WORK" --urls 0 --ips 0 --domains 0 --hashes 1000000 2>/dev/null
fi
if ! "$TRACER_BIN" inspect "$WORK/hashes.csv.tracer" >/dev/null 2>&1; then
  "$TRACER_BIN" compile "$WORK/hashes.csv" -k md5 --kind hash >/dev/null 2>&1
fi
grep '^hash=' "$WORK/hits.txt" >"$WORK/hits-hash.txt"
grep '^hash=' "$WORK/misses.txt" >"$WORK/misses-hash.txt"

PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true' EXIT
redis-server --port $RPORT --bind 127.0.0.1 --save "" --appendonly no --daemonize no \
  --logfile "$WORK/redis.log" &
RPID=$!
PIDS+=($RPID)
for _ in $(seq 100); do redis-cli -p $RPORT ping >/dev/null 2>&1 && break; sleep 0.1; done
# 1M keys as redis-benchmark names them (key:000000000000 …), 100-byte values.
python3 -c '
v = "x" * 100
out = []
for i in range(1000000):
    k = "key:%012d" % i
    out.append("*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$100\r\n%s\r\n" % (len(k), k, v))
print("".join(out), end="")
' | redis-cli -p $RPORT --pipe >/dev/null
echo "redis: $(redis-cli -p $RPORT dbsize) keys"

# Two tracers: its default (a worker thread per core) and one worker thread, as Redis
# has one. On a machine whose cores the client shares, the one-thread server is the
# like-for-like comparison; the default one pays for waking two threads.
"$TRACER_BIN" serve --listen 127.0.0.1:$TPORT -l "$WORK/hashes.csv.tracer" 2>"$WORK/tracer.log" &
TPID=$!
PIDS+=($TPID)
"$TRACER_BIN" serve --threads 1 --listen 127.0.0.1:$T1PORT -l "$WORK/hashes.csv.tracer" 2>"$WORK/tracer1.log" &
T1PID=$!
PIDS+=($T1PID)
for log in tracer tracer1; do
  for _ in $(seq 300); do grep -q "index ready" "$WORK/$log.log" 2>/dev/null && break; sleep 0.1; done
done
THREADS=$(sed -n 's/.*(\([0-9]*\) worker threads.*/\1/p;T;q' "$WORK/tracer.log")

TICK=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# per-lookup CPU in µs: ticks before, ticks after, requests
per() { python3 -c "import sys; b,a,n,t=map(float,sys.argv[1:]); print('%.2f' % ((a-b)*1e6/t/n))" "$@" "$TICK"; }

redis_run() { # pipeline depth -> "µs/lookup requests/s"
  local n=$((SECS * 40000 * $1 / ($1 > 1 ? 4 : 1)))
  local b a out rps
  b=$(cpu $RPID)
  out=$(redis-benchmark -p $RPORT -c 32 -n $n -r 1000000 -t get -P "$1" -q 2>/dev/null | tr '\r' '\n' | grep -a "GET:" | tail -1)
  a=$(cpu $RPID)
  rps=$(echo "$out" | sed -E 's/.*GET: ([0-9.]+) requests.*/\1/')
  echo "$(per "$b" "$a" "$n") $rps"
}
tracer_run() { # pid port depth -> "µs/lookup requests/s errors"
  local pid=$1 port=$2; shift 2
  local b a json
  b=$(cpu "$pid")
  json=$("$LT" --addr 127.0.0.1:$port --hits "$WORK/hits-hash.txt" --misses "$WORK/misses-hash.txt" \
    --hit-ratio 0.6 --per-request 1 --connections 32 --depth "$1" --duration "$SECS" --warmup 0 --quiet --json)
  a=$(cpu "$pid")
  python3 -c '
import json, sys
r = json.loads(sys.argv[1])["runs"][0]
b, a, tick = float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
err = sum(r["errors"].values()) + r.get("lost", 0)
print("%.2f %.0f %d" % ((a - b) * 1e6 / tick / r["requests"], r["requests_per_sec"], err))
' "$json" "$b" "$a" "$TICK"
}

printf '%-6s %-10s %12s %12s | %12s %12s %6s | %12s %12s %6s\n' round mode "redis µs/op" "redis op/s" \
  "tracer×$THREADS µs" "op/s" ratio "tracer×1 µs" "op/s" ratio
for i in $(seq "$ROUNDS"); do
  for mode in closed pipelined; do
    depth=$([ $mode = closed ] && echo 1 || echo 64)
    read -r r_us r_rps < <(redis_run $depth)
    read -r t_us t_rps t_err < <(tracer_run $TPID $TPORT $depth)
    read -r o_us o_rps o_err < <(tracer_run $T1PID $T1PORT $depth)
    printf '%-6s %-10s %12s %12.0f | %12s %12s %6s | %12s %12s %6s%s\n' "$i" "$mode" "$r_us" "$r_rps" \
      "$t_us" "$t_rps" "$(python3 -c "print('%.2f' % ($t_us / $r_us))")" \
      "$o_us" "$o_rps" "$(python3 -c "print('%.2f' % ($o_us / $r_us))")" \
      "$([ "$t_err$o_err" = 00 ] || echo "  (tracer errors: $t_err, $o_err)")"
  done
done
