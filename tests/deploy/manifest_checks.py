"""Validators for the manifests under deploy/, each strict: a misspelled field fails.

- Core Kubernetes objects: kubernetes-validate's bundled JSON schemas for KUBERNETES_VERSION, strict mode
  (no field outside the schema).
- KServe objects: the kserve SDK's models. Their constructors accept only known fields but the SDK's
  deserializer drops unknown keys silently, so the document is walked here against each model's
  attribute_map (KServe's own models, and the Kubernetes client's for the pod and container fields they
  embed) and each object is built with its constructor, which checks required fields and enums. This runs
  in a process of its own: importing kserve registers the protocol's protobuf messages, as tritonclient.grpc
  does, and the two cannot share a process.
- The ServiceMonitor: facts of the prometheus-operator CRD (monitoring.coreos.com/v1, operator v0.84),
  written as the JSON schema below: its required fields, the spec and endpoint fields these manifests may
  use, the interval pattern.
"""

from __future__ import annotations

import functools
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

KUBERNETES_VERSION = "1.32"  # the oldest release these manifests target: native gRPC probes, preStop sleep
CORE_API_VERSIONS = {"v1", "apps/v1", "batch/v1", "autoscaling/v2", "policy/v1"}
KSERVE_MODELS = {
    ("serving.kserve.io/v1alpha1", "ClusterServingRuntime"): "V1alpha1ClusterServingRuntime",
    ("serving.kserve.io/v1alpha1", "ServingRuntime"): "V1alpha1ServingRuntime",
    ("serving.kserve.io/v1beta1", "InferenceService"): "V1beta1InferenceService",
}
_DURATION = r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
SERVICE_MONITOR_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {
            "type": "object",
            "required": ["endpoints", "selector"],
            "additionalProperties": False,
            "properties": {
                "selector": {"type": "object", "additionalProperties": False,
                             "properties": {"matchLabels": {"type": "object"}, "matchExpressions": {"type": "array"}}},
                "namespaceSelector": {"type": "object"},
                "jobLabel": {"type": "string"},
                "targetLabels": {"type": "array", "items": {"type": "string"}},
                "podTargetLabels": {"type": "array", "items": {"type": "string"}},
                "sampleLimit": {"type": "integer"},
                "endpoints": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "targetPort": {"type": ["string", "integer"]},
                            "path": {"type": "string"},
                            "scheme": {"enum": ["http", "https", "HTTP", "HTTPS"]},
                            "interval": {"type": "string", "pattern": _DURATION},
                            "scrapeTimeout": {"type": "string", "pattern": _DURATION},
                            "honorLabels": {"type": "boolean"},
                            "authorization": {"type": "object"},
                            "bearerTokenSecret": {"type": "object"},
                            "tlsConfig": {"type": "object"},
                            "relabelings": {"type": "array"},
                            "metricRelabelings": {"type": "array"},
                        },
                    },
                },
            },
        },
    },
}
_NATIVE = {"str": str, "int": int, "bool": bool, "float": (int, float), "object": object,
           "datetime": str, "date": str}


class ManifestError(AssertionError):
    pass


def documents(folder: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Every YAML document under ``folder``, with its file."""
    for path in sorted(folder.rglob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                yield path, document


def validate(document: dict[str, Any]) -> str:
    """Raise ManifestError unless ``document`` is valid for the validator of its kind; returns which one."""
    api, kind = document.get("apiVersion"), document.get("kind")
    if api in CORE_API_VERSIONS:
        try:
            kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            raise ManifestError(f"{kind}: {'.'.join(map(str, exc.path))}: {exc.message}") from exc
        return "kubernetes-validate"
    if (api, kind) in KSERVE_MODELS:
        if problem := _kserve_verdict(json.dumps(document, sort_keys=True)):
            raise ManifestError(problem)
        return "kserve"
    if (api, kind) == ("monitoring.coreos.com/v1", "ServiceMonitor"):
        try:
            jsonschema.validate(document, SERVICE_MONITOR_SCHEMA)
        except jsonschema.ValidationError as exc:
            raise ManifestError(f"{kind}: {'.'.join(map(str, exc.path))}: {exc.message}") from exc
        return "servicemonitor"
    if (api, kind) == ("kustomize.config.k8s.io/v1beta1", "Kustomization"):
        return "kustomization"
    raise ManifestError(f"no validator for apiVersion {api!r} kind {kind!r}")


@functools.lru_cache(maxsize=64)
def _kserve_verdict(document: str) -> str:
    """What is wrong with a KServe object (given as JSON), or "" when nothing is; checked in a child process."""
    done = subprocess.run([sys.executable, __file__], input=document, capture_output=True, text=True, timeout=120)
    if done.returncode not in (0, 1):
        raise RuntimeError(f"the KServe check could not run:\n{done.stderr}")
    return done.stdout.strip()


def build(data: Any, type_name: str, where: str) -> Any:
    """``data`` built as the SDK type ``type_name`` (e.g. ``list[V1Container]``), refusing unknown fields."""
    # Spelled list[T] and dict(str, T) by KServe's generator, List[T] and Dict[str, T] by the Kubernetes client's.
    if match := re.fullmatch(r"[lL]ist\[(.*)\]", type_name):
        _expect(data, list, where, type_name)
        return [build(item, match.group(1), f"{where}[{i}]") for i, item in enumerate(data)]
    if match := re.fullmatch(r"dict\(([^,]*), (.*)\)|Dict\[([^,]*), (.*)\]", type_name):
        _expect(data, dict, where, type_name)
        value_type = match.group(2) or match.group(4)
        return {key: build(value, value_type, f"{where}.{key}") for key, value in data.items()}
    if type_name in _NATIVE:
        if type_name != "object":
            _expect(data, _NATIVE[type_name], where, type_name)
        return data
    import kserve  # only in the child process (see _kserve_verdict)
    import kubernetes.client

    model = getattr(kserve, type_name, None) or getattr(kubernetes.client, type_name, None)
    if model is None:
        raise ManifestError(f"{where}: the SDKs have no type {type_name}")
    _expect(data, dict, where, type_name)
    attribute_of = {key: attribute for attribute, key in model.attribute_map.items()}
    unknown = sorted(set(data) - set(attribute_of))
    if unknown:
        raise ManifestError(f"{where}: {type_name} has no field {', '.join(unknown)} "
                            f"(fields: {', '.join(sorted(attribute_of))})")
    values = {attribute_of[key]: build(value, model.openapi_types[attribute_of[key]], f"{where}.{key}")
              for key, value in data.items()}
    try:
        return model(**values)
    except ValueError as exc:  # a required field missing, a value outside an enum
        raise ManifestError(f"{where}: {exc}") from exc


def _expect(data: Any, kind: type | tuple[type, ...], where: str, type_name: str) -> None:
    if not isinstance(data, kind) or (kind is int and isinstance(data, bool)):
        raise ManifestError(f"{where}: expected {type_name}, got {type(data).__name__} {data!r}")


if __name__ == "__main__":  # the child process of _kserve_verdict: one KServe object on stdin
    given = json.loads(sys.stdin.read())
    try:
        build(given, KSERVE_MODELS[given["apiVersion"], given["kind"]], given["kind"])
    except ManifestError as problem:
        print(problem)
        sys.exit(1)
