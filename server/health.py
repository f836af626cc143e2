"""gRPC health checking (grpc.health.v1.Health) that follows the model repository.

Service ``""`` is the server as a whole: SERVING when every model serves (``ModelRepository.ready``,
what ServerReady answers). Each model name is a service of its own: SERVING while it has a default
version, NOT_SERVING once it is unloaded or failed to load. Names the server never held are
unknown (Check: NOT_FOUND, Watch: SERVICE_UNKNOWN), as grpc_health's servicer answers them.

With ``--workers N`` each process has its own repository and its own health service; load, unload
and swap reach every worker, so each one's statuses follow its own models.
"""

from __future__ import annotations

import asyncio
from collections import Counter

from grpc_health.v1 import health_pb2
from grpc_health.v1.health import aio

from driftline.server.repository import ModelRepository

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVER = ""  # the health protocol's name for the server as a whole


class Health:
    """Owns the health servicer and keeps its statuses in step with the repository."""

    def __init__(self, repository: ModelRepository, loop: asyncio.AbstractEventLoop) -> None:
        self.servicer = HealthServicer()
        self._repository = repository
        self._loop = loop
        self._pending: set[asyncio.Task] = set()
        self._one_at_a_time = asyncio.Lock()
        repository.on_change.append(self._changed)

    async def sync(self, names: list[str] | None = None) -> None:
        """Set ``names`` (every model when None) and the server's status from the repository as it is now."""
        # set() may wait for a watcher's write; one sync at a time, each reading the repository when
        # its turn comes, so that a later change is never overwritten by an earlier one.
        async with self._one_at_a_time:
            for name in self._repository.names() if names is None else names:
                slot = self._repository.find(name)
                serving = slot is not None and slot.default is not None
                await self.servicer.set(name, SERVING if serving else NOT_SERVING)
            await self.servicer.set(SERVER, SERVING if self._repository.ready() else NOT_SERVING)

    async def shutdown(self) -> None:
        """Every service NOT_SERVING from now on, so that probes and watchers move away before the port closes."""
        await self.servicer.enter_graceful_shutdown()

    def _changed(self, name: str) -> None:
        # The repository changes synchronously and the servicer's set() is a coroutine (it wakes
        # watchers), so the update runs as a task on the server's loop, whichever thread changed it.
        self._loop.call_soon_threadsafe(self._start_sync, name)

    def _start_sync(self, name: str) -> None:
        task = self._loop.create_task(self.sync([name]))
        self._pending.add(task)  # the loop keeps only weak references to tasks
        task.add_done_callback(self._pending.discard)


class HealthServicer(aio.HealthServicer):
    """grpc_health's asyncio servicer, with Watch fixed for several watchers of one name.

    Upstream's Watch drops a name's condition as soon as any one of its watchers leaves, and later
    changes wake only watchers that wait on the condition still registered: the others would never
    hear another status, the NOT_SERVING of a shutdown included (grpc/grpc#43403, not merged as of
    grpcio-health-checking 1.81). Here the condition stays registered while anyone watches the name.
    """

    def __init__(self) -> None:
        super().__init__()
        self._watching: Counter[str] = Counter()

    async def Watch(self, request: health_pb2.HealthCheckRequest, context) -> None:  # noqa: N802 - gRPC's name
        name = request.service
        condition = self._server_watchers[name]  # the one the base class waits on (it creates it here)
        self._watching[name] += 1
        try:
            await super().Watch(request, context)
        finally:
            # Runs right after the base class's own cleanup, with no await in between.
            self._watching[name] -= 1
            if self._watching[name]:
                self._server_watchers[name] = condition
            else:
                del self._watching[name]
