"""Run one federation on Flower's simulation runtime, inside the caller's process.

Every touch of Flower's simulation internals is in this module, so a change of Flower's API
is a change of one file. Why not `flwr.simulation.run_simulation` with its Ray backend:
inside a Ray task it sizes its actor pool from the whole cluster (not the trial's
reservation) and its `terminate` calls `ray.shutdown()`, which kills the trial's worker.
Instead, `InProcessBackend` runs the ClientApps one after the other in the trial's own
process, so a trial uses exactly the CPUs Ray reserved for it and leaves Ray up. Flower's
runtime (LinkState, InMemoryGrid, message queues, Contexts per node) is used as is.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterable
from queue import Empty, Queue
from uuid import uuid4

from flwr.app import Context, Error, Message, RecordDict
from flwr.app.user_config import UserConfig
from flwr.clientapp import ClientApp
from flwr.clientapp.client_app import ClientAppException
from flwr.common.constant import RUN_ID_NUM_BYTES, SUPERLINK_NODE_ID, TASK_ID_NUM_BYTES, ErrorCode
from flwr.proto.task_pb2 import Task  # pylint: disable=E0611
from flwr.server.superlink.fleet.vce.backend.backend import Backend, BackendConfig
from flwr.server.superlink.fleet.vce.vce_api import (
    _register_node_info_stores,
    _register_nodes,
)
from flwr.server.superlink.linkstate import InMemoryLinkState, LinkStateFactory
from flwr.server.superlink.linkstate.in_memory_linkstate import RunRecord
from flwr.server.superlink.linkstate.utils import generate_rand_int_from_bytes
from flwr.serverapp import ServerApp
from flwr.supercore.constant import FLWR_IN_MEMORY_DB_NAME, NOOP_FEDERATION_ID
from flwr.supercore.date import now
from flwr.supercore.object_store import ObjectStoreFactory
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity
from flwr.superlink.federation import NoOpFederationManager
from flwr.superlink.grid import InMemoryGrid

from sweeper.config import TrialConfig
from sweeper.engines import in_partition_order
from sweeper.fl.client_app import app as client_app
from sweeper.fl.server_app import RoundWatcher, build_server_app
from sweeper.fl.strategy import RoundStats


class HandOffGrid(InMemoryGrid):
    """Flower's in-memory grid, with the polling taken out of both sides: pushed messages
    are also handed to the dispatcher's inbox, and `send_and_receive` sleeps until the
    dispatcher says replies are stored, instead of pulling every `pull_interval` (0.1 s by
    default) and scanning every stored message for every node on each pull."""

    def __init__(self, state_factory: LinkStateFactory) -> None:
        super().__init__(state_factory=state_factory)
        self.inbox: Queue[Message | None] = Queue()  # None: the ServerApp has returned
        self.replied = threading.Condition()
        self.partition_of: dict[int, int] = {}  # node id -> partition id

    def get_node_ids(self) -> Iterable[int]:
        return in_partition_order(super().get_node_ids(), self.partition_of)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        messages = list(messages)
        stored = set(super().push_messages(messages))
        for message in messages:
            if message.metadata.message_id in stored:
                self.inbox.put(message)
        return stored

    def send_and_receive(self, messages: Iterable[Message], *,
                         timeout: float | None = None) -> Iterable[Message]:
        waiting = set(self.push_messages(messages))
        deadline = None if timeout is None else time.monotonic() + timeout
        replies: list[Message] = []
        with self.replied:
            while True:
                pulled = list(self.pull_messages(waiting))
                replies.extend(pulled)
                waiting -= {m.metadata.reply_to_message_id for m in pulled}
                left = None if deadline is None else deadline - time.monotonic()
                if not waiting or (left is not None and left <= 0):
                    return replies
                self.replied.wait(left)

    def replies_stored(self) -> None:
        with self.replied:
            self.replied.notify_all()


def _dispatch(grid: HandOffGrid, backend: Backend, node_stores: dict) -> None:
    """Deliver each message the ServerApp pushes to its node's ClientApp, until the
    ServerApp returns. Does what Flower's `run_api` does (delivery marks, contexts, error
    replies), without its polling and its 1 s shutdown timeouts."""
    while (message := grid.inbox.get()) is not None:
        message.metadata.delivered_at = now().isoformat()  # as LinkState.get_message_ins
        store = node_stores[message.metadata.dst_node_id]
        grid.state.store_message_res(_reply(message, backend, store))
        if grid.inbox.empty():  # the round's messages are answered: wake the ServerApp
            grid.replies_stored()


def _reply(message: Message, backend: Backend, store) -> Message:
    run_id = message.metadata.run_id
    try:
        reply, context = backend.process_message(message, store.retrieve_context(run_id))
        store.update_context(run_id, context)
    except ClientAppException as exc:
        reply = Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION,
                              reason=f"{type(exc).__name__}:<'{exc}'>"), reply_to=message)
    reply.metadata.__dict__["_message_id"] = str(uuid4())  # as Flower's runtime does
    return reply


class InProcessBackend(Backend):
    """Runs each ClientApp call in the calling thread of the simulation runtime."""

    def __init__(self, backend_config: BackendConfig | None = None) -> None:
        self.app: ClientApp | None = None

    def build(self, app_fn: Callable[[], ClientApp]) -> None:
        self.app = app_fn()

    @property
    def num_workers(self) -> int:
        return 1

    def is_worker_idle(self) -> bool:
        return True

    def process_message(self, message: Message, context: Context) -> tuple[Message, Context]:
        assert self.app is not None, "build() first"
        try:
            return self.app(message=message, context=context), context
        except Exception as exc:  # as Flower's Ray backend reports a ClientApp's failure
            raise ClientAppException(f"{type(exc).__name__}: {exc}") from exc

    def terminate(self) -> None:
        self.app = None


def run_federation(server_app: ServerApp, client_app: ClientApp, num_clients: int,
                   seed: int) -> None:
    """Run `server_app` against `num_clients` simulated SuperNodes; re-raise its error."""
    logging.getLogger("flwr").setLevel(logging.CRITICAL)  # failures reach the result
    random.seed(seed)  # Flower samples clients with the module-level `random`
    run = Run.create_empty(run_id=generate_rand_int_from_bytes(RUN_ID_NUM_BYTES))
    run.primary_task_id = generate_rand_int_from_bytes(TASK_ID_NUM_BYTES)
    run.federation_id = NOOP_FEDERATION_ID
    TaskIdentity.task_id = 1
    TaskIdentity.run_id = run.run_id
    TaskIdentity.node_id = SUPERLINK_NODE_ID

    state_factory = LinkStateFactory(FLWR_IN_MEMORY_DB_NAME, NoOpFederationManager(),
                                     ObjectStoreFactory())
    state = state_factory.state()
    assert isinstance(state, InMemoryLinkState)
    state.run_ids[run.run_id] = RunRecord(run=run)
    state.task_store[run.primary_task_id] = Task(task_id=run.primary_task_id,
                                                 run_id=run.run_id)
    grid = HandOffGrid(state_factory)
    grid.set_run(run)

    nodes = _register_nodes(num_nodes=num_clients, state_factory=state_factory)
    grid.partition_of = dict(nodes)
    node_stores = _register_node_info_stores(nodes_mapping=nodes, run=run)
    errors: Queue[BaseException] = Queue()

    def serve() -> None:
        try:
            context = Context(run_id=run.run_id, node_id=0, node_config=UserConfig(),
                              state=RecordDict(), run_config=UserConfig())
            server_app(grid=grid, context=context)
        except BaseException as exc:  # handed to the caller below
            errors.put(exc)
        finally:
            grid.inbox.put(None)

    server = threading.Thread(target=serve, name="sweeper-serverapp", daemon=True)
    server.start()
    backend = InProcessBackend()
    backend.build(lambda: client_app)
    try:
        _dispatch(grid, backend, node_stores)
    finally:
        backend.terminate()
    server.join()
    try:
        raise errors.get_nowait()
    except Empty:
        pass


def run_trial(config: TrialConfig, watcher: RoundWatcher | None = None,
              info: dict | None = None) -> list[RoundStats]:
    """The engine's face (see `sweeper.engines`): the trial's apps on the simulation runtime.
    Nothing to add to `info`: there is no wire and no process of its own."""
    rounds: list[RoundStats] = []
    server_app = build_server_app(config, rounds.extend, watcher)
    run_federation(server_app, client_app, config.scenario.num_clients, config.seed)
    return rounds
