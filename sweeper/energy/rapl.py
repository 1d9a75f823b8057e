"""RAPL counters read from the Linux powercap tree (`/sys/class/powercap/intel-rapl:*`):
CPU package zones and their DRAM subzones, in microjoules, with wrap-around handled."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def powercap_root() -> Path:
    return Path(os.environ.get("SWEEPER_POWERCAP_ROOT", "/sys/class/powercap"))

PERMISSION_FIX = ("make the counters readable: `sudo chmod a+r /sys/class/powercap/"
                  "intel-rapl:*/energy_uj /sys/class/powercap/intel-rapl:*:*/energy_uj` "
                  "(on Grid'5000: `sudo-g5k chmod a+r ...`)")


class RaplUnavailable(Exception):
    """No readable RAPL counter; the message says why and how to fix it."""


@dataclass(frozen=True)
class Zone:
    path: Path
    name: str  # e.g. "package-0", "package-0/dram"
    max_uj: int

    def read_uj(self) -> int:
        return int((self.path / "energy_uj").read_text())


class PowercapRapl:
    """Package and DRAM zones; `read()` then `joules_since(previous)` per zone."""

    def __init__(self, root: Path | None = None) -> None:
        root = root or powercap_root()
        tops = sorted(root.glob("intel-rapl:[0-9]*"))
        tops = [p for p in tops if p.name.count(":") == 1]
        if not tops:
            raise RaplUnavailable(f"no RAPL zones under {root} (not an Intel/AMD RAPL "
                                  "machine, or powercap not mounted)")
        self.zones: list[Zone] = []
        for top in tops:
            package = _read(top / "name")
            self.zones.append(Zone(top, package, int(_read(top / "max_energy_range_uj"))))
            for sub in sorted(top.glob(f"{top.name}:[0-9]*")):
                if _read(sub / "name") == "dram":
                    self.zones.append(Zone(sub, f"{package}/dram",
                                           int(_read(sub / "max_energy_range_uj"))))
        self.read()  # fail now, not mid-trial, if a counter is unreadable

    def read(self) -> dict[str, int]:
        try:
            return {zone.name: zone.read_uj() for zone in self.zones}
        except PermissionError:
            raise RaplUnavailable(f"RAPL counters not readable: {PERMISSION_FIX}") from None
        except (OSError, ValueError) as exc:
            raise RaplUnavailable(f"RAPL counters unreadable ({exc})") from None

    def joules_since(self, before: dict[str, int], after: dict[str, int]) -> dict[str, float]:
        """Energy per zone between two readings; a counter that wrapped (after < before)
        went through its max_energy_range_uj once."""
        out = {}
        for zone in self.zones:
            delta = after[zone.name] - before[zone.name]
            if delta < 0:
                delta += zone.max_uj
            out[zone.name] = delta / 1e6
        return out


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except PermissionError:
        raise RaplUnavailable(f"{path}: not readable: {PERMISSION_FIX}") from None
    except OSError as exc:
        raise RaplUnavailable(f"{path}: {exc.strerror or exc}") from None
