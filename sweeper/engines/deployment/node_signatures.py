"""SuperNode signatures made once a second and checked once each, not once per request.

Flower 1.41 signs every Fleet request of a SuperNode (the current time, ECDSA P-384, in
`NodeAuthHttpInterceptor`) and the SuperLink verifies every one (`node_auth.
authenticate_node`), whether or not node authentication was asked for: 0.22 ms to sign and
0.47 ms to verify on this laptop, and a 10-client trial makes about 360 Fleet requests, so
about 0.17 CPU-s of the SuperLink's per trial went to verifying, on the one process every
SuperNode waits for. Flower accepts a signed time stamp for 300 s (`TIMESTAMP_TOLERANCE`),
from any request, so here:

- a SuperNode signs the current second (`now`, floored to the second) and reuses that
  signature for the requests of the same second: a stamp at most 1 s old;
- the SuperLink remembers the outcome of verifying a (public key, stamp, signature) triple,
  a pure function of its three values (`functools.lru_cache`, bounded): a triple never seen
  is verified as before, a wrong one stays wrong. Everything else `authenticate_node` checks
  runs on every request as before: the stamp's age, and that the key is the one registered
  for the node the request names.
"""

from __future__ import annotations

import datetime
import functools

from sweeper.engines.deployment.hooks import patched_module

CLIENT = "flwr.supernode.node_auth_http_interceptor"
SERVER = "flwr.superlink.routers.fleet.node_auth"
REMEMBERED = 4096  # triples (a few per SuperNode and second)


def sign_once_a_second() -> None:
    """In this process, Flower's SuperNode signs each second's stamp once."""
    module = patched_module(CLIENT, "now", "sign_message")
    now, sign = module.now, module.sign_message
    last: dict[int, tuple] = {}  # id(private key) -> (that key, stamp, signature)

    def this_second() -> datetime.datetime:
        return now().replace(microsecond=0)

    def signed(private_key, message: bytes) -> bytes:
        entry = last.get(id(private_key))
        if entry is None or entry[0] is not private_key or entry[1] != message:
            entry = (private_key, message, sign(private_key, message))
            last[id(private_key)] = entry
        return entry[2]

    module.now, module.sign_message = this_second, signed


def verify_each_signature_once() -> None:
    """In this process, the SuperLink verifies each (key, stamp, signature) once."""
    from flwr.supercore.primitives.asymmetric import bytes_to_public_key, public_key_to_bytes

    module = patched_module(SERVER, "verify_signature")
    verify = module.verify_signature

    @functools.lru_cache(maxsize=REMEMBERED)
    def verified(public_key: bytes, message: bytes, signature: bytes) -> bool:
        return verify(bytes_to_public_key(public_key), message, signature)

    def remembered(public_key, message: bytes, signature: bytes) -> bool:
        return verified(public_key_to_bytes(public_key), message, signature)

    module.verify_signature = remembered
