"""``--poll SECONDS``: follow the registry's ``production`` alias without being told.

Only the first worker polls; its swaps reach the other workers like any admin swap. A version
that fails to load is logged and left alone (the serving one stays) until the alias moves again.
"""

from __future__ import annotations

import asyncio
import logging

from driftline.errors import DriftlineError
from driftline.registry.store import PRODUCTION
from driftline.server.repository import ModelRepository
from driftline.server.service import AdminService

log = logging.getLogger("driftline.server")


async def follow_production(repository: ModelRepository, admin: AdminService, every_s: float) -> None:
    refused: dict[str, int] = {}  # model -> production version that failed, not retried until the alias moves
    while True:
        await asyncio.sleep(every_s)
        for name in repository.names():
            try:
                target = repository.registry.aliases(name).get(PRODUCTION)
                slot = repository.slot(name)
                serving = slot.default.served.version if slot.default else None
                if target is None or target == serving or refused.get(name) == target:
                    continue
                log.info("%s: production moved to version %d; swapping", name, target)
                await admin.swap(name, target, force=False)
                refused.pop(name, None)
            except DriftlineError as exc:
                refused[name] = target
                log.error("%s: cannot follow production to version %s: %s", name, target, exc)
            except Exception:  # noqa: BLE001 - the poller must outlive any one failure
                log.exception("%s: polling the registry failed", name)
