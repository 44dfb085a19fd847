"""Search attributes carry no plaintext user id when the deployment hashes it."""

from __future__ import annotations

import uuid

from temporalio.client import Client

from activities._users import user_search_value
from genie_api import GenieClient
from tests.conftest import worker_settings
from tests.services import SimProcess
from tests.workflow.helpers import USER, convs, eventually, start
from worker import build_worker
from workflows.search_attributes import GENIE_USER_ID


async def test_genie_user_id_is_a_keyed_hash_and_ops_can_still_filter(
    client: Client, sim: SimProcess, genie: GenieClient
) -> None:
    key = "k" * 32
    tq = f"test-privacy-{uuid.uuid4()}"
    settings = worker_settings(sim, user_id_hash_key=key)
    async with build_worker(client, settings, genie, task_queue=tq):
        api = convs(client, tq)
        wid = await start(api)
        value = user_search_value(key.encode(), USER)
        desc = await eventually(
            lambda: api.handle(wid).describe(),
            lambda d: d.typed_search_attributes.get(GENIE_USER_ID) is not None,
            what="GenieUserId set",
        )
        assert desc.typed_search_attributes.get(GENIE_USER_ID) == value
        assert USER not in value
        listed = await eventually(
            lambda: _ids(client, f'GenieUserId = "{value}"'),
            lambda ids: wid in ids,
            what="filtering by the hash",
        )
        assert wid in listed
        assert (await api.status(wid)).user_id == USER  # the payload still names the user


async def _ids(client: Client, query: str) -> list[str]:
    return [w.id async for w in client.list_workflows(query)]
