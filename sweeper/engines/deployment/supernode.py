"""`flower-supernode`, with its waits shortened.

Flower 1.41's SuperNode loop (`flwr.supernode.start_client_internal`) sleeps a fixed 3 s
whenever the SuperLink has no message for it, and 0.5 s between looks for its ClientApp's
reply: a message waited 1.5 s on average before its ClientApp started, twice per round
with client evaluation. Here the same SuperNode runs with those sleeps cut: a look for
messages every `FAST_POLL_S` after activity, backing off to `IDLE_POLL_S` when idle (two
requests a second: an idle federation kept between trials costs little), and a look for the
reply every `FAST_POLL_S`. With a doorbell (`doorbell.py`) it waits for the ServerApp's
ring instead (looking anyway every `PATIENCE_S`), rings its SuperExec when it stored a
message and the ServerApp when it pushed a reply. Before its first pull it enrolls its node
id under its partition (`roster.py`). Its Runtime API app is streamlined (`http_app.py`),
its object pulls are retried promptly (`pulls.py`), its Fleet client keeps its
connections alive (`transport.py`) and signs once a second (`node_signatures.py`).
Nothing else changes.
`require_hooks` fails loudly if a Flower upgrade moves what is patched.
"""

from __future__ import annotations

import sys
import time

from sweeper.engines.deployment.doorbell import Doorbell, clock_sleeping_with, ring
from sweeper.engines.deployment.http_app import streamlining
from sweeper.engines.deployment.node_signatures import sign_once_a_second
from sweeper.engines.deployment.pulls import retry_object_pulls_promptly
from sweeper.engines.deployment.roster import enroll
from sweeper.engines.deployment.telemetry import no_events_when_off
from sweeper.engines.deployment.transport import flower_clients_kept_alive

FAST_POLL_S = 0.02
IDLE_POLL_S = 0.5
IDLE_SLEEP_S = 3  # Flower's sleep when no message came
HOOKS = ("time", "_pull_and_store_message", "_push_messages")


def require_hooks(loop) -> None:
    missing = [name for name in HOOKS if not hasattr(loop, name)]
    if missing:
        raise RuntimeError(f"flwr.supernode.start_client_internal has no {missing}: "
                           "sweeper's SuperNode launcher needs updating for this Flower")


def patch(loop, partition: str) -> None:
    """Shorten the sleeps of Flower's SuperNode loop module `loop`, whose node serves
    client `partition`."""
    require_hooks(loop)
    bell = Doorbell(f"node-{partition}", FAST_POLL_S, IDLE_POLL_S)
    pull, push = loop._pull_and_store_message, loop._push_messages
    enrolled: list[int] = []

    def pulled(*args, **kwargs):
        if not enrolled:  # registered by now: Flower calls this with the node's state
            enrolled.append(kwargs["state"].get_node_id())
            enroll(partition, enrolled[0])
        run_id = pull(*args, **kwargs)
        if run_id is not None:
            bell.worked()
            ring(f"exec-client-{partition}")
        return run_id

    def pushed(*args, **kwargs) -> None:
        push(*args, **kwargs)
        ring("server")

    def sleep(seconds: float) -> None:
        if seconds == IDLE_SLEEP_S:
            bell.idle()
        else:
            time.sleep(min(seconds, FAST_POLL_S))

    loop._pull_and_store_message, loop._push_messages = pulled, pushed
    loop.time = clock_sleeping_with(sleep)


def partition_of(argv: list[str]) -> str:
    """The `partition-id` of `--node-config` in a `flower-supernode` command line."""
    config = argv[argv.index("--node-config") + 1] if "--node-config" in argv else ""
    found = [item.split("=", 1)[1] for item in config.split() if item.startswith("partition-id=")]
    return found[0] if found else "unknown"


def main() -> None:
    import flwr.supernode.main as node_api
    import flwr.supernode.start_client_internal as loop
    from flwr.supernode.cli import flower_supernode

    patch(loop, partition_of(sys.argv))
    node_api.create_app = streamlining(node_api.create_app)
    retry_object_pulls_promptly()
    flower_clients_kept_alive()
    sign_once_a_second()
    no_events_when_off()
    sys.argv[0] = "flower-supernode"
    flower_supernode()


if __name__ == "__main__":
    main()
