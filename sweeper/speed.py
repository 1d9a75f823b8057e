"""Speed-scaling leverages of the node a trial runs on: CPU frequency and governor (Linux
cpufreq), GPU power limit (NVML). A setting that cannot be applied, or that reads back other
than asked, refuses the trial with the reason; it is never silently ignored. What is in force
is read back and recorded. `applied()` puts the previous settings back after the trial.

Read-back tolerances: the governor and scaling_setspeed must read back exactly (with the
userspace governor, scaling_setspeed reads the frequency the kernel picked, after rounding
to a frequency of the driver's table and clamping to scaling_min/max_freq). scaling_cur_freq
is measured by the driver (on x86 often from APERF/MPERF over the last tick), so it may lag a
moment and is noisy: it must come within CUR_FREQ_TOLERANCE of the ask within SETTLE_S. 2%
is under one P-state step (100 MHz, more than 2% of any frequency below 5 GHz), so a clamp
to the neighbouring frequency is still caught; so is turbo above the frequency asked. A GPU
limit must read back within GPU_TOLERANCE_W: NVML takes milliwatts but does not promise to
keep them.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sweeper.errors import SweeperError
from sweeper.speed_restore import Restorer, RestorerError

FIX_HINT = ("on Grid'5000: `sudo-g5k chmod a+w /sys/devices/system/cpu/cpu*/cpufreq/"
            "scaling_{governor,setspeed,max_freq}`; elsewhere run as root with cpufreq")
CUR_FREQ_TOLERANCE = 0.02
SETTLE_S = 0.5
GPU_TOLERANCE_W = 1.0

log = logging.getLogger(__name__)


class SpeedSettingRefused(SweeperError):
    """A requested speed setting cannot be applied on this node."""


@dataclass
class Applied:
    """What `applied()` yields: the settings in force (as `apply()` returns them) and, once
    the `with` block is left, what could not be put back (also logged)."""

    in_force: dict[str, Any]
    restore_problems: list[str] = field(default_factory=list)


@contextmanager
def applied(leverages: dict[str, Any]) -> Iterator[Applied]:
    """Apply the trial's speed settings for the `with` block; the node's previous settings
    are back when it is left, by an exception too, and even if this process is killed."""
    previous = _previous(leverages)
    if not any(previous.values()):
        yield Applied(apply(leverages))  # nothing to change, or refused before any write
        return
    try:
        restorer = Restorer(previous)
    except RestorerError as exc:
        raise SpeedSettingRefused(f"{_labels(leverages)}: {exc}") from None
    settings = Applied({})
    try:
        settings.in_force = apply(leverages)
        yield settings
    finally:
        settings.restore_problems = restorer.finish()
        for problem in settings.restore_problems:
            log.warning("speed settings not restored: %s", problem)


def apply(leverages: dict[str, Any]) -> dict[str, Any]:
    """Apply the trial's speed settings and check them; returns what the node reports is in
    force. Leaves them in force: a trial uses `applied()`."""
    in_force: dict[str, Any] = {}
    governor, khz = leverages.get("cpu_governor"), leverages.get("cpu_freq_khz")
    if khz is not None and governor not in (None, "userspace"):
        raise SpeedSettingRefused(f"cpu_freq_khz={khz}: needs cpu_governor userspace, "
                                  f"not {governor}")
    if governor is not None:
        _set_governor(str(governor), f"cpu_governor={governor}")
    if khz is not None:
        label = f"cpu_freq_khz={int(khz)}"
        _set_governor("userspace", f"{label} (governor userspace)")
        _write_all("scaling_setspeed", str(int(khz)), label)
        _check_frequency(int(khz), label)
    if governor is not None or khz is not None:
        in_force["cpu_governor"] = sorted({p.read_text().strip() for p in
                                           _cpufreq_files("scaling_governor")})
        in_force["cpu_cur_freq_khz"] = sorted({_khz(p) for p in
                                               _cpufreq_files("scaling_cur_freq")})
    watts = leverages.get("gpu_power_limit_w")
    if watts is not None:
        in_force["gpu_power_limit_w"] = _gpu_power_limit(float(watts))
    return in_force


def _root() -> Path:
    return Path(os.environ.get("SWEEPER_CPUFREQ_ROOT", "/sys/devices/system/cpu"))


def _cpufreq_files(name: str) -> list[Path]:
    return sorted(_root().glob(f"cpu[0-9]*/cpufreq/{name}"))


def _cpu(path: Path) -> str:
    return path.parent.parent.name


def _khz(path: Path) -> int | str:
    text = path.read_text().strip()
    return int(text) if text.isdigit() else text


def _labels(leverages: dict[str, Any]) -> str:
    return ", ".join(f"{name}={leverages[name]}" for name in
                     ("cpu_governor", "cpu_freq_khz", "gpu_power_limit_w")
                     if leverages.get(name) is not None)


def _previous(leverages: dict[str, Any]) -> dict[str, Any]:
    """The settings `apply(leverages)` would change, as `Restorer` takes them."""
    previous: dict[str, Any] = {}
    if leverages.get("cpu_governor") is not None or leverages.get("cpu_freq_khz") is not None:
        files = previous["files"] = []
        for path in _cpufreq_files("scaling_governor"):
            governor = _read_to_restore(path, leverages)
            files.append([str(path), governor])
            if governor == "userspace":  # its frequency too; other governors pick their own
                setspeed = path.with_name("scaling_setspeed")
                files.append([str(setspeed), _read_to_restore(setspeed, leverages)])
    watts = leverages.get("gpu_power_limit_w")
    if watts is not None:
        previous["gpu_mw"] = _gpu_limits_mw(f"gpu_power_limit_w={float(watts):g}")
    return previous


def _read_to_restore(path: Path, leverages: dict[str, Any]) -> str:
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise SpeedSettingRefused(f"{_labels(leverages)}: cannot read {path} to restore it "
                                  f"after the trial: {exc.strerror}") from None


def _write_all(name: str, value: str, label: str) -> None:
    files = _cpufreq_files(name)
    if not files:
        raise SpeedSettingRefused(f"{label}: this node exposes no "
                                  f"{_root()}/cpu*/cpufreq/{name} ({FIX_HINT})")
    for path in files:
        try:
            path.write_text(f"{value}\n")
        except OSError as exc:
            raise SpeedSettingRefused(f"{label}: cannot write {path}: "
                                      f"{exc.strerror} ({FIX_HINT})") from None


def _set_governor(governor: str, label: str) -> None:
    for path in _cpufreq_files("scaling_available_governors")[:1]:
        available = path.read_text().split()
        if governor not in available:
            raise SpeedSettingRefused(f"{label}: {_cpu(path)} offers only the governors "
                                      f"{' '.join(available)} (scaling_available_governors)")
    _write_all("scaling_governor", governor, label)
    _check_governor(governor, label)


def _check_governor(governor: str, label: str) -> None:
    for path in _cpufreq_files("scaling_governor"):
        now = path.read_text().strip()
        if now != governor:
            raise SpeedSettingRefused(f"{label}: {_cpu(path)} reads back governor {now!r} "
                                      f"(scaling_governor) after writing {governor!r}")


def _check_frequency(khz: int, label: str) -> None:
    for path in _cpufreq_files("scaling_setspeed"):
        now = path.read_text().strip()
        if now != str(khz):
            raise SpeedSettingRefused(
                f"{label}: {_cpu(path)} reads back {now!r} kHz (scaling_setspeed) after "
                f"writing {khz}; the kernel takes a frequency of its table within "
                "scaling_min/max_freq")
    deadline = time.monotonic() + SETTLE_S
    while True:
        readings = [(path, _khz(path)) for path in _cpufreq_files("scaling_cur_freq")]
        off = [(path, now) for path, now in readings
               if not isinstance(now, int) or abs(now - khz) > CUR_FREQ_TOLERANCE * khz]
        if not off:
            return
        if time.monotonic() > deadline:
            path, now = off[0]
            raise SpeedSettingRefused(
                f"{label}: {_cpu(path)} runs at {now} kHz (scaling_cur_freq) after writing "
                f"scaling_setspeed (tolerance {CUR_FREQ_TOLERANCE:.0%})")
        time.sleep(0.05)


@contextmanager
def _nvml(label: str) -> Iterator[Any]:
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception as exc:  # no library, no driver or no GPU: all refuse the same way
        raise SpeedSettingRefused(f"{label}: NVML unavailable on this node "
                                  f"({type(exc).__name__}: {exc})") from None
    try:
        if pynvml.nvmlDeviceGetCount() == 0:
            raise SpeedSettingRefused(f"{label}: no GPU on this node")
        yield pynvml
    except pynvml.NVMLError as exc:
        raise SpeedSettingRefused(f"{label}: NVML refused ({exc}); "
                                  "setting a power limit needs root") from None
    finally:
        pynvml.nvmlShutdown()


def _gpu_limits_mw(label: str) -> list[list[int]]:
    with _nvml(label) as nvml:
        return [[index, int(nvml.nvmlDeviceGetPowerManagementLimit(
                    nvml.nvmlDeviceGetHandleByIndex(index)))]
                for index in range(nvml.nvmlDeviceGetCount())]


def _gpu_power_limit(watts: float) -> list[float]:
    label = f"gpu_power_limit_w={watts:g}"
    limits = []
    with _nvml(label) as nvml:
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            nvml.nvmlDeviceSetPowerManagementLimit(handle, int(watts * 1000))
            now = nvml.nvmlDeviceGetPowerManagementLimit(handle) / 1000
            if abs(now - watts) > GPU_TOLERANCE_W:
                raise SpeedSettingRefused(f"{label}: gpu{index} reads back {now:g} W "
                                          "(nvmlDeviceGetPowerManagementLimit) after setting it")
            limits.append(now)
    return limits
