#!/usr/bin/env bash
# The HTTP API's throughput beside the line protocol's, in one session, on the
# headline index (1M URL masks, 1M hashes, 200k IPs, 100k domains), as `loadtest`
# measures it: 32 keep-alive connections, closed loop, 10 objects per request (10
# indicators per line for the line protocol), every answer checked.
#
# Three servers run side by side on 127.0.0.1 (only one is loaded at a time):
#   tcp   no HTTP listener           -> the line protocol alone
#   tls   HTTPS listener with a user -> line protocol with an idle HTTP listener, and HTTPS
#   plain plain-HTTP listener        -> plain HTTP
# and the runs alternate, ROUNDS times.
#
#   scripts/bench-http.sh                  # about 5 minutes, after the data exists
#   ROUNDS=1 SECS=5 scripts/bench-http.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
SECS=${SECS:-10}
GEN=${GEN:-/tmp/gen}
WORK=${WORK:-$(mktemp -d /tmp/tracer-http-bench.XXXXXX)}
T=$PWD/target/release/tracer
LT=$PWD/target/release/loadtest
[ -n "${NOBUILD:-}" ] || cargo build --release -p tracer -p loadtest >/dev/null 2>&1
if [ ! -f "$GEN/urls.json" ]; then
  "$T" generate --out "$GEN" --urls 1000000 --hashes 1000000 --ips 200000 --domains 100000 2>/dev/null
fi
# (Re)compile when an index is missing or of another format version.
if ! "$T" inspect "$GEN/urls.json.tracer" "$GEN/hashes.csv.tracer" "$GEN/ips.csv.tracer" \
    "$GEN/domains.txt.tracer" >/dev/null 2>&1; then
  for f in "urls.json mask url" "hashes.csv md5 hash" "ips.csv ip ip" "domains.txt domain domain"; do
    set -- $f
    "$T" compile "$GEN/$1" -k "$2" --kind "$3" >/dev/null 2>&1
  done
fi
mkdir -p "$WORK"
"$T" cert --host 127.0.0.1 --out "$WORK" --force >/dev/null
HASH=$(echo 'bench-password' | "$T" passwd)
INDEXES=(-l "$GEN/urls.json.tracer" -l "$GEN/hashes.csv.tracer" -l "$GEN/ips.csv.tracer" -l "$GEN/domains.txt.tracer")
cat >"$WORK/tls.toml" <<EOF
[http]
listen = "127.0.0.1:17981"
tls_cert = "cert.pem"
tls_key = "key.pem"

[[http.user]]
name = "kuma"
password_hash = "$HASH"
EOF
cat >"$WORK/plain.toml" <<EOF
[http]
listen = "127.0.0.1:17982"
tls = false
EOF
echo 'listen = "127.0.0.1:17970"' >"$WORK/tcp.toml"

PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true' EXIT
start() { # name, line-protocol port
  "$T" serve --config "$WORK/$1.toml" --listen "127.0.0.1:$2" "${INDEXES[@]}" 2>"$WORK/$1.log" &
  PIDS+=($!)
  for _ in $(seq 600); do grep -q "index ready" "$WORK/$1.log" 2>/dev/null && return; sleep 0.1; done
  echo "server $1 did not start"; cat "$WORK/$1.log"; exit 1
}
start tcp 17970
start tls 17980
start plain 17983

WORKLOAD=(--hits "$GEN/hits.txt" --misses "$GEN/misses.txt" --connections 32 --duration "$SECS" --warmup 2 --quiet --json)
summary() {
  python3 -c '
import json, sys
r = json.load(sys.stdin)["runs"][0]
lat = r["latency_us"]
err = sum(r["errors"].values()) + r["lost"]
print("%-40s %10.0f lookups/s %8.0f requests/s  p50 %6d µs  p99 %7d µs  errors %d"
      % (sys.argv[1], r["lookups_per_sec"], r["requests_per_sec"], lat["p50"], lat["p99"], err))
' "$1"
}
for i in $(seq "$ROUNDS"); do
  "$LT" --addr 127.0.0.1:17970 --per-request 10 "${WORKLOAD[@]}" | summary "TCP, no HTTP listener (round $i)"
  "$LT" --addr 127.0.0.1:17980 --per-request 10 "${WORKLOAD[@]}" | summary "TCP, idle HTTPS listener (round $i)"
  "$LT" --http https://127.0.0.1:17981/api/1.1/lookup --ca-file "$WORK/cert.pem" --user kuma \
    --password bench-password --objects-per-request 10 "${WORKLOAD[@]}" | summary "HTTPS (round $i)"
  "$LT" --http http://127.0.0.1:17982/api/1.1/lookup --objects-per-request 10 "${WORKLOAD[@]}" \
    | summary "plain HTTP (round $i)"
done
