# The image Kubernetes runs for Weft: the control plane (`weft control`), istio-init
# (`weft iptables`) and istio-proxy (`weft proxy`), all one static `weft` binary, which is
# the entrypoint. `weft kube-inject` and the webhook name it `weft:VERSION` by default:
#
#   docker build -t weft:0.1.0 .
#
# No image can be built or pulled on Weft's development machines, so this recipe is not
# exercised by `.ci/run`.
FROM rust:1-alpine AS build
# ring and mimalloc compile C; musl makes the binary static.
RUN apk add --no-cache build-base
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p weft \
 && strip target/release/weft

FROM alpine:3
# istio-init loads its rules with iptables-restore; TLS origination trusts the system's CAs.
RUN apk add --no-cache iptables ca-certificates
COPY --from=build /src/target/release/weft /usr/local/bin/weft
# The sidecar runs as 1337 (the pod's securityContext says so too); istio-init as root.
USER 1337:1337
ENTRYPOINT ["/usr/local/bin/weft"]
