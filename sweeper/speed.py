"""Speed-scaling leverages of the node a trial runs on: CPU frequency and governor (Linux
cpufreq), GPU power limit (NVML). A setting that cannot be applied refuses the trial with
the reason; it is never silently ignored. What is in force is read back and recorded."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sweeper.errors import SweeperError

CPUFREQ = Path(os.environ.get("SWEEPER_CPUFREQ_ROOT", "/sys/devices/system/cpu"))
FIX_HINT = ("on Grid'5000: `sudo-g5k chmod a+w /sys/devices/system/cpu/cpu*/cpufreq/"
            "scaling_{governor,setspeed,max_freq}`; elsewhere run as root with cpufreq")


class SpeedSettingRefused(SweeperError):
    """A requested speed setting cannot be applied on this node."""


def _cpufreq_files(name: str) -> list[Path]:
    return sorted(CPUFREQ.glob(f"cpu[0-9]*/cpufreq/{name}"))


def _write_all(name: str, value: str, label: str) -> None:
    files = _cpufreq_files(name)
    if not files:
        raise SpeedSettingRefused(f"{label}: this node exposes no "
                                  f"{CPUFREQ}/cpu*/cpufreq/{name} ({FIX_HINT})")
    for path in files:
        try:
            path.write_text(f"{value}\n")
        except OSError as exc:
            raise SpeedSettingRefused(f"{label}: cannot write {path}: "
                                      f"{exc.strerror} ({FIX_HINT})") from None


def _read_all(name: str) -> list[str]:
    return [p.read_text().strip() for p in _cpufreq_files(name)]


def apply(leverages: dict[str, Any]) -> dict[str, Any]:
    """Apply the trial's speed settings; returns what the node reports is in force."""
    in_force: dict[str, Any] = {}
    governor, khz = leverages.get("cpu_governor"), leverages.get("cpu_freq_khz")
    if governor is not None:
        _write_all("scaling_governor", str(governor), f"cpu_governor={governor}")
    if khz is not None:
        if governor not in (None, "userspace"):
            raise SpeedSettingRefused(f"cpu_freq_khz={khz}: needs cpu_governor userspace, "
                                      f"not {governor}")
        label = f"cpu_freq_khz={int(khz)} (governor userspace)"
        _write_all("scaling_governor", "userspace", label)
        _write_all("scaling_setspeed", str(int(khz)), label)
    if governor is not None or khz is not None:
        in_force["cpu_governor"] = sorted(set(_read_all("scaling_governor")))
        in_force["cpu_cur_freq_khz"] = sorted({int(v) for v in _read_all("scaling_cur_freq")})
    watts = leverages.get("gpu_power_limit_w")
    if watts is not None:
        in_force["gpu_power_limit_w"] = _gpu_power_limit(float(watts))
    return in_force


def _gpu_power_limit(watts: float) -> list[float]:
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception as exc:  # no library, no driver or no GPU: all refuse the same way
        raise SpeedSettingRefused(f"gpu_power_limit_w={watts:g}: NVML unavailable on this "
                                  f"node ({type(exc).__name__}: {exc})") from None
    try:
        limits = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            pynvml.nvmlDeviceSetPowerManagementLimit(handle, int(watts * 1000))
            limits.append(pynvml.nvmlDeviceGetPowerManagementLimit(handle) / 1000)
        if not limits:
            raise SpeedSettingRefused(f"gpu_power_limit_w={watts:g}: no GPU on this node")
        return limits
    except pynvml.NVMLError as exc:
        raise SpeedSettingRefused(f"gpu_power_limit_w={watts:g}: NVML refused ({exc}); "
                                  "setting a power limit needs root") from None
    finally:
        pynvml.nvmlShutdown()
