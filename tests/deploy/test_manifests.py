"""Every manifest under deploy/ validates, each validator catches a misspelled field, and the objects agree."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml

from deploy_support import ROOT
from manifest_checks import KUBERNETES_VERSION, ManifestError, documents, validate

DEPLOY = ROOT / "deploy"
ALL = list(documents(DEPLOY))


def load(relative: str) -> dict:
    return yaml.safe_load((DEPLOY / relative).read_text())


def test_there_are_manifests_of_every_kind_issue_15_names():
    kinds = {document["kind"] for _, document in ALL}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "ServiceMonitor", "CronJob",
            "ClusterServingRuntime", "InferenceService"} <= kinds


@pytest.mark.parametrize(("path", "document"), ALL,
                         ids=[f"{p.relative_to(DEPLOY)}:{d['kind']}" for p, d in ALL])
def test_every_manifest_validates(path: Path, document: dict):
    validate(document)  # raises ManifestError naming the field


def renamed(document: dict, path: str, new_name: str) -> dict:
    """A copy of ``document`` with the field at dotted ``path`` (list indexes as numbers) renamed."""
    copied = copy.deepcopy(document)
    *parents, name = path.split(".")
    node = copied
    for step in parents:
        node = node[int(step)] if step.isdigit() else node[step]
    node[new_name] = node.pop(name)
    return copied


@pytest.mark.parametrize(("relative", "path", "typo", "validator"), [
    ("k8s/deployment.yaml", "spec.template.spec.containers.0.readinessProbe", "readinesProbe", "kubernetes-validate"),
    ("k8s/deployment.yaml", "spec.template.spec.containers.0.startupProbe.grpc.port", "prot", "kubernetes-validate"),
    ("k8s/cronjob.yaml", "spec.jobTemplate.spec.template.spec.restartPolicy", "restartpolicy", "kubernetes-validate"),
    ("k8s/service.yaml", "spec.ports.0.appProtocol", "applicationProtocol", "kubernetes-validate"),
    ("k8s/hpa.yaml", "spec.behavior.scaleDown", "scaledown", "kubernetes-validate"),
    ("k8s/pdb.yaml", "spec.maxUnavailable", "maxUnavailible", "kubernetes-validate"),
    ("k8s/servicemonitor.yaml", "spec.endpoints.0.interval", "intervall", "servicemonitor"),
    ("k8s/servicemonitor.yaml", "spec.selector", "selecter", "servicemonitor"),
    ("kserve/servingruntime.yaml", "spec.protocolVersions", "protocolVersion", "kserve"),
    ("kserve/servingruntime.yaml", "spec.containers.0.startupProbe", "startupprobe", "kserve"),
    ("kserve/servingruntime.yaml", "spec.supportedModelFormats.0.autoSelect", "autoselect", "kserve"),
    ("kserve/inferenceservice-s3.yaml", "spec.predictor.model.storageUri", "storageURI", "kserve"),
    ("kserve/inferenceservice-pvc.yaml", "spec.predictor.model.modelFormat", "format", "kserve"),
])
def test_each_validator_catches_a_misspelled_field(relative, path, typo, validator):
    document = load(relative)
    assert validate(document) == validator
    with pytest.raises(ManifestError, match=re.escape(typo) + "|required"):
        validate(renamed(document, path, typo))


@pytest.mark.parametrize(("relative", "path", "value"), [
    ("k8s/deployment.yaml", "spec.template.spec.containers.0.ports.0.containerPort", "8001"),
    ("kserve/servingruntime.yaml", "spec.containers.0.readinessProbe.grpc.port", "8081"),
    ("k8s/servicemonitor.yaml", "spec.endpoints.0.interval", "15 seconds"),
])
def test_a_value_of_the_wrong_type_fails(relative, path, value):
    document = load(relative)
    *parents, name = path.split(".")
    node = document
    for step in parents:
        node = node[int(step)] if step.isdigit() else node[step]
    node[name] = value
    with pytest.raises(ManifestError):
        validate(document)


def test_an_unknown_kind_has_no_validator():
    with pytest.raises(ManifestError, match="no validator"):
        validate({"apiVersion": "example.com/v1", "kind": "Widget"})


def test_the_kubernetes_version_is_one_the_schemas_cover():
    import kubernetes_validate.utils as utils

    assert KUBERNETES_VERSION in {utils.major_minor(v) for v in utils.all_versions()}


# -- the objects agree with each other and with the server ------------------------------------------------
def server_container() -> dict:
    return load("k8s/deployment.yaml")["spec"]["template"]["spec"]["containers"][0]


def test_the_kustomization_lists_every_manifest():
    listed = set(load("k8s/kustomization.yaml")["resources"])
    assert listed == {p.name for p in (DEPLOY / "k8s").glob("*.yaml")} - {"kustomization.yaml"}


def test_service_servicemonitor_and_probes_name_the_container_ports():
    deployment, service, monitor = load("k8s/deployment.yaml"), load("k8s/service.yaml"), load("k8s/servicemonitor.yaml")
    container = server_container()
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert ports == {"grpc": int(env["DRIFTLINE_GRPC_PORT"]), "http": int(env["DRIFTLINE_HTTP_PORT"]),
                     "metrics": int(env["DRIFTLINE_METRICS_PORT"])}
    assert {p["targetPort"] for p in service["spec"]["ports"]} == set(ports)
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    for selector in (service["spec"]["selector"], monitor["spec"]["selector"]["matchLabels"],
                     load("k8s/pdb.yaml")["spec"]["selector"]["matchLabels"]):
        assert selector.items() <= labels.items()
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == ports["grpc"]
    hpa = load("k8s/hpa.yaml")["spec"]["scaleTargetRef"]
    assert (hpa["kind"], hpa["name"]) == ("Deployment", deployment["metadata"]["name"])


def test_the_grace_period_covers_the_pre_stop_sleep_and_the_servers_shutdown_grace():
    pod = load("k8s/deployment.yaml")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    grace = next(float(a.split("=", 1)[1]) for a in container["args"] if a.startswith("--shutdown-grace="))
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + grace


def test_serving_pods_follow_production_of_the_registry_the_cronjob_promotes_in():
    serving = server_container()
    retrain = load("k8s/cronjob.yaml")["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert serving["image"] == retrain["image"]
    registry = {a for a in serving["args"] if a.startswith("--registry=")}
    assert registry and registry == {a for a in retrain["args"] if a.startswith("--registry=")}
    assert any(a.startswith("--poll=") for a in serving["args"])
    assert retrain["args"][0] == "retrain" and "--promote" in retrain["args"]


def test_the_image_exposes_the_ports_the_deployment_uses():
    from dockerfile import parse_file

    exposed = {int(port) for command in parse_file(str(ROOT / "Dockerfile")) if command.cmd == "EXPOSE"
               for port in command.value}
    assert {p["containerPort"] for p in server_container()["ports"]} == exposed
