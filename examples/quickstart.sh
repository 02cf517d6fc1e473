#!/usr/bin/env bash
# Builds weft, starts the control plane, two stand-in workloads and a sidecar proxy on
# loopback, applies examples/reviews through the control plane, sends requests through the
# proxy, changes the routing and watches the proxy converge; cleans up on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p weft
weft=target/release/weft
state=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$state"' EXIT
export WEFT_CONTROL_PLANE=http://127.0.0.1:15010
wait_for() { # URL: poll until it answers 200
  for _ in $(seq 100); do curl -fs "$1" >/dev/null && return; sleep 0.1; done
  echo "$1 did not answer" >&2; exit 1
}
"$weft" control --config-dir "$state/config" --grpc 127.0.0.1:15010 --monitoring 127.0.0.1:15014 \
  2>"$state/control.log" & pids+=($!)
wait_for http://127.0.0.1:15014/ready
"$weft" echo --name reviews-v1 --listen 127.0.0.11:9080 & pids+=($!)
"$weft" echo --name reviews-v2 --listen 127.0.0.12:9080 & pids+=($!)
"$weft" proxy --control-plane "$WEFT_CONTROL_PLANE" --workload-name productpage-v1 \
  --labels app=productpage,version=v1 --no-capture \
  --outbound 127.0.0.1:15001 --inbound 127.0.0.1:15006 --admin 127.0.0.1:15000 --health 127.0.0.1:15021 --stats 127.0.0.1:15020 \
  >"$state/access.log" 2>"$state/proxy.log" & pids+=($!)
wait_for http://127.0.0.1:15021/healthz/ready
echo "== weft apply -f examples/reviews"
"$weft" apply -f examples/reviews
synced() { # VERSION-BEFORE: wait until every proxy acknowledged something newer
  for _ in $(seq 100); do
    "$weft" proxy-status -o json | grep -q '"status": "SYNCED"' &&
      ! "$weft" proxy-status -o json | grep -q "\"ackedVersion\": \"$1\"" && return
    sleep 0.1
  done
  echo "the proxy did not converge" >&2; exit 1
}
synced none
"$weft" proxy-status
echo "== weft proxy-config routes productpage-v1"
"$weft" proxy-config routes productpage-v1
echo "== as jason (header match -> v2)"
curl -s -x http://127.0.0.1:15001 -H 'end-user: jason' http://reviews:9080/reviews/0
echo "== 20 anonymous requests (90/10 split)"
for _ in $(seq 20); do curl -s -x http://127.0.0.1:15001 http://reviews:9080/reviews/0; done | sort | uniq -c
echo "== everyone to v2: apply, wait for the acknowledgement, send"
before=$("$weft" proxy-status -o json | sed -n 's/.*"ackedVersion": "\(.*\)".*/\1/p')
sed 's/weight: 90/weight: 0/; s/weight: 10/weight: 100/' examples/reviews/routing.yaml | "$weft" apply -f -
synced "$before"
for _ in $(seq 5); do curl -s -x http://127.0.0.1:15001 http://reviews:9080/reviews/0; done | sort | uniq -c
echo "== a host the mesh does not know (REGISTRY_ONLY -> 502)"
curl -s -x http://127.0.0.1:15001 http://example.com/ | head -1
echo "== weft version"
"$weft" version
echo "== done"
