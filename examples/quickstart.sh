#!/usr/bin/env bash
# Builds weft, starts two stand-in workloads and a sidecar proxy on loopback with the
# config in examples/reviews, sends requests through it, and cleans up on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p weft
weft=target/release/weft
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
"$weft" echo --name reviews-v1 --listen 127.0.0.11:9080 & pids+=($!)
"$weft" echo --name reviews-v2 --listen 127.0.0.12:9080 & pids+=($!)
"$weft" proxy --config examples/reviews --no-capture \
  --outbound 127.0.0.1:15001 --inbound 127.0.0.1:15006 --admin 127.0.0.1:15000 --health 127.0.0.1:15021 \
  >/tmp/weft-quickstart-access.log & pids+=($!)
for _ in $(seq 100); do
  curl -fs http://127.0.0.1:15021/healthz/ready >/dev/null && break
  sleep 0.1
done
curl -fs http://127.0.0.1:15021/healthz/ready >/dev/null || { echo "proxy did not become ready" >&2; exit 1; }
echo "== as jason (header match -> v2)"
curl -s -x http://127.0.0.1:15001 -H 'end-user: jason' http://reviews:9080/reviews/0
echo "== 20 anonymous requests (90/10 split)"
for _ in $(seq 20); do curl -s -x http://127.0.0.1:15001 http://reviews:9080/reviews/0; done | sort | uniq -c
echo "== a host the mesh does not know (REGISTRY_ONLY -> 502)"
curl -s -x http://127.0.0.1:15001 http://example.com/ | head -1
echo "== the proxy's access log"
tail -3 /tmp/weft-quickstart-access.log
echo "== done; the compiled config is at http://127.0.0.1:15000/config_dump while the proxy runs"
