#!/usr/bin/env bash
# The README's demo command: installs what `weft demo` runs inside its namespaces when it
# is missing (iptables, iproute2, util-linux's unshare and setpriv, and Prometheus, which the
# demo runs as Istio's addon), then builds weft and runs `weft demo` with this script's
# arguments (say --load 20).
set -euo pipefail
cd "$(dirname "$0")/../.."

# ip and iptables live in /usr/sbin, which a non-root user's PATH often lacks, and the
# platform runs them by name.
export PATH="$PATH:/usr/sbin:/sbin"
missing=()
command -v iptables >/dev/null || missing+=(iptables)
command -v ip >/dev/null || missing+=(iproute2)
{ command -v unshare && command -v setpriv; } >/dev/null || missing+=(util-linux)
command -v prometheus >/dev/null || missing+=(prometheus)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    # Debian starts an installed prometheus as a system service on :9090, where the demo's
    # own listens: policy-rc.d keeps services from starting during this install.
    policy=/usr/sbin/policy-rc.d ours=
    if [ ! -e "$policy" ]; then
      printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy" && ours=1
      trap 'rm -f "$policy"' EXIT
    fi
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    if [ -n "$ours" ]; then rm -f "$policy"; trap - EXIT; fi
  else
    echo "weft demo needs ${missing[*]}: install them (sudo apt-get install ${missing[*]})" >&2
    exit 1
  fi
fi

exec cargo run --release -p weft -- demo "$@"
