"""Checks Istio objects' specs against CRDs as the API server types them:
python crd_validate.py FILE, FILE being JSON {"crds": [CRD...], "objects": [{"at", "object"}...]}.
jsonschema checks OpenAPI's types, enums and bounds; a field an object's schema does not
list is refused, as kubectl's strict field validation refuses it (unless the node keeps
unknown fields). Prints one JSON line per object of a kind a CRD serves: at, kind, errors."""

import json
import sys

import jsonschema


def strict(node):
    if not isinstance(node, dict) or node.get("x-kubernetes-preserve-unknown-fields"):
        return node
    node = dict(node)
    if "properties" in node:
        node["properties"] = {k: strict(v) for k, v in node["properties"].items()}
        node.setdefault("additionalProperties", False)
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            node[key] = strict(node[key])
    return node


with open(sys.argv[1]) as f:
    given = json.load(f)
schemas = {}
for crd in given["crds"]:
    for version in crd["spec"]["versions"]:
        api_version = f'{crd["spec"]["group"]}/{version["name"]}'
        spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
        schemas[(api_version, crd["spec"]["names"]["kind"])] = strict(spec)
for item in given["objects"]:
    obj = item["object"]
    schema = schemas.get((obj.get("apiVersion"), obj.get("kind")))
    if schema is None:
        continue
    errors = [
        f'spec/{"/".join(map(str, e.absolute_path))}: {e.message}'
        for e in jsonschema.Draft7Validator(schema).iter_errors(obj.get("spec"))
    ]
    print(json.dumps({"at": item["at"], "kind": obj["kind"], "errors": errors}))
