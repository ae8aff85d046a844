"""Validate the rendered Argo manifests against Argo's official JSON schema, strictly (the schema
declares no additionalProperties, so every object that lists its properties is closed here and a
misspelt field is an error), and the plain Kubernetes objects with kubernetes-validate (bundled
schemas, offline). Run by tests/tests/e2e/runner.rs with PIPELINE_TEST_PYTHON:

    python validate_k8s.py --argo-schema SCHEMA.json --kubernetes k8s/namespace-rbac.yaml k8s/full.yaml ...
"""

import argparse
import copy
import json
import sys

import jsonschema
import kubernetes_validate
import yaml

KUBERNETES_VERSION = "1.33.0"


def closed(schema):
    """A copy where every object schema with `properties` rejects other keys."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if node.get("type") == "object" and "properties" in node and "additionalProperties" not in node:
                node["additionalProperties"] = False
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(schema)
    return schema


def argo_errors(schema, doc):
    kind = doc.get("kind", "")
    sub = {
        "$schema": schema.get("$schema"),
        "definitions": schema["definitions"],
        "$ref": f"#/definitions/io.argoproj.workflow.v1alpha1.{kind}",
    }
    if f"io.argoproj.workflow.v1alpha1.{kind}" not in schema["definitions"]:
        return [f"kind {kind!r} is not an Argo kind"]
    v = jsonschema.Draft202012Validator(sub)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message[:300]}" for e in v.iter_errors(doc)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--argo-schema", required=True)
    ap.add_argument("--kubernetes", action="append", default=[])
    ap.add_argument("argo", nargs="*")
    a = ap.parse_args()
    schema = closed(json.load(open(a.argo_schema)))
    failed = False

    for path in a.argo:
        docs = list(yaml.safe_load_all(open(path)))
        errors = []
        for doc in docs:
            errors += argo_errors(schema, doc)
            # The strict schema must catch a misspelt field, or this check proves nothing.
            bad = copy.deepcopy(doc)
            spec = bad["spec"].get("workflowSpec", bad["spec"])
            spec["templates"][0]["dagg"] = spec["templates"][0].pop("dag")
            if not argo_errors(schema, bad):
                errors.append("self-check: a misspelt field was not caught")
        for e in errors:
            print(f"{path}: {e}")
        failed |= bool(errors)
        if not errors:
            print(f"{path}: ok ({', '.join(d['kind'] for d in docs)})")

    for path in a.kubernetes:
        errors = []
        for doc in yaml.safe_load_all(open(path)):
            try:
                kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
            except kubernetes_validate.ValidationError as e:
                errors.append(f"{doc.get('kind')}/{doc['metadata'].get('name')}: {'/'.join(map(str, e.path))}: {e.message}")
            except Exception as e:  # a kind without a bundled schema, a bad version
                errors.append(f"{doc.get('kind')}: {e}")
        # The same self-check for the plain objects.
        try:
            first = next(yaml.safe_load_all(open(path)))
            first["metadata"]["nmae"] = "x"
            kubernetes_validate.validate(first, KUBERNETES_VERSION, strict=True)
            errors.append("self-check: a misspelt field was not caught")
        except kubernetes_validate.ValidationError:
            pass
        for e in errors:
            print(f"{path}: {e}")
        failed |= bool(errors)
        if not errors:
            print(f"{path}: ok (Kubernetes {KUBERNETES_VERSION}, strict)")

    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
