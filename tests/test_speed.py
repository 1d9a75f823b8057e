"""Speed settings checked against what the node reads back, and restored after the trial.

The node is a cpufreq-shaped tree written here (`SWEEPER_CPUFREQ_ROOT`; the real one needs
root on real hardware). Its scaling_cur_freq is a plain file the test presets, as the driver
fills it in the kernel; and its starting settings differ from every setting asked, so a
restore that does nothing fails."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sweeper import speed
from sweeper.config import Scenario, TrialConfig, resolve_leverages
from sweeper.speed import SpeedSettingRefused
from sweeper.trial import run_trial

TINY = Scenario(corpus_speakers=8, corpus_takes=2, num_clients=2, rounds=1)
CPUS = ("cpu0", "cpu1", "cpu2", "cpu3")
# cpu3 starts in userspace at 1.8 GHz, the others under schedutil
BEFORE = {"cpu0": "schedutil", "cpu1": "schedutil", "cpu2": "schedutil", "cpu3": "userspace"}


def _node(root: Path, cur_freq_khz: int = 1_200_000) -> Path:
    for cpu in CPUS:
        folder = root / cpu / "cpufreq"
        folder.mkdir(parents=True)
        (folder / "scaling_available_governors").write_text(
            "performance powersave userspace schedutil\n")
        (folder / "scaling_governor").write_text(f"{BEFORE[cpu]}\n")
        setspeed = "1800000" if BEFORE[cpu] == "userspace" else "<unsupported>"
        (folder / "scaling_setspeed").write_text(f"{setspeed}\n")
        (folder / "scaling_cur_freq").write_text(f"{cur_freq_khz}\n")
    return root


def _read(root: Path, cpu: str, name: str) -> str:
    return (root / cpu / "cpufreq" / name).read_text().strip()


def _restored(root: Path) -> bool:
    return (all(_read(root, cpu, "scaling_governor") == BEFORE[cpu] for cpu in CPUS)
            and _read(root, "cpu3", "scaling_setspeed") == "1800000")


@pytest.fixture
def node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SWEEPER_CPUFREQ_ROOT", str(tmp_path))
    return _node(tmp_path)


def test_a_frequency_the_kernel_clamped_fails_naming_both(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    root = _node(tmp_path, cur_freq_khz=2_100_000)
    monkeypatch.setenv("SWEEPER_CPUFREQ_ROOT", str(root))
    with pytest.raises(SpeedSettingRefused) as refused, speed.applied({"cpu_freq_khz": 1_200_000}):
        pytest.fail("the trial ran at another frequency than asked")
    assert str(refused.value) == ("cpu_freq_khz=1200000: cpu0 runs at 2100000 kHz "
                                  "(scaling_cur_freq) after writing scaling_setspeed "
                                  "(tolerance 2%)")
    assert _restored(root)


def test_a_frequency_within_tolerance_is_applied_and_recorded(node: Path) -> None:
    for cpu in CPUS:
        (node / cpu / "cpufreq" / "scaling_cur_freq").write_text("1190000\n")  # -0.8%
    with speed.applied({"cpu_freq_khz": 1_200_000}) as settings:
        assert {_read(node, cpu, "scaling_governor") for cpu in CPUS} == {"userspace"}
        assert {_read(node, cpu, "scaling_setspeed") for cpu in CPUS} == {"1200000"}
    assert settings.in_force == {"cpu_governor": ["userspace"], "cpu_cur_freq_khz": [1190000]}
    assert settings.restore_problems == []
    assert _restored(node)


def test_a_governor_the_kernel_drops_fails_the_trial_naming_both(node: Path) -> None:
    """cpu2 accepts the write and keeps nothing (its scaling_governor is /dev/null, as a
    kernel file that ignores what is written): the trial fails, before any training, naming
    the CPU, the governor asked and the one read back; the other CPUs get theirs back."""
    dropped = node / "cpu2" / "cpufreq" / "scaling_governor"
    dropped.unlink()
    dropped.symlink_to(os.devnull)
    leverages = resolve_leverages({"cpu_governor": "powersave"}, TINY)
    result = run_trial(TrialConfig(TINY, leverages, 0))
    assert result.status == "failed"
    assert result.reason == ("cpu_governor=powersave: cpu2 reads back governor '' "
                             "(scaling_governor) after writing 'powersave'")
    assert all(_read(node, cpu, "scaling_governor") == BEFORE[cpu] for cpu in CPUS
               if cpu != "cpu2")
    assert _read(node, "cpu3", "scaling_setspeed") == "1800000"


def test_a_frequency_the_kernel_drops_fails_naming_both(node: Path) -> None:
    """cpu2's scaling_setspeed keeps nothing of what is written (/dev/null): refused, naming
    the CPU, the frequency read back and the one asked; every CPU gets its settings back."""
    dropped = node / "cpu2" / "cpufreq" / "scaling_setspeed"
    dropped.unlink()
    dropped.symlink_to(os.devnull)
    with pytest.raises(SpeedSettingRefused, match=r"^cpu_freq_khz=1200000: cpu2 reads back "
                       r"'' kHz \(scaling_setspeed\) after writing 1200000; "), \
            speed.applied({"cpu_freq_khz": 1_200_000}):
        pytest.fail("the trial ran at another frequency than asked")
    assert all(_read(node, cpu, "scaling_governor") == BEFORE[cpu] for cpu in CPUS)


def test_a_governor_the_node_does_not_offer_is_refused(node: Path) -> None:
    with pytest.raises(SpeedSettingRefused, match=r"^cpu_governor=ondemand: cpu0 offers only "
                       r"the governors performance powersave userspace schedutil "
                       r"\(scaling_available_governors\)$"), \
            speed.applied({"cpu_governor": "ondemand"}):
        pass
    assert _restored(node)


def test_governor_is_applied_then_the_previous_one_is_back_on_every_cpu(node: Path) -> None:
    with speed.applied({"cpu_governor": "performance"}) as settings:
        assert {_read(node, cpu, "scaling_governor") for cpu in CPUS} == {"performance"}
    assert settings.in_force["cpu_governor"] == ["performance"]
    assert _restored(node)


def test_an_exception_in_the_trial_restores(node: Path) -> None:
    with pytest.raises(RuntimeError, match="trial crashed"), \
            speed.applied({"cpu_freq_khz": 1_200_000}):
        assert _read(node, "cpu0", "scaling_governor") == "userspace"
        raise RuntimeError("trial crashed")
    assert _restored(node)


def test_a_restore_that_fails_is_reported_not_raised(node: Path) -> None:
    governor = node / "cpu1" / "cpufreq" / "scaling_governor"
    with speed.applied({"cpu_governor": "performance"}) as settings:
        governor.unlink()
        governor.mkdir()  # unwritable, even by root
    assert settings.restore_problems == [f"{governor}: cannot write schedutil back: "
                                         "Is a directory"]
    assert _read(node, "cpu0", "scaling_governor") == "schedutil"  # the rest is restored
    assert _read(node, "cpu3", "scaling_setspeed") == "1800000"


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if parent == pid:
            found.append(int(stat.parent.name))
    return found


def test_a_killed_trial_process_has_the_settings_restored(node: Path) -> None:
    """A real trial process SIGKILLed inside the context, with its process group and its
    direct children (what Ray does to a worker it force-exits): no mock."""
    trial = ("import time\nfrom sweeper import speed\n"
             "with speed.applied({'cpu_freq_khz': 1200000}) as settings:\n"
             "    print('inside', settings.in_force, flush=True)\n"
             "    time.sleep(120)\n")
    with (node / "trial.log").open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-c", trial], stdout=subprocess.PIPE,
                                stderr=log, start_new_session=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        assert line.startswith("inside {'cpu_governor': ['userspace']"), (
            line + (node / "trial.log").read_text())
        assert {_read(node, cpu, "scaling_setspeed") for cpu in CPUS} == {"1200000"}
        for child in _children(proc.pid):
            os.kill(child, signal.SIGKILL)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 10
    while not _restored(node) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _restored(node), {cpu: _read(node, cpu, "scaling_governor") for cpu in CPUS}


def test_no_cpufreq_or_unwritable_files_refuse(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWEEPER_CPUFREQ_ROOT", str(tmp_path))
    with pytest.raises(SpeedSettingRefused, match=r"^cpu_freq_khz=1200000.*no .*scaling_"
                       r"governor.*sudo-g5k"), speed.applied({"cpu_freq_khz": 1_200_000}):
        pass
    _node(tmp_path)
    setspeed = tmp_path / "cpu2" / "cpufreq" / "scaling_setspeed"
    setspeed.unlink()
    setspeed.mkdir()
    with pytest.raises(SpeedSettingRefused, match=r"^cpu_freq_khz=1200000: cannot write "
                       r".*cpu2/cpufreq/scaling_setspeed: Is a directory.*sudo-g5k"), \
            speed.applied({"cpu_freq_khz": 1_200_000}):
        pass
    assert all(_read(tmp_path, cpu, "scaling_governor") == BEFORE[cpu] for cpu in CPUS)


FAKE_NVML = '''"""NVML stand-in: the limits live in a JSON file, so that the restorer process sees
them; a limit above the board's maximum is clamped, as a driver may do."""
import json, os

class NVMLError(Exception):
    pass

def _state():
    with open(os.environ["FAKE_NVML_STATE"]) as f:
        return json.load(f)

def nvmlInit(): pass
def nvmlShutdown(): pass
def nvmlDeviceGetCount(): return len(_state()["limits_mw"])
def nvmlDeviceGetHandleByIndex(index): return index
def nvmlDeviceGetPowerManagementLimit(handle): return _state()["limits_mw"][handle]

def nvmlDeviceSetPowerManagementLimit(handle, milliwatts):
    state = _state()
    state["limits_mw"][handle] = min(milliwatts, state["max_mw"])
    with open(os.environ["FAKE_NVML_STATE"], "w") as f:
        json.dump(state, f)
'''


@pytest.fixture
def gpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Two GPUs at 200 W that take at most 250 W, in this process and in the restorer's."""
    (tmp_path / "fake").mkdir()
    (tmp_path / "fake" / "pynvml.py").write_text(FAKE_NVML)
    state = tmp_path / "nvml.json"
    state.write_text(json.dumps({"limits_mw": [200_000, 200_000], "max_mw": 250_000}))
    monkeypatch.setenv("FAKE_NVML_STATE", str(state))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(tmp_path / "fake"), *filter(None, [os.environ.get("PYTHONPATH")])]))
    spec = importlib.util.spec_from_file_location("pynvml", tmp_path / "fake" / "pynvml.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setitem(sys.modules, "pynvml", module)
    return state


def test_gpu_limit_is_checked_and_restored(gpus: Path) -> None:
    with speed.applied({"gpu_power_limit_w": 240}) as settings:
        assert json.loads(gpus.read_text())["limits_mw"] == [240_000, 240_000]
    assert settings.in_force == {"gpu_power_limit_w": [240.0, 240.0]}
    assert json.loads(gpus.read_text())["limits_mw"] == [200_000, 200_000]
    with pytest.raises(SpeedSettingRefused, match=r"^gpu_power_limit_w=300: gpu0 reads back "
                       r"250 W \(nvmlDeviceGetPowerManagementLimit\) after setting it$"), \
            speed.applied({"gpu_power_limit_w": 300}):
        pass
    assert json.loads(gpus.read_text())["limits_mw"] == [200_000, 200_000]
