"""docker-compose.yml (and the Temporal Cloud override) checked without a Docker engine.

The file is validated against the Compose Specification's JSON schema as shipped by the
``check-jsonschema`` package (its vendored copy of the compose-spec schema), after the
same interpolation compose applies, for each way the README starts it. The rest are the
semantics a schema cannot see: every name the worker is given is one our code or the
Temporal SDK reads, the registered search attributes are the workflow's, secrets are
files, dependencies resolve, and so on.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]  # no stubs in the dev extras
import pytest
from temporalio.envconfig import ClientConfig

from genie_config import GenieSettings
from genie_sim.__main__ import parse_args as sim_parse_args
from tests.deploy.helpers import (
    CLOUD_OVERRIDE,
    COMPOSE_FILE,
    REPO,
    InterpolationError,
    active_services,
    dockerignored,
    environment,
    interpolate,
    iter_strings,
    load_yaml,
    merge_compose,
    variables,
)
from workflows.search_attributes import ALL_SEARCH_ATTRIBUTES, dev_server_flags

CLOUD_ENV = {"TEMPORAL_ADDRESS": "ns.acct.tmprl.cloud:7233", "TEMPORAL_NAMESPACE": "ns.acct"}
"""What the README tells ops to set for the Temporal Cloud override."""

# (id, files, profiles, environment): every way the README runs the stack.
VARIANTS = [
    ("default", [COMPOSE_FILE], set(), {}),
    ("sim", [COMPOSE_FILE], {"sim"}, {"GENIE_API_BASE_URL": "http://genie-sim:8787"}),
    ("cloud", [COMPOSE_FILE, CLOUD_OVERRIDE], set(), CLOUD_ENV),
]


@pytest.fixture(scope="module")
def compose_schema() -> dict[str, Any]:
    """The compose-spec schema vendored by check-jsonschema, found without importing
    that package (its CLI is slow to import and not needed)."""
    spec = importlib.util.find_spec("check_jsonschema")
    if spec is None or spec.origin is None:  # pragma: no cover - a dev dependency
        pytest.fail("the dev dependency check-jsonschema is missing: make install")
    path = Path(spec.origin).parent / "builtin_schemas" / "vendor" / "compose-spec.json"
    schema: dict[str, Any] = json.loads(path.read_text())
    assert schema["title"] == "Compose Specification"
    return schema


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    return load_yaml(COMPOSE_FILE)


@pytest.fixture(scope="module")
def compose(raw: dict[str, Any]) -> dict[str, Any]:
    """docker-compose.yml as compose sees it with no .env: every default applied."""
    resolved: dict[str, Any] = interpolate(raw, {})
    return resolved


@pytest.fixture(scope="module")
def cloud(raw: dict[str, Any]) -> dict[str, Any]:
    merged = merge_compose(raw, load_yaml(CLOUD_OVERRIDE))
    resolved: dict[str, Any] = interpolate(merged, CLOUD_ENV)
    return resolved


def schema_errors(schema: dict[str, Any], document: dict[str, Any]) -> list[str]:
    validator = jsonschema.validators.validator_for(schema)(schema)
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
        for e in validator.iter_errors(document)
    ]


# --- the Compose Specification -------------------------------------------------------


@pytest.mark.parametrize(
    ("files", "profiles", "env"), [v[1:] for v in VARIANTS], ids=[v[0] for v in VARIANTS]
)
def test_matches_the_compose_specification(
    compose_schema: dict[str, Any], files: list[Path], profiles: set[str], env: dict[str, str]
) -> None:
    merged = merge_compose(*(load_yaml(f) for f in files))
    resolved = interpolate(merged, env)
    assert schema_errors(compose_schema, resolved) == []
    # Raw too: no field may depend on interpolation to have the right type.
    assert schema_errors(compose_schema, merged) == []
    assert active_services(resolved, profiles)


def test_the_schema_check_catches_mistakes(
    compose_schema: dict[str, Any], compose: dict[str, Any]
) -> None:
    """A control: the validator is live (a typo'd key, a wrong type are reported)."""
    broken = json.loads(json.dumps(compose))
    broken["services"]["worker"]["enviroment"] = {"X": "1"}
    broken["services"]["postgresql"]["healthcheck"]["retries"] = {"n": 3}
    errors = schema_errors(compose_schema, broken)
    assert any("enviroment" in e for e in errors), errors
    assert any(e.startswith("services/postgresql/healthcheck/retries") for e in errors), errors


def test_interpolation_is_well_formed_and_overridable(raw: dict[str, Any]) -> None:
    for path, text in iter_strings(raw):
        try:
            interpolate(text, CLOUD_ENV)
        except InterpolationError as e:  # pragma: no cover - a broken file
            pytest.fail(f"{path}: {e}")
    # The cloud override's required variables really are required.
    override = load_yaml(CLOUD_OVERRIDE)
    with pytest.raises(InterpolationError, match="TEMPORAL_ADDRESS"):
        interpolate(override, {"TEMPORAL_NAMESPACE": "ns"})


# --- services, dependencies, files ---------------------------------------------------------


def test_services_and_profiles(compose: dict[str, Any]) -> None:
    always = {"postgresql", "temporal-schema", "temporal", "temporal-init", "temporal-ui", "worker"}
    always |= {"codec"}  # the codec server the UI decodes encrypted payloads with
    assert set(active_services(compose, set())) == always
    assert set(active_services(compose, {"sim"})) == always | {"genie-sim"}
    assert compose["services"]["genie-sim"]["profiles"] == ["sim"]


def test_dependencies_resolve_and_wait_for_the_right_condition(compose: dict[str, Any]) -> None:
    services = compose["services"]
    own_image_healthcheck = {"worker", "genie-sim"}  # HEALTHCHECK in our Dockerfile
    for name, svc in services.items():
        for dep, spec in (svc.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown service {dep}"
            condition = spec["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in services[dep] or dep in own_image_healthcheck, (
                    f"{name} waits for {dep} to be healthy, but {dep} has no healthcheck"
                )
            if condition == "service_completed_successfully":
                assert services[dep].get("restart") == "no", f"{dep} must be a one-shot"
            if spec.get("required") is False:
                assert services[dep].get("profiles"), f"{dep} is optional but always started"
            elif services[dep].get("profiles"):
                pytest.fail(f"{name} requires {dep}, which only runs in a profile")
    worker_deps = services["worker"]["depends_on"]
    assert worker_deps["temporal"]["condition"] == "service_healthy"
    assert worker_deps["temporal-init"]["condition"] == "service_completed_successfully"
    assert services["temporal"]["depends_on"] == {
        "temporal-schema": {"condition": "service_completed_successfully"}
    }
    assert services["temporal-schema"]["depends_on"]["postgresql"]["condition"] == (
        "service_healthy"
    )


def test_healthchecks(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert "pg_isready" in " ".join(services["postgresql"]["healthcheck"]["test"])
    assert services["temporal"]["healthcheck"]["test"][:2] == ["CMD", "nc"]
    for name in ("worker", "genie-sim", "postgresql", "temporal"):
        assert services[name].get("healthcheck", {}).get("disable") is not True, name
    # The simulator's check is valid Python hitting an endpoint the simulator serves.
    test = services["genie-sim"]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"]
    compile(test[3], "<genie-sim healthcheck>", "exec")
    from genie_sim._app import create_app
    from genie_sim._config import SimConfig

    routes = {getattr(r, "path", None) for r in create_app(SimConfig()).routes}
    (url,) = re.findall(r"http://127\.0\.0\.1:(\d+)(/[\w/]+)", test[3])
    assert url[1] in routes


def test_mounted_files_exist_and_entrypoints_point_into_them(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        mounts: dict[str, Path] = {}
        for volume in svc.get("volumes", []):
            source, target = volume.split(":")[:2]
            if source.startswith("."):
                path = (REPO / source).resolve()
                assert path.exists(), f"{name}: {source} does not exist"
                mounts[target] = path
        entrypoint = svc.get("entrypoint") or []
        for arg in entrypoint[1:]:
            for target, path in mounts.items():
                if arg.startswith(target + "/"):
                    assert (path / arg[len(target) + 1 :]).is_file(), f"{name}: {arg}"
    temporal = compose["services"]["temporal"]
    dynamic = Path(temporal["environment"]["DYNAMIC_CONFIG_FILE_PATH"])
    assert dynamic.parent.as_posix() == "/etc/temporal/config/dynamicconfig"
    config = load_yaml(REPO / "deploy" / "temporal" / "dynamicconfig" / dynamic.name)
    assert config["frontend.enableUpdateWorkflowExecution"] == [{"value": True}]
    assert config["frontend.enableExecuteMultiOperation"] == [{"value": True}]


def test_images_are_pinned_and_temporal_parts_match(compose: dict[str, Any]) -> None:
    images = {name: svc["image"] for name, svc in compose["services"].items()}
    for name, image in images.items():
        _, sep, tag = image.rpartition(":")
        assert sep and tag and tag != "latest" and "/" not in tag, f"{name}: {image} unpinned"
    version = {name: image.rpartition(":")[2] for name, image in images.items()}
    assert re.fullmatch(r"\d+\.\d+\.\d+", version["temporal"])
    assert version["temporal"] == version["temporal-schema"] == version["temporal-init"]
    assert images["temporal"].startswith("temporalio/server:")
    assert images["temporal-schema"].startswith("temporalio/admin-tools:")
    assert images["temporal-ui"].startswith("temporalio/ui:")
    assert re.fullmatch(r"\d+\.\d+\.\d+", version["temporal-ui"])
    # The worker and the simulator run the one image built from our Dockerfile.
    for name in ("worker", "genie-sim"):
        svc = compose["services"][name]
        assert svc["build"] == {"context": ".", "dockerfile": "Dockerfile"}
    assert images["worker"] == images["genie-sim"]


def test_published_ports_are_loopback_only(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        for port in svc.get("ports", []):
            assert isinstance(port, str) and port.startswith("127.0.0.1:"), f"{name}: {port}"
    assert compose["services"]["temporal-ui"]["ports"] == ["127.0.0.1:8080:8080"]


def test_postgres_keeps_its_data_in_a_named_volume(compose: dict[str, Any]) -> None:
    volumes = compose["services"]["postgresql"]["volumes"]
    named = [v.split(":")[0] for v in volumes if not v.startswith((".", "/"))]
    assert named == ["postgres-data"]
    assert "postgres-data" in compose["volumes"]
    assert "ports" not in compose["services"]["postgresql"]


# --- the worker ----------------------------------------------------------------------------


def test_worker_is_scalable_restartable_and_hardened(
    compose: dict[str, Any], raw: dict[str, Any]
) -> None:
    worker = compose["services"]["worker"]
    assert "container_name" not in worker and "ports" not in worker  # --scale worker=N
    assert worker["restart"] == "unless-stopped"
    assert worker["read_only"] is True and worker["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in worker["security_opt"]
    assert "user" not in worker, "the image's non-root user must not be overridden"
    assert not any("container_name" in svc for svc in compose["services"].values())
    assert "--scale worker=3" in COMPOSE_FILE.read_text()
    # Docker must wait longer than the worker's own graceful shutdown before SIGKILL.
    grace = int(worker["stop_grace_period"].removesuffix("s"))
    assert grace > float(environment(worker)["GENIE_GRACEFUL_SHUTDOWN_SECONDS"])
    # Every value is overridable with ${VAR:-default} (except fixed in-container paths).
    fixed = {"GENIE_API_KEY_FILE", "GENIE_METRICS_HOST", "GENIE_PAYLOAD_KEY_FILE"}
    for name, value in environment(raw["services"]["worker"]).items():
        if name not in fixed:
            assert variables(value) == [name], f"{name}: {value!r} is not ${{{name}:-...}}"


def test_worker_has_the_design_settings(compose: dict[str, Any]) -> None:
    env = environment(compose["services"]["worker"])
    for name in (
        "TEMPORAL_ADDRESS",
        "TEMPORAL_NAMESPACE",
        "GENIE_API_BASE_URL",
        "GENIE_API_KEY_FILE",
        "GENIE_TASK_QUEUE",
        "GENIE_METRICS_PORT",
    ):
        assert name in env, name
    assert env["GENIE_API_BASE_URL"] == "https://genie-api.workato.com"
    assert env["TEMPORAL_ADDRESS"] == "temporal:7233"


@pytest.mark.parametrize("variant", ["default", "cloud"])
def test_every_genie_name_given_to_the_worker_is_a_setting(
    variant: str, compose: dict[str, Any], cloud: dict[str, Any]
) -> None:
    doc = cloud if variant == "cloud" else compose
    fields = {f"GENIE_{name.upper()}" for name in GenieSettings.model_fields}
    genie = {n for n in environment(doc["services"]["worker"]) if n.startswith("GENIE_")}
    assert genie, "the worker gets no GENIE_* settings"
    assert genie <= fields, f"not GenieSettings fields: {sorted(genie - fields)}"
    others = {
        n
        for n in environment(doc["services"]["worker"])
        if not n.startswith(("GENIE_", "TEMPORAL_"))
    }
    assert others == set(), f"the worker reads no such settings: {sorted(others)}"


def test_the_worker_environment_is_a_valid_configuration(
    compose: dict[str, Any], tmp_path: Path, no_genie_env: pytest.MonkeyPatch
) -> None:
    """The defaults load as GenieSettings, exactly as worker.py would load them."""
    env = environment(compose["services"]["worker"])
    key_file = tmp_path / "genie_api_key"
    key_file.write_text("test-key-123\n")
    assert env["GENIE_API_KEY_FILE"] == "/run/secrets/genie_api_key"
    env["GENIE_API_KEY_FILE"] = str(key_file)
    for name, value in env.items():
        if name.startswith("GENIE_"):
            no_genie_env.setenv(name, value)
    settings = GenieSettings()
    assert settings.api_key_value().get_secret_value() == "test-key-123"
    assert str(settings.api_base_url) == "https://genie-api.workato.com/"
    assert settings.task_queue == GenieSettings.model_fields["task_queue"].default
    assert settings.metrics_port == 9464 and settings.metrics_host == "0.0.0.0"


def _sdk_config(env: dict[str, str]) -> dict[str, Any] | str:
    try:
        return dict(ClientConfig.load_client_connect_config(override_env_vars=env))
    except Exception as e:  # an error proves the name was read too
        return f"error: {e}"


def _secret_example(doc: dict[str, Any], in_container: str) -> str:
    """A /run/secrets/NAME path -> the example file for that secret's source."""
    secret = doc["secrets"][in_container.removeprefix("/run/secrets/")]
    example = REPO / (secret["file"] + ".example")
    assert example.is_file(), f"{example} is missing"
    return str(example)


@pytest.mark.parametrize("variant", ["default", "cloud"])
def test_every_temporal_name_given_to_the_worker_is_read_by_the_sdk(
    variant: str, compose: dict[str, Any], cloud: dict[str, Any]
) -> None:
    """Each TEMPORAL_* changes what temporalio.envconfig loads (the SDK has no list of
    names to compare with, so this asks the SDK itself)."""
    doc = cloud if variant == "cloud" else compose
    env = environment(doc["services"]["worker"])
    # Secret files as the container sees them -> the example of the file compose mounts.
    env = {
        n: _secret_example(doc, v) if v.startswith("/run/secrets/") else v
        for n, v in env.items()
        if n.startswith("TEMPORAL_")
    }
    assert env
    baseline = _sdk_config({})
    for name, value in env.items():
        assert _sdk_config({name: value}) != baseline, f"the SDK ignores {name}"
    # The control: a name the SDK does not know has no effect.
    assert _sdk_config({"TEMPORAL_NOT_A_SETTING": "x"}) == baseline
    # Together they make the connection the README promises.
    loaded = _sdk_config(env)
    assert isinstance(loaded, dict), loaded
    if variant == "cloud":
        assert loaded["target_host"] == CLOUD_ENV["TEMPORAL_ADDRESS"]
        assert loaded["namespace"] == CLOUD_ENV["TEMPORAL_NAMESPACE"]
        assert loaded["api_key"] and loaded["tls"] is True  # from the profile file
    else:
        assert loaded == {"target_host": "temporal:7233", "namespace": "default"}


def test_registered_search_attributes_are_the_workflows(compose: dict[str, Any]) -> None:
    init = compose["services"]["temporal-init"]
    expected = dev_server_flags()[1::2]  # ["GenieHandle=Keyword", ...]
    assert len(expected) == len(ALL_SEARCH_ATTRIBUTES)
    assert init["command"] == expected
    assert init["entrypoint"] == ["/bin/sh", "/deploy/init.sh"]
    # The namespace it prepares is the one the worker uses.
    assert (
        environment(init)["TEMPORAL_NAMESPACE"]
        == (environment(compose["services"]["worker"])["TEMPORAL_NAMESPACE"])
    )
    assert environment(init)["TEMPORAL_ADDRESS"] == "temporal:7233"


# --- secrets ---------------------------------------------------------------------------------

_SECRETISH_NAME = re.compile(r"(API_?KEY|TOKEN|SECRET|PASSWORD|PWD|CREDENTIAL)", re.I)


@pytest.mark.parametrize(
    ("files", "profiles", "env"), [v[1:] for v in VARIANTS], ids=[v[0] for v in VARIANTS]
)
def test_no_secret_is_inline(files: list[Path], profiles: set[str], env: dict[str, str]) -> None:
    merged = merge_compose(*(load_yaml(f) for f in files))
    for name, svc in merged["services"].items():
        for var, value in environment(svc).items():
            if var.endswith("_FILE"):
                assert value.startswith("/run/secrets/"), f"{name}.{var}: {value}"
            elif _SECRETISH_NAME.search(var):
                # Database credentials only, and only from the environment (.env).
                assert var.startswith(("POSTGRES_", "SQL_")), f"{name}.{var} is a secret"
                assert variables(value), f"{name}.{var} is a literal"
        assert "env_file" not in svc, f"{name}: secrets go in secret files"
    for secret, spec in merged["secrets"].items():
        assert set(spec) == {"file"}, f"secret {secret} must be a file"
        assert variables(spec["file"]), f"secret {secret}: its path must be overridable"
    # No long random-looking token anywhere (an API key pasted by mistake).
    text = "\n".join(f.read_text() for f in files)
    assert not re.search(r"[A-Za-z0-9_\-]{32,}", text)
    assert "GENIE_API_KEY:" not in text and "TEMPORAL_API_KEY" not in text


def test_secret_files_stay_out_of_git_and_of_the_image(compose: dict[str, Any]) -> None:
    paths = [spec["file"].removeprefix("./") for spec in compose["secrets"].values()]
    cloud_secrets = load_yaml(CLOUD_OVERRIDE)["secrets"]
    paths += [interpolate(s["file"], {}).removeprefix("./") for s in cloud_secrets.values()]
    for path in paths:
        assert path.startswith("deploy/secrets/"), path
        assert dockerignored(path), f"{path} would be sent to the Docker build"
        assert (REPO / f"{path}.example").is_file(), f"{path}.example is missing"
    git = shutil.which("git")
    if git is None or not (REPO / ".git").exists():  # pragma: no cover - a tarball
        pytest.skip("not a git checkout")
    ignored = subprocess.run(
        [git, "check-ignore", "--no-index", *paths], cwd=REPO, capture_output=True, text=True
    )
    assert sorted(ignored.stdout.split()) == sorted(paths), "secret files are not git-ignored"
    examples = subprocess.run(
        [git, "check-ignore", "--no-index", *(f"{p}.example" for p in paths)], cwd=REPO
    )
    assert examples.returncode == 1, "the .example files must be committed"


# --- the simulator profile -----------------------------------------------------------------


def test_simulator_profile(compose: dict[str, Any]) -> None:
    sim = compose["services"]["genie-sim"]
    config = sim_parse_args(sim["command"])  # the simulator's own CLI accepts the flags
    assert config.host == "0.0.0.0"
    assert sim["ports"] == [f"127.0.0.1:{config.port}:{config.port}"]
    # It reads the key from the same secret as the worker, into its environment.
    assert sim["secrets"] == ["genie_api_key"]
    assert "genie_api_key" in compose["services"]["worker"]["secrets"]
    shell = sim["entrypoint"]
    assert shell[:2] == ["/bin/sh", "-c"]
    assert 'GENIE_SIM_API_KEY="$(cat /run/secrets/genie_api_key)"' in shell[2]
    assert "exec python -m genie_sim" in shell[2]
    # The documented way to point the worker at it.
    assert f"GENIE_API_BASE_URL=http://genie-sim:{config.port}" in COMPOSE_FILE.read_text()


# --- an engine's own check, where one is installed ------------------------------------------
