"""What a sweep ran with and where: the software of the sweep's driver (recorded on its MLflow
run), the machine under each trial (on the trial's child run), and the differences between a
record and now, one line each.

Only the facts named here are read: no environment variable wholesale (OAR_JOB_ID is the one
read), and the package list is names and versions, without the install URLs `pip freeze`
would print (they may carry tokens).
"""

from __future__ import annotations

import functools
import os
import platform
import re
import shlex
import subprocess
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

import sweeper
from sweeper.energy import PowercapRapl, RaplUnavailable
from sweeper.speed import _cpufreq_files as cpufreq_files  # the files speed.py sets

PACKAGES = ("flwr", "ray", "torch", "torchaudio", "optuna", "mlflow", "numpy", "zeus")
# facts on which an energy figure depends: trials that differ in one are not comparable
HARDWARE = ("cpu_model", "cpus_logical", "cpus_physical", "memory_gib", "cpufreq_driver",
            "cpufreq_governor", "torch_build")
NOT_COMPARED = ("command",)  # differs between any two invocations
LABELS = {"cpufreq_governor": "governor", "cpufreq_driver": "cpufreq driver",
          "python": "Python", "cpu_model": "CPU", "memory_gib": "memory GiB"}
HEADER = re.compile(r"^(Name|Version): *(.+?)\s*$", re.M)
G5K_HOST = re.compile(r"^(?P<node>(?P<cluster>[a-z][a-z0-9-]*?)-\d+)"
                      r"(?:\.(?P<site>[a-z]+)\.grid5000\.fr)?$")


def sweep_environment(command: Sequence[str] | None = None) -> dict[str, str]:
    """The driver's software: sweeper's version and commit, Python, the packages an energy
    figure depends on, this host and the command line (default: `sys.argv`)."""
    return {**_software(), "host": platform.node(),
            "command": shlex.join(command if command is not None else sys.argv)}


@functools.cache
def _software() -> dict[str, str]:
    commit, dirty, _ = git_state()
    return {"sweeper": sweeper.__version__, "commit": commit, "dirty": dirty,
            "python": platform.python_version(),
            **{name: _version(name) for name in PACKAGES}}


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "missing"


@functools.cache
def git_state() -> tuple[str, str, str]:
    """(commit, "true"/"false" dirty, `git diff HEAD` when dirty) of sweeper's checkout;
    "unknown (why)" when sweeper is not run from one."""
    root = Path(sweeper.__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return "unknown (not a git checkout)", "unknown", ""
    try:
        commit = _git(root, "rev-parse", "HEAD").strip()
        changed = _git(root, "status", "--porcelain", "--untracked-files=no").strip()
        return commit, str(bool(changed)).lower(), _git(root, "diff", "HEAD") if changed else ""
    except (OSError, subprocess.SubprocessError) as exc:
        return f"unknown ({type(exc).__name__})", "unknown", ""


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                          check=True, timeout=30).stdout


@functools.cache
def installed_packages() -> str:
    """`name==version` of every installed distribution, one a line, sorted."""
    found = set()
    for dist in metadata.distributions():
        # the two header lines, read without `dist.metadata`'s email parser (15x slower)
        text = dist.read_text("METADATA") or dist.read_text("PKG-INFO") or ""
        header = dict(HEADER.findall(text.split("\n\n", 1)[0]))
        if "Name" in header and "Version" in header:
            found.add(f"{header['Name']}=={header['Version']}")
    return "\n".join(sorted(found, key=str.lower)) + "\n"


def machine() -> dict[str, str]:
    """The machine a trial runs on and the settings in force; collected once per process,
    except torch's thread counts, which the trial sets."""
    import torch

    return {**_machine(), "torch_threads": str(torch.get_num_threads()),
            "torch_interop_threads": str(torch.get_num_interop_threads())}


@functools.cache
def _machine() -> dict[str, str]:
    import torch

    pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    facts = {"host": platform.node(), "cpu_model": _cpu_model(),
             "cpus_logical": str(os.cpu_count()), "cpus_physical": _physical_cores(),
             "memory_gib": f"{pages * page_size / 2**30:.1f}", "kernel": platform.release(),
             "cpufreq_driver": _cpufreq("scaling_driver"),
             "cpufreq_governor": _cpufreq("scaling_governor"),
             "rapl": _rapl(), "nvml": _nvml(),
             "torch_build": f"{torch.__version__} "
                            + (f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU")}
    return {**facts, **g5k_facts(platform.node(), os.environ.get("OAR_JOB_ID"))}


def _cpuinfo() -> list[dict[str, str]]:
    """/proc/cpuinfo, one dict per logical CPU ([] where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    return [dict((k.strip(), v.strip()) for k, _, v in
                 (line.partition(":") for line in block.splitlines()))
            for block in text.strip().split("\n\n")]


def _cpu_model() -> str:
    for cpu in _cpuinfo():
        for key in ("model name", "Model", "Hardware"):  # x86, then ARM
            if cpu.get(key):
                return cpu[key]
    return platform.processor() or "unknown"


def _physical_cores() -> str:
    cores = {(cpu.get("physical id"), cpu.get("core id")) for cpu in _cpuinfo()
             if "core id" in cpu}
    return str(len(cores)) if cores else "unknown"


def _cpufreq(name: str) -> str:
    """The value of one cpufreq file over all CPUs (several, comma-separated, if they
    differ); "none" without cpufreq (e.g. in a VM)."""
    try:
        values = {path.read_text().strip() for path in cpufreq_files(name)}
    except OSError as exc:
        return f"unreadable ({exc.strerror})"
    return ",".join(sorted(values)) or "none"


def _rapl() -> str:
    try:
        return "readable (" + ", ".join(z.name for z in PowercapRapl().zones) + ")"
    except RaplUnavailable as exc:
        return f"no: {exc}"


def _nvml() -> str:
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            return f"readable ({pynvml.nvmlDeviceGetCount()} GPU(s))"
        finally:
            pynvml.nvmlShutdown()
    except Exception as exc:  # no library, no driver, no GPU: each its own NVMLError
        return f"no: {type(exc).__name__}"


def g5k_facts(hostname: str, oar_job_id: str | None) -> dict[str, str]:
    """Grid'5000 cluster, site, node and OAR job of a node named like
    `gros-41.nancy.grid5000.fr` (or `gros-41` inside an OAR job); {} elsewhere."""
    match = G5K_HOST.match(hostname)
    if match is None or (match["site"] is None and not oar_job_id):
        return {}
    facts = {"g5k_cluster": match["cluster"], "g5k_node": match["node"]}
    if match["site"]:
        facts["g5k_site"] = match["site"]
    if oar_job_id:
        facts["oar_job_id"] = oar_job_id
    return facts


def differences(old: dict[str, str], new: dict[str, str]) -> list[str]:
    """One line per fact known on both sides that differs, e.g. "torch 2.14.1 → 2.15.0";
    the command line is not compared."""
    return [f"{LABELS.get(k, k)} {old[k]} → {new[k]}" for k in old
            if k in new and k not in NOT_COMPARED and old[k] != new[k]]


def set_by_trial(leverages: dict[str, object]) -> tuple[str, ...]:
    """The facts a trial sets itself from its configuration: the same in a re-run of it,
    wherever it runs, so not to be compared before it runs."""
    speed = leverages.get("cpu_governor") is not None or leverages.get("cpu_freq_khz") is not None
    return ("torch_threads", *(("cpufreq_governor",) if speed else ()))


def summary(software: dict[str, str], machines: list[dict[str, str]]) -> list[str]:
    """A few lines on where a sweep's trials ran (machines, CPU models, versions), and a
    warning when they ran on different hardware or settings."""
    lines = []
    if software:
        versions = ", ".join(f"{LABELS.get(k, k)} {software.get(k, '?')}"
                             for k in ("python", *PACKAGES))
        dirty = ", dirty" if software.get("dirty") == "true" else ""
        lines.append(f"software: sweeper {software.get('sweeper', '?')} (commit "
                     f"{software.get('commit', '?')[:12]}{dirty}); {versions}")
    machines = [facts for facts in machines if facts]
    kinds: dict[tuple, list[dict[str, str]]] = {}  # trials by hardware and settings
    for facts in machines:
        kinds.setdefault(tuple(facts.get(k, "?") for k in HARDWARE), []).append(facts)
    for kind, trials in kinds.items():
        hardware = dict(zip(HARDWARE, kind, strict=True))
        hosts = sorted({facts.get("host", "?") for facts in trials})
        shown = ", ".join(hosts[:4]) + (f" and {len(hosts) - 4} more" if len(hosts) > 4 else "")
        lines.append(f"machine: {len(trials)} trial(s) on {shown}: {hardware['cpu_model']}, "
                     f"{hardware['cpus_logical']} logical / {hardware['cpus_physical']} "
                     f"physical cores, {hardware['memory_gib']} GiB, governor "
                     f"{hardware['cpufreq_governor']}, torch {hardware['torch_build']}")
    if len(kinds) > 1:
        first, *others = [dict(zip(HARDWARE, kind, strict=True)) for kind in kinds]
        changed = sorted({line for other in others for line in differences(first, other)})
        lines.append("warning: the trials of this sweep ran on different hardware or settings "
                     f"({'; '.join(changed)}): their energies are not comparable")
    if not machines:
        lines.append("machine: none recorded (trials logged before sweeper recorded them)")
    return lines
