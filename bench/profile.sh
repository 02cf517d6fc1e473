#!/usr/bin/env bash
# Profiles the client-side Weft proxy of a two-hop pair at saturation (64 connections,
# HTTP/1.1, 1 KiB) with perf's software clock, and prints the load generator's figures and
# the hottest symbols and objects. Needs linux-perf (apt-get install linux-perf).
# LOAD replaces the workload's options: gRPC unary at 1,000 rps is
# LOAD="--grpc --rate 1000 --authority bench.default.svc.cluster.local:8081".
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p weft
weft=target/release/weft
dir=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$dir"' EXIT
mkdir -p "$dir/config"
"$weft" bench config > "$dir/config/bench.yaml"
"$weft" bench server --listen 127.0.0.21:8080 &
proxy() {
  WEFT_LOG=warn "$weft" proxy --config "$dir/config" --no-capture --access-log off --workers 2 \
    --outbound "$1:15001" --inbound "$1:15006" --admin "$1:15000" --health "$1:15021" \
    --stats "$1:15020" --envoy-stats "$1:15090" "${@:2}" &
}
proxy 127.0.0.22
client=$!
proxy 127.0.0.23 --inbound-target 127.0.0.21:8080
for addr in 127.0.0.21:8080 127.0.0.22:15021 127.0.0.23:15021; do
  until (exec 3<>"/dev/tcp/${addr%:*}/${addr#*:}") 2>/dev/null; do sleep 0.05; done
done
# shellcheck disable=SC2086 # LOAD is a list of options.
"$weft" bench load --target 127.0.0.22:15001 ${LOAD:---connections 64} --seconds "${SECONDS_UNDER_LOAD:-14}" > "$dir/load.json" &
load=$!
sleep 2
perf record -F 499 -g -o "$dir/perf.data" -p "$client" -- sleep 10 2>/dev/null
wait "$load"
grep -E '"(throughput|p50_us|p99_us)"' "$dir/load.json"
perf report -i "$dir/perf.data" --no-children --sort dso --stdio 2>/dev/null | grep -E '^ +[0-9]' | head -5
perf report -i "$dir/perf.data" --no-children --sort symbol --stdio 2>/dev/null | grep -E '^ +[0-9]' | head -25
