"""`geniectl dev --notify-url`: a signed webhook within a second of the demo's pause,
whose link is the inbox item of that pause."""

from __future__ import annotations

import os
import re
from datetime import datetime
from pathlib import Path

from standardwebhooks.webhooks import Webhook

from genie_stack import free_ports
from tests.cli.test_geniectl import _dev_flags, geniectl
from tests.webhooks import Receiver


async def test_dev_notifies_each_pause_with_a_signed_webhook(tmp_path: Path) -> None:
    receiver = Receiver()
    try:
        ports = free_ports(6)
        args = [
            "dev",
            "--demo",
            "--auto-approve",
            "--exit-after-demo",
            "--no-encrypt",
            "--notify-url",
            receiver.url,
            *_dev_flags(tmp_path, ports),
        ]
        r = await geniectl({**os.environ, "COLUMNS": "300"}, *args, within=120)
        assert r.code == 0, r.stderr + r.stdout
        secret = re.search(r"signed with (whsec_\S+)", r.stdout)
        assert secret, r.stdout
        assert len(receiver.posts) == 1, receiver.posts
        headers, body = receiver.posts[0]
        event = Webhook(secret.group(1)).verify(body, headers)
        data = event["data"]
        assert data["link"].startswith(
            f"http://127.0.0.1:{ports[4]}/items/{data['workflow_id']}/skill/"
        )
        # Sent within a second of the pause it announces.
        sent = int(headers["webhook-timestamp"])
        paused = data["details"]["requested_at"]
        assert abs(sent - _epoch(paused)) <= 1.5, (sent, paused)
    finally:
        receiver.close()


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


async def test_dev_refuses_a_bad_notify_url_or_secret_before_starting_anything(
    tmp_path: Path,
) -> None:
    for flags, says in (
        (["--notify-url", "ftp://hooks.example.com/SECRET-PATH"], "--notify-url: Value error"),
        (["--notify-url", "http://127.0.0.1:9/h", "--notify-secret", "whsec_S"], "--notify-secret"),
    ):
        ports = free_ports(6)
        args = ["dev", "--no-encrypt", *flags, *_dev_flags(tmp_path, ports)]
        r = await geniectl({**os.environ, "COLUMNS": "300"}, *args, within=30)
        assert r.code == 2, r.stderr + r.stdout
        assert says in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert "SECRET-PATH" not in r.stderr + r.stdout
        assert not (tmp_path / "temporal.db").exists()
