#!/usr/bin/env bash
# The control plane at scale (bench/README.md, "Control plane at scale"): 1,000 simulated
# proxies against `weft control` serving 5,000 services with 10 endpoints each over 50
# namespaces, 100 endpoint changes. Runs it twice: with proxies that give up as `weft proxy`
# does, and with patient ones that wait however long the control plane stalls. Writes
# bench/results/control-plane.{md,json} and control-plane.patient.{md,json}, then once
# on Kubernetes (control-plane.kubernetes.{md,json}), once without Sidecars
# (control-plane.no-sidecars.*) and once with 10,000 proxies
# (control-plane.10000-proxies.*); extra options go to every run (e.g. --services 1000).
# Then the dashboard's aggregator at the same scale.
set -euo pipefail
cd "$(dirname "$0")/.."
# A connection per simulated proxy in this process and in the control plane's.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
cargo build --release -p weft
target/release/weft bench control-plane --out bench/results "$@"
target/release/weft bench control-plane --patient --out bench/results "$@"
# The same mesh in a fake Kubernetes API server, each change an EndpointSlice update
# through weft control --kubernetes's watch (bench/results/control-plane.kubernetes.md).
target/release/weft bench control-plane --kubernetes --out bench/results "$@"
# Every proxy sees all 55,050 objects: memory must grow with views, not proxies.
target/release/weft bench control-plane --no-sidecars --out bench/results "$@"
# The scale goal: 10,000 proxies converge on an endpoint change at p99 < 1 s in < 2 GiB.
target/release/weft bench control-plane --proxies 10000 --out bench/results "$@"
# The dashboard's aggregator scraping 1,000 simulated proxies (bench/results/dashboard.md).
target/release/weft bench dashboard --out bench/results
