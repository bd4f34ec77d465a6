#!/usr/bin/env bash
# What enrichers cost, measured with `loadtest` against servers on 127.0.0.1 and the
# MISP-like upstream of the tests (`examples/mock_misp.rs`), all on this machine:
#
#   A. feed-only traffic, with a `misp` enricher configured for a kind the traffic
#      does not hold, against the same server without enrichers (interleaved runs);
#   B. every lookup answered from the enricher's cache, against feed-only;
#   C. cache misses against an upstream answering in 5 ms, 32 KUMA-like connections
#      (one indicator per request): throughput vs `concurrency / latency`, and p99;
#   D. an upstream that hangs: the p99 of feed-only connections running beside
#      connections whose lines wait on it, vs the same feed-only load alone; and how
#      long the waiting lines took (the enricher's `timeout` is 2 s).
#
#   scripts/bench-enrichers.sh            # about 8 minutes
#   RUNS=3 SECS=5 PARTS="C D" scripts/bench-enrichers.sh
#
# Every run checks every answer (a wrong hit or miss is an error) and prints its
# errors. Traffic goes to 127.0.0.1 only; every process stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-5}
SECS=${SECS:-10}
PARTS=${PARTS:-"A B C D"}
WORK=${WORK:-$(mktemp -d /tmp/tracer-enrich-bench.XXXXXX)}
T=$PWD/target/release/tracer
LT=$PWD/target/release/loadtest
MOCK=$PWD/target/release/examples/mock_misp
PORT=17950
UP=17960
MET=17970

if [ -z "${NOBUILD:-}" ]; then
  cargo build --release -p tracer -p loadtest >/dev/null 2>&1
  cargo build --release --example mock_misp >/dev/null 2>&1
fi
mkdir -p "$WORK"
if [ ! -f "$WORK/urls.json.tracer" ]; then
  "$T" generate --out "$WORK" --urls 100000 --hashes 100000 --ips 20000 --domains 10000 2>/dev/null
  for f in "urls.json mask url" "hashes.csv md5 hash" "ips.csv ip ip" "domains.txt domain domain"; do
    set -- $f
    "$T" compile "$WORK/$1" -k "$2" --kind "$3" >/dev/null 2>&1
  done
fi
# Workloads: without hashes (A, D's feed-only side), hashes only (D's waiting side),
# and a small one whose every value fits the cache (B).
grep -v '^hash=' "$WORK/hits.txt" >"$WORK/hits-nohash.txt"
grep -v '^hash=' "$WORK/misses.txt" >"$WORK/misses-nohash.txt"
grep '^hash=' "$WORK/hits.txt" >"$WORK/hits-hash.txt"
grep '^hash=' "$WORK/misses.txt" >"$WORK/misses-hash.txt"
shuf -n 4000 --random-source=<(yes) "$WORK/hits.txt" >"$WORK/hits-small.txt"
shuf -n 16000 --random-source=<(yes) "$WORK/misses.txt" >"$WORK/misses-small.txt"

base() {
  cat <<EOF
listen = "127.0.0.1:$PORT"
threads = 2
[metrics]
listen = "127.0.0.1:$MET"
[[index]]
path = "$WORK/urls.json.tracer"
[[index]]
path = "$WORK/hashes.csv.tracer"
[[index]]
path = "$WORK/ips.csv.tracer"
[[index]]
path = "$WORK/domains.txt.tracer"
EOF
}
misp() {
  cat <<EOF
[[enricher]]
name = "misp"
type = "misp"
url = "http://127.0.0.1:$UP"
key = "bench-key"
$1
EOF
}
base >"$WORK/base.toml"
{ base; misp 'kinds = ["hash"]'; } >"$WORK/na.toml"
{ base; misp 'cache_size = 100000
ttl = "1h"
negative_ttl = "1h"'; } >"$WORK/cached.toml"
{ base; misp 'ttl = "1ms"
negative_ttl = "1ms"
concurrency = 32'; } >"$WORK/miss.toml"
{ base; misp 'kinds = ["hash"]
breaker_failures = 1000000000'; } >"$WORK/hang.toml"

SERVER=
MOCKPID=
stop() {
  [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null && wait "$SERVER" 2>/dev/null || true
  SERVER=
}
stop_mock() {
  [ -n "$MOCKPID" ] && kill "$MOCKPID" 2>/dev/null && wait "$MOCKPID" 2>/dev/null || true
  MOCKPID=
}
trap 'stop; stop_mock' EXIT
serve() {
  "$T" serve --config "$WORK/$1.toml" 2>"$WORK/$1.log" &
  SERVER=$!
  for _ in $(seq 200); do
    grep -q "listening on" "$WORK/$1.log" 2>/dev/null && return
    sleep 0.1
  done
  echo "server $1 did not start"; cat "$WORK/$1.log"; exit 1
}
mock() {
  stop_mock
  "$MOCK" --listen 127.0.0.1:$UP --key bench-key --exit-after 900 "$@" 2>"$WORK/mock.log" &
  MOCKPID=$!
  sleep 0.5
}
metric() { # name: the enricher's counter
  curl -s "http://127.0.0.1:$MET/metrics" | awk -v m="$1{enricher=\"misp\"}" '$1 == m {print $2}'
}
# loadtest [args…]: one JSON report on stdout
load() { "$LT" --addr 127.0.0.1:$PORT --quiet --json "$@"; }
part() { [[ " $PARTS " == *" $1 "* ]]; }
summary() { # label, report on stdin
  python3 -c '
import json, sys
r = json.load(sys.stdin)["runs"][0]
lat = r["latency_us"]
err = sum(r["errors"].values()) + r["lost"]
print("%-34s %10.0f req/s %10.0f lookups/s  p50 %7d µs  p99 %8d µs  max %8d µs  errors %d"
      % (sys.argv[1], r["requests_per_sec"], r["lookups_per_sec"], lat["p50"], lat["p99"], lat["max"], err))
' "$1"
}

if part A; then
echo "== A. feed-only traffic (no hashes), misp enricher for hashes only vs none; $RUNS interleaved runs of ${SECS} s, 32 connections"
NOHASH=(--hits "$WORK/hits-nohash.txt" --misses "$WORK/misses-nohash.txt" --connections 32 --duration "$SECS" --warmup 1)
mock
for i in $(seq "$RUNS"); do
  for cfg in base na; do
    serve $cfg
    load "${NOHASH[@]}" | summary "A $cfg (run $i)"
    stop
  done
done
fi

if part B; then
echo "== B. every lookup from the enricher cache vs feed-only; 20,000 distinct values, 32 connections, interleaved"
SMALL=(--hits "$WORK/hits-small.txt" --misses "$WORK/misses-small.txt" --connections 32 --duration "$SECS" --warmup 1)
mock --known "$WORK/hits-small.txt"
serve cached
CACHED=$SERVER
# Warm the cache: every value asked once (pipelined, 256 lines at a time).
python3 - "$WORK" $PORT <<'EOF'
import socket, sys
work, port = sys.argv[1], int(sys.argv[2])
values = [l.strip() for f in ("hits-small.txt", "misses-small.txt") for l in open(f"{work}/{f}") if l.strip()]
s = socket.create_connection(("127.0.0.1", port))
end = b"LookupFinished\n"
for i in range(0, len(values), 256):
    chunk = values[i:i + 256]
    s.sendall(b"".join(v.encode() + b"\n" for v in chunk))
    seen, tail = 0, b""
    while seen < len(chunk):
        data = s.recv(1 << 20)
        if not data:
            sys.exit("the server closed the connection while warming")
        data = tail + data
        seen += data.count(end)
        tail = data[-(len(end) - 1):]
s.close()
EOF
echo "cache warmed: $(metric tracer_enricher_calls_total) upstream calls"
calls_before=$(metric tracer_enricher_calls_total)
# The feed-only server on the next port, so both stay up and the runs alternate.
sed "s/127.0.0.1:$PORT/127.0.0.1:$((PORT + 1))/; s/127.0.0.1:$MET/127.0.0.1:$((MET + 1))/" "$WORK/base.toml" >"$WORK/base2.toml"
"$T" serve --config "$WORK/base2.toml" 2>"$WORK/base2.log" &
BASE2=$!
for _ in $(seq 200); do grep -q "listening on" "$WORK/base2.log" 2>/dev/null && break; sleep 0.1; done
for i in $(seq "$RUNS"); do
  load "${SMALL[@]}" | summary "B cached (run $i)"
  "$LT" --addr 127.0.0.1:$((PORT + 1)) --quiet --json "${SMALL[@]}" | summary "B feed-only (run $i)"
done
echo "upstream calls during the cached runs: $(( $(metric tracer_enricher_calls_total) - calls_before ))"
kill $BASE2; wait $BASE2 2>/dev/null || true
stop
fi

if part C; then
echo "== C. cache misses, upstream answering in 5 ms, concurrency 32: expect about 32 / 5 ms = 6,400 calls/s"
mock --delay-ms 5
serve miss
for i in $(seq 3); do
  c0=$(metric tracer_enricher_calls_total)
  load --hits "$WORK/hits.txt" --misses "$WORK/misses.txt" --connections 32 --per-request 1 --duration "$SECS" --warmup 0 \
    | summary "C misses, 5 ms upstream (run $i)"
  c1=$(metric tracer_enricher_calls_total)
  echo "   upstream calls: $(( (c1 - c0) / SECS ))/s (including the last second's stragglers)"
done
echo "   cache hits: $(metric tracer_enricher_cache_hits_total), misses: $(metric tracer_enricher_cache_misses_total)"
stop
fi

if part D; then
echo "== D. upstream hanging (timeout 2 s): feed-only p99 beside 16 waiting connections, vs alone"
mock --hang
serve hang
RATE=(--rate 10000 --connections 16 --duration "$SECS" --warmup 1)
load --hits "$WORK/hits-nohash.txt" --misses "$WORK/misses-nohash.txt" "${RATE[@]}" | summary "D feed-only, alone"
load --hits "$WORK/hits-hash.txt" --misses "$WORK/misses-hash.txt" --connections 16 --duration $((SECS + 4)) --warmup 0 >"$WORK/waiting.json" &
WAITING=$!
sleep 1
load --hits "$WORK/hits-nohash.txt" --misses "$WORK/misses-nohash.txt" "${RATE[@]}" | summary "D feed-only, beside hanging"
wait $WAITING
summary "D lines waiting on the upstream" <"$WORK/waiting.json"
echo "   timeouts: $(metric tracer_enricher_timeouts_total)"
stop
fi
stop_mock
