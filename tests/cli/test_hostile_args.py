"""Arguments a script gets wrong reach the operator as one line and a consistent exit
code, never as a traceback under exit 1 ("refused"). The real console script against
the real stack."""

from __future__ import annotations

import uuid

import pytest

from geniectl._render import EXIT_ERROR, EXIT_NOT_FOUND, EXIT_REFUSED
from tests.cli.test_geniectl import Run, cli_env, geniectl  # noqa: F401 (fixture)


def _one_line(r: Run) -> str:
    assert "Traceback" not in r.stderr, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, r.stderr
    return lines[0]


@pytest.mark.parametrize("seconds", ["nan", "inf", "1e300", "0", "-1"])
async def test_a_bad_approval_timeout_is_refused_and_starts_nothing(
    cli_env: dict[str, str],  # noqa: F811
    seconds: str,
) -> None:
    wid = f"cli-args-{uuid.uuid4()}"
    r = await geniectl(
        cli_env, "start", "gin-cli", "u1", "--id", wid, "--approval-timeout", seconds
    )
    assert r.code == EXIT_REFUSED, r.stderr
    assert "refused (InvalidInput): approval_timeout" in _one_line(r)
    assert (await geniectl(cli_env, "status", wid)).code == EXIT_NOT_FOUND


async def test_an_empty_workflow_id_is_a_usage_error_not_a_new_conversation(
    cli_env: dict[str, str],  # noqa: F811
) -> None:
    # `--id "$ORDER_ID"` with the variable unset must not start a random conversation.
    r = await geniectl(cli_env, "start", "gin-cli", "u1", "--id", "", "--json")
    assert r.code == EXIT_ERROR and r.stdout == "", (r.stdout, r.stderr)
    assert "the workflow id is empty" in r.stderr and "Traceback" not in r.stderr
    for args in (["status", ""], ["approve", "", "c1"], ["history", " "]):
        bad = await geniectl(cli_env, *args)
        assert bad.code == EXIT_ERROR, (args, bad.stderr)
        assert "the workflow id is empty" in bad.stderr and "Traceback" not in bad.stderr


async def test_what_the_server_refuses_is_one_line(cli_env: dict[str, str]) -> None:  # noqa: F811
    r = await geniectl(cli_env, "start", "gin-cli", "u1", "--id", "x" * 5000)
    assert r.code == EXIT_ERROR, r.stderr
    assert _one_line(r).startswith("error: Temporal: WorkflowId exceeds maximum allowed length")
