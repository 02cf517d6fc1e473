#!/usr/bin/env bash
# Instructions per request on the request path, counted by callgrind. Unlike CPU time, the
# count does not move with whatever else this shared machine runs, so before and after a
# request-path change compare here. The client-side proxy of a plaintext pair (routing, a
# subset, Istio's retry policy and metrics, 1 % tracing off: no collector) runs under
# callgrind with instrumentation off until it has warmed up; each workload is then counted
# on its own, HTTP/1.1 with a 1 KiB response and gRPC unary, at a rate callgrind keeps up
# with. Prints instructions per request and the functions that execute most of them.
# WEFT=path/to/weft skips the build; REQUESTS sets the rate over 10 s (default 40/s).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${WEFT:-}" ]; then
  cargo build --release -p weft
  WEFT=target/release/weft
fi
rate=${REQUESTS:-40}
dir=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; [ -n "${KEEP:-}" ] || rm -rf "$dir"' EXIT
mkdir -p "$dir/config"
"$WEFT" bench config > "$dir/config/bench.yaml"
"$WEFT" bench server --listen 127.0.0.21:8080 &
proxy_args=(proxy --config "$dir/config" --no-capture --access-log off --workers 2)
WEFT_LOG=warn valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$dir/callgrind.out.%p" \
  "$WEFT" "${proxy_args[@]}" --outbound 127.0.0.22:15001 --inbound 127.0.0.22:15006 \
  --admin 127.0.0.22:15000 --health 127.0.0.22:15021 --stats 127.0.0.22:15020 \
  --envoy-stats 127.0.0.22:15090 2> "$dir/valgrind.log" &
client=$!
WEFT_LOG=warn "$WEFT" "${proxy_args[@]}" --outbound 127.0.0.23:15001 --inbound 127.0.0.23:15006 \
  --admin 127.0.0.23:15000 --health 127.0.0.23:15021 --stats 127.0.0.23:15020 \
  --envoy-stats 127.0.0.23:15090 --inbound-target 127.0.0.21:8080 &
for addr in 127.0.0.21:8080 127.0.0.22:15021 127.0.0.23:15021; do
  for _ in $(seq 600); do
    (exec 3<>"/dev/tcp/${addr%:*}/${addr#*:}") 2>/dev/null && continue 2
    sleep 0.1
  done
  echo "$addr did not listen; see $dir/valgrind.log" >&2
  exit 1
done
http1=(--target 127.0.0.22:15001 --connections 4)
grpc=(--target 127.0.0.22:15001 --connections 4 --grpc --authority bench.default.svc.cluster.local:8081)
# Warm-up: connection pools, allocator segments, lazily built tables.
"$WEFT" bench load "${http1[@]}" --rate "$rate" --seconds 3 > /dev/null
"$WEFT" bench load "${grpc[@]}" --rate "$rate" --seconds 3 > /dev/null
count() {
  local name=$1
  shift
  callgrind_control -z "$client" > /dev/null 2>&1
  callgrind_control -i on "$client" > /dev/null 2>&1
  "$WEFT" bench load "$@" --rate "$rate" --seconds 10 > "$dir/$name.json"
  callgrind_control -i off "$client" > /dev/null 2>&1
  callgrind_control -d "$name" "$client" > /dev/null 2>&1
  local out requests errors ir
  out=$(grep -l "^desc: Trigger: .*dump $name\$" "$dir"/callgrind.out.* | head -1)
  requests=$(sed -n 's/.*"requests": \([0-9]*\).*/\1/p' "$dir/$name.json")
  errors=$(sed -n 's/.*"errors": \([0-9]*\).*/\1/p' "$dir/$name.json")
  callgrind_annotate "$out" > "$dir/$name.annotated" 2>/dev/null
  ir=$(sed -n 's/^ *\([0-9,]*\) .*PROGRAM TOTALS.*/\1/p' "$dir/$name.annotated" | tr -d ,)
  echo "$name: $((ir / (requests + errors))) instructions per request ($requests requests, $errors errors, $ir instructions)"
  sed -n '/^Ir/,$p' "$dir/$name.annotated" | sed -n 1,24p > "$dir/$name.top"
}
count http1 "${http1[@]}"
count grpc "${grpc[@]}"
for name in http1 grpc; do
  echo
  echo "$name: the functions that execute the most instructions (self)"
  cat "$dir/$name.top"
done
