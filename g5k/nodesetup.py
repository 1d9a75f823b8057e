"""Node settings that need root, through Grid'5000's `sudo-g5k`, run on every node at `up`
(before Ray starts): RAPL counters made readable (the `rapl` node meter), the cpufreq files
made writable (the per-trial `cpu_governor` / `cpu_freq_khz` leverages), and a governor set
for the whole job. Globs are expanded by the user's shell on the node, not as root.

Grid'5000 reinstalls a node after a job in which `sudo-g5k` was used; nothing to undo.
"""

from __future__ import annotations

from g5k import G5kError
from g5k.config import ClusterSpec
from g5k.ssh import Remote

RAPL = "/sys/class/powercap/intel-rapl:*/energy_uj /sys/class/powercap/intel-rapl:*:*/energy_uj"
CPUFREQ = "/sys/devices/system/cpu/cpu[0-9]*/cpufreq"


def commands(spec: ClusterSpec) -> list[str]:
    """The commands the cluster file asks for, in the order they run."""
    out = []
    if spec.rapl_readable:
        out.append(f"sudo-g5k chmod a+r {RAPL}")
    if spec.cpufreq_writable:
        files = " ".join(f"{CPUFREQ}/scaling_{name}"
                         for name in ("governor", "setspeed", "max_freq"))
        out.append(f"sudo-g5k chmod a+w {files}")
    if spec.cpu_governor:
        out.append(f"echo {spec.cpu_governor} | sudo-g5k tee {CPUFREQ}/scaling_governor "
                   "> /dev/null")
    return out


def apply(spec: ClusterSpec, remote: Remote) -> None:
    for command in commands(spec):
        code, _, err = remote.execute(command)
        if code != 0:
            lines = err.strip().splitlines()
            raise G5kError(f"node setup on {remote.host}: `{command.split(' /')[0]}` failed: "
                           f"{lines[-1] if lines else f'exit code {code}'} (sudo-g5k needs a "
                           "job on whole nodes, not of type deploy; or drop the option from "
                           "the cluster file)")
