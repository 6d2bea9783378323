"""Validates Kubernetes manifests offline, strictly. Run by scripts/validate-manifests.sh,
which installs the pinned packages this needs.

    python3 validate_manifests.py --k8s-version 1.34.0 --schemas DIR FILE...

Every YAML document of every FILE is checked:
  - Kubernetes kinds against the schemas kubernetes-validate ships for that version, with
    --strict (an unknown field is an error, as with `kubectl apply --validate=strict`);
  - keda.sh kinds against the openAPIV3Schema of KEDA's CRDs in DIR, made strict the same
    way (an object schema that lists its properties gets additionalProperties: false, unless
    it says x-kubernetes-preserve-unknown-fields), with python jsonschema;
  - a Kustomization: the files it lists exist, and it lists every manifest beside it;
  - no Secret object, and no literal value in an environment variable whose name says
    password, token, cookie, secret or AMQP_URL (they come from Secrets, by reference).
One line per file: "ok FILE (Kind/name, ...)" or "FAIL FILE: reason". Exit 1 if any fails.
"""

import argparse
import copy
import glob
import os
import re
import sys

import jsonschema
import kubernetes_validate
import yaml

SECRET_ENV = re.compile(r"(PASSWORD|PASS|TOKEN|COOKIE|SECRET|AMQP_URL)$", re.IGNORECASE)


def strict_schema(schema):
    """A copy of a CRD's structural schema in which unknown fields are errors."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if not isinstance(node, dict):
            return
        if (
            node.get("type") == "object"
            and "properties" in node
            and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")
        ):
            node["additionalProperties"] = False
        for key in ("properties", "patternProperties", "definitions"):
            for child in (node.get(key) or {}).values():
                walk(child)
        for key in ("items", "additionalProperties", "not"):
            if isinstance(node.get(key), dict):
                walk(node[key])
        for key in ("allOf", "anyOf", "oneOf"):
            for child in node.get(key) or []:
                walk(child)

    walk(schema)
    return schema


def load_crd_schemas(folder):
    """(group/version, kind) -> strict JSON schema, from every CRD file in folder."""
    schemas = {}
    for path in sorted(glob.glob(os.path.join(folder, "*.yaml"))):
        with open(path) as f:
            for doc in yaml.safe_load_all(f):
                if not doc or doc.get("kind") != "CustomResourceDefinition":
                    continue
                spec = doc["spec"]
                for version in spec["versions"]:
                    if not version.get("served"):
                        continue
                    key = (f"{spec['group']}/{version['name']}", spec["names"]["kind"])
                    schemas[key] = strict_schema(version["schema"]["openAPIV3Schema"])
    return schemas


def check_env(doc, where):
    """Literal secrets in container environments (any depth: pod templates included)."""
    problems = []

    def walk(node, path):
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("containers", "initContainers") and isinstance(value, list):
                    for c in value:
                        for env in c.get("env") or []:
                            name = env.get("name", "")
                            if SECRET_ENV.search(name) and "value" in env:
                                problems.append(
                                    f"{where}: container {c.get('name')}: env {name} has a literal "
                                    "value: take it from a Secret (a mounted file or secretKeyRef)"
                                )
                walk(value, f"{path}.{key}")
        elif isinstance(node, list):
            for item in node:
                walk(item, path)

    walk(doc, "")
    return problems


def check_kustomization(doc, path):
    folder = os.path.dirname(path)
    listed = doc.get("resources") or []
    problems = [f"lists {r}, which does not exist" for r in listed if not os.path.exists(os.path.join(folder, r))]
    beside = {
        os.path.basename(p)
        for p in glob.glob(os.path.join(folder, "*.yaml"))
        if os.path.basename(p) != os.path.basename(path)
    }
    problems += [f"does not list {m}" for m in sorted(beside - set(listed))]
    return problems


def validate_file(path, k8s_version, crds):
    try:
        with open(path) as f:
            docs = [d for d in yaml.safe_load_all(f) if d is not None]
    except (OSError, yaml.YAMLError) as e:
        return [f"cannot read it: {e}"], []
    if not docs:
        return ["no YAML document in it"], []
    problems, names = [], []
    for i, doc in enumerate(docs, 1):
        if not isinstance(doc, dict) or "kind" not in doc or "apiVersion" not in doc:
            problems.append(f"document {i}: not a Kubernetes object (no apiVersion/kind)")
            continue
        kind, api = doc["kind"], doc["apiVersion"]
        if kind == "Kustomization" and api.startswith("kustomize.config.k8s.io/"):
            names.append(kind)
            problems += [f"document {i} (Kustomization): {p}" for p in check_kustomization(doc, path)]
            continue
        name = (doc.get("metadata") or {}).get("name", "?")
        where = f"document {i} ({kind}/{name})"
        names.append(f"{kind}/{name}")
        if kind == "Secret" and api == "v1":
            problems.append(f"{where}: a Secret in a manifest: create it with kubectl (README.md)")
        problems += check_env(doc, where)
        group = api.split("/")[0] if "/" in api else ""
        if group == "keda.sh":
            schema = crds.get((api, kind))
            if schema is None:
                problems.append(f"{where}: no CRD schema for {api} {kind} in the schemas folder")
                continue
            if not (doc.get("metadata") or {}).get("name"):
                problems.append(f"{where}: metadata.name is missing")
            errors = sorted(
                jsonschema.Draft7Validator(schema).iter_errors(doc), key=lambda e: list(e.absolute_path)
            )
            for e in errors:
                at = ".".join(str(p) for p in e.absolute_path) or "(top)"
                problems.append(f"{where}: at {at}: {e.message}")
            continue
        try:
            kubernetes_validate.validate(doc, k8s_version, strict=True)
        except kubernetes_validate.ValidationError as e:
            at = ".".join(str(p) for p in e.absolute_path) or "(top)"
            problems.append(f"{where}: at {at}: {e.message}")
        except (
            kubernetes_validate.SchemaNotFoundError,
            kubernetes_validate.VersionNotSupportedError,
            kubernetes_validate.InvalidSchemaError,
        ) as e:
            problems.append(f"{where}: {e.message}")
    return problems, names


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k8s-version", required=True)
    parser.add_argument("--schemas", required=True, help="folder of the CRD YAML files")
    parser.add_argument("files", nargs="+")
    args = parser.parse_args()
    crds = load_crd_schemas(args.schemas)
    if not crds:
        print(f"FAIL no CRD schema found in {args.schemas}")
        return 1
    failed = 0
    for path in args.files:
        problems, names = validate_file(path, args.k8s_version, crds)
        if problems:
            failed += 1
            print(f"FAIL {path}:")
            for p in problems:
                print(f"     {p}")
        else:
            print(f"ok   {path} ({', '.join(names)})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
