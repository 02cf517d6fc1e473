"""Renders a Helm chart offline with Helm's own SDK (helm-python-sdk) and prints it as one
YAML stream, as `helm template` does: python helm_render.py CHART [VALUES_JSON]."""

import json
import sys

import helm_python as helm

chart = helm.Chart.load(sys.argv[1])
values = json.loads(sys.argv[2]) if len(sys.argv) > 2 else None
rendered = chart.render(values, name="weft", namespace="istio-system", is_install=True)
for path in sorted(rendered):
    print(f"---\n# Source: {path}\n{rendered[path]}")
