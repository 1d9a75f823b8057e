"""Profile constants (host power, network J/byte, device J/FLOP, carbon intensity) from
`profiles.yaml`, each with its source."""

from __future__ import annotations

import os
from dataclasses import dataclass
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


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    j_per_flop: dict[str, float]  # by precision: fp32, bf16, fp16
    source: str


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
                                                float(body["j_per_byte_down"]), body["source"])
            for name, body in (raw.get("devices") or {}).items():
                devices[name] = DeviceProfile(
                    name, {k: float(v) for k, v in body["j_per_flop"].items()}, body["source"])
            for name, body in (raw.get("carbon") or {}).items():
                carbon[name] = CarbonIntensity(name, float(body["g_per_kwh"]), body["source"])
        except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError) as exc:
            raise SweeperError(f"{path}: bad energy profile file ({exc})") from None
    return Profiles(hosts, networks, devices, carbon)
