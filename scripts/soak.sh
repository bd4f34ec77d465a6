#!/usr/bin/env bash
# Soak test: serve for DURATION seconds (default 1200) at about half the closed-loop
# maximum, with a SIGHUP reload every 30 s and connections churning (a quarter of
# them replaced every 3 s), checking every answer. Passes when there were zero answer
# errors and zero lost requests, resident memory stayed within 5 % after the warm-up,
# and the open descriptors did not grow (beyond the connections being replaced at
# the moment of a sample).
#
#   scripts/soak.sh                    # 20 minutes
#   DURATION=120 scripts/soak.sh       # a short run
#
# Traffic goes to 127.0.0.1 only. Needs a release build (made here) and about 1 GB of
# disk in $WORK (default: a temp dir).
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-1200}
WARMUP=${WARMUP:-120}
CONNECTIONS=${CONNECTIONS:-32}
PORT=${PORT:-17900}
WORK=${WORK:-$(mktemp -d /tmp/tracer-soak.XXXXXX)}
T=target/release/tracer
LT=target/release/loadtest

cargo build --release -p tracer -p loadtest >/dev/null
mkdir -p "$WORK"
if [ ! -f "$WORK/urls.json.tracer" ]; then
  "$T" generate --out "$WORK" --urls 200000 --hashes 200000 --ips 50000 --domains 20000 2>/dev/null
  for f in "urls.json mask url" "hashes.csv md5 hash" "ips.csv ip ip" "domains.txt domain domain"; do
    set -- $f
    "$T" compile "$WORK/$1" -k "$2" --kind "$3" >/dev/null 2>&1
  done
fi
"$T" serve --listen 127.0.0.1:$PORT --log-file "$WORK/serve.log" \
  -l "$WORK/urls.json.tracer" -l "$WORK/hashes.csv.tracer" \
  -l "$WORK/ips.csv.tracer" -l "$WORK/domains.txt.tracer" 2>/dev/null &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break
  sleep 0.1
done

WORKLOAD=(--addr 127.0.0.1:$PORT --hits "$WORK/hits.txt" --misses "$WORK/misses.txt" --per-request 2)
max=$("$LT" "${WORKLOAD[@]}" --connections "$CONNECTIONS" --duration 10 --warmup 2 --json \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["runs"][0]["requests_per_sec"])')
rate=$(python3 -c "print(int($max / 2))")
echo "closed-loop maximum: $max requests/s; soaking at $rate requests/s for ${DURATION} s"

"$LT" "${WORKLOAD[@]}" --connections "$CONNECTIONS" --rate "$rate" --churn $((CONNECTIONS / 4)) \
  --churn-every 3 --duration "$DURATION" --warmup 0 --quiet --json >"$WORK/loadtest.json" &
LOAD=$!

samples="$WORK/samples.csv"
echo "seconds,rss_kib,fds" >"$samples"
start=$(date +%s)
while kill -0 $LOAD 2>/dev/null; do
  sleep 30
  now=$(( $(date +%s) - start ))
  # Sampled just before each reload: the previous index has long been released.
  rss=$(awk '/VmRSS/ {print $2}' /proc/$SERVER/status)
  fds=$(ls /proc/$SERVER/fd | wc -l)
  echo "$now,$rss,$fds" >>"$samples"
  kill -HUP $SERVER
done
wait $LOAD || true
reloads=$(grep -c "index reloaded" "$WORK"/serve.log* || true)
kill -TERM $SERVER
wait $SERVER
trap - EXIT

python3 - "$WORK/loadtest.json" "$samples" "$WARMUP" "$reloads" "$((CONNECTIONS / 4))" <<'PY'
import csv, json, sys
report = json.load(open(sys.argv[1]))["runs"][0]
rows = [r for r in csv.DictReader(open(sys.argv[2]))]
warm = [r for r in rows if int(r["seconds"]) > int(sys.argv[3])]
rss = [int(r["rss_kib"]) for r in warm]
fds = [int(r["fds"]) for r in warm]
errors = sum(report["errors"].values())
spread = (max(rss) - min(rss)) / min(rss) * 100 if rss else float("nan")
# Connections being replaced come and go between samples: up to the churning
# connections' number is not growth.
churning = int(sys.argv[5])
fd_growth = fds[-1] - fds[0] if fds else 0
print(f"requests {report['requests']} at {report['requests_per_sec']:.0f}/s, "
      f"p99 {report['latency_us']['p99']} µs, errors {errors}, lost {report['lost']}, "
      f"reconnects {report['reconnects']}, reloads {sys.argv[4]}")
print(f"after the {sys.argv[3]} s warm-up: RSS {min(rss)}–{max(rss)} KiB ({spread:.1f} % spread), "
      f"descriptors {min(fds)}–{max(fds)} (growth {fd_growth})")
ok = errors == 0 and report["lost"] == 0 and spread <= 5.0 and fd_growth <= churning
print("PASS" if ok else "FAIL")
sys.exit(0 if ok else 1)
PY
