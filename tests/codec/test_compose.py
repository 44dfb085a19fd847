"""docker-compose.yml's codec service: a valid configuration that serves the UI it names."""

from __future__ import annotations

from pathlib import Path

import pytest

from genie_codec import load_keys
from genie_codec.server import load_codec_config
from tests.deploy.helpers import COMPOSE_FILE, REPO, environment, interpolate, load_yaml

SECRET = "/run/secrets/genie_payload_keys"


def test_the_codec_service_config_loads_and_matches_the_ui(
    no_genie_env: pytest.MonkeyPatch,
) -> None:
    compose = interpolate(load_yaml(COMPOSE_FILE), {})
    services = compose["services"]
    codec, ui = services["codec"], services["temporal-ui"]
    example = REPO / (compose["secrets"]["genie_payload_keys"]["file"] + ".example")
    keys = load_keys(None, example)
    assert keys is not None and keys.ids == ["k0-example"]
    # Everyone who reads payloads has the keys: the worker, the inbox, the codec server.
    for name in ("worker", "inbox", "codec"):
        assert environment(services[name])["GENIE_PAYLOAD_KEY_FILE"] == SECRET, name
        assert "genie_payload_keys" in services[name]["secrets"], name
    env = environment(codec)
    for name, value in env.items():
        no_genie_env.setenv(name, str(example) if value == SECRET else value)
    config = load_codec_config(host="0.0.0.0", port=8235)
    ui_port = ui["ports"][0].split(":")[1]
    assert f"http://127.0.0.1:{ui_port}" in config.origins
    (published,) = codec["ports"]
    host, port, inner = published.split(":")
    assert host == "127.0.0.1" and inner == "8235"
    assert environment(ui)["TEMPORAL_CODEC_ENDPOINT"] == f"http://127.0.0.1:{port}"
    assert codec["entrypoint"][:3] == ["python", "-m", "genie_codec"]
    assert (Path(REPO) / "genie_codec" / "__main__.py").is_file()
