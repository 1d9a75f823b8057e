"""Profile constants (host power, network J/byte, device J/FLOP, carbon intensity) from
`profiles.yaml`, each with its source."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import yaml

from sweeper.errors import SweeperError

BUILTIN = Path(__file__).with_name("profiles.yaml")


@dataclass(frozen=True)
class HostProfile:
    name: str
    watts_per_core: float
    source: str


@dataclass(frozen=True)
class NetworkProfile:
    name: str
    j_per_byte_up: float
    j_per_byte_down: float
    source: str
    link: dict[str, float] = field(default_factory=dict)  # keys of LINK_FIELDS, where known
    link_source: str = ""


LINK_FIELDS = ("up_mbps", "down_mbps", "rtt_ms", "loss_pct")


@dataclass(frozen=True)
class LinkShape:
    """A link to emulate (deployment engine, network namespaces)."""

    up_mbps: float
    down_mbps: float
    latency_ms: float = 0.0  # one way
    loss_pct: float = 0.0


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    j_per_flop: dict[str, float]  # by precision: fp32, bf16, fp16
    source: str
    idle_w: float | None = None


@dataclass(frozen=True)
class CarbonIntensity:
    region: str
    g_per_kwh: float
    source: str


@dataclass(frozen=True)
class Profiles:
    hosts: dict[str, HostProfile]
    networks: dict[str, NetworkProfile]
    devices: dict[str, DeviceProfile]
    carbon: dict[str, CarbonIntensity]


@cache
def load_profiles(extra: str | None = None) -> Profiles:
    """Built-in profiles, extended by the file named in `extra` or $SWEEPER_PROFILES."""
    hosts: dict[str, HostProfile] = {}
    networks: dict[str, NetworkProfile] = {}
    devices: dict[str, DeviceProfile] = {}
    carbon: dict[str, CarbonIntensity] = {}
    paths = [BUILTIN]
    extra = extra or os.environ.get("SWEEPER_PROFILES")
    if extra:
        paths.append(Path(extra))
    for path in paths:
        try:
            raw = yaml.safe_load(path.read_text()) or {}
            for name, body in (raw.get("hosts") or {}).items():
                hosts[name] = HostProfile(name, float(body["watts_per_core"]), body["source"])
            for name, body in (raw.get("networks") or {}).items():
                networks[name] = NetworkProfile(name, float(body["j_per_byte_up"]),
                                                float(body["j_per_byte_down"]), body["source"],
                                                _link(name, body), body.get("link_source", ""))
            for name, body in (raw.get("devices") or {}).items():
                idle = body.get("idle_w")
                devices[name] = DeviceProfile(
                    name, {k: float(v) for k, v in body["j_per_flop"].items()}, body["source"],
                    None if idle is None else float(idle))
            for name, body in (raw.get("carbon") or {}).items():
                carbon[name] = CarbonIntensity(name, float(body["g_per_kwh"]), body["source"])
        except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError) as exc:
            raise SweeperError(f"{path}: bad energy profile file ({exc})") from None
    return Profiles(hosts, networks, devices, carbon)


def _link(name: str, body: dict) -> dict[str, float]:
    link = body.get("link") or {}
    unknown = sorted(set(link) - set(LINK_FIELDS))
    if unknown:
        raise ValueError(f"networks.{name}.link: unknown key {unknown[0]!r} "
                         f"(known: {', '.join(LINK_FIELDS)})")
    if link and not body.get("link_source"):
        raise ValueError(f"networks.{name}: link given without link_source")
    return {key: float(value) for key, value in link.items()}


def link_shape(network_profile: str) -> LinkShape:
    """The link of a network profile, from its `link` fields (each with its source)."""
    networks = load_profiles().networks
    profile = networks.get(network_profile)
    link = profile.link if profile is not None else {}
    if "up_mbps" not in link or "down_mbps" not in link:
        known = sorted(name for name, p in networks.items()
                       if {"up_mbps", "down_mbps"} <= set(p.link))
        raise SweeperError(f"network profile {network_profile!r} has no link shape to emulate "
                           f"(profiles with one: {', '.join(known)}); add link: {{up_mbps, "
                           "down_mbps, rtt_ms, loss_pct}} and link_source to a profiles file "
                           "named by SWEEPER_PROFILES")
    return LinkShape(link["up_mbps"], link["down_mbps"], link.get("rtt_ms", 0.0) / 2,
                     link.get("loss_pct", 0.0))
