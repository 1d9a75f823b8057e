"""The nodes' Python environment, independent of the nodes' own Python.

Grid'5000's standard environments move to Debian 13 (Python 3.13) while this project needs
Python 3.11, and installing torch and Ray on a frontend is advised against. So `cluster up`
builds `python_env` on the job's first node with uv, which downloads its own pinned
interpreter (`env_python`), then installs `project_dir` into it, every package constrained
to the driver's version (`driver_pins`). The home is on NFS: the env, uv's interpreters and
its cache serve every node of the site, and the frontend sees them too, which is where
`cluster check` reads the versions.

The driver (`sweeper` where it runs) and the nodes must agree on Python's minor version and
on ray (Ray refuses a client of another version), torch and flwr (objects travel pickled).
"""

from __future__ import annotations

import json
import platform
import re
import shlex
from importlib import metadata

from g5k import G5kError
from g5k.config import ClusterSpec, shell_path
from g5k.ssh import Remote

PACKAGES = ("ray", "torch", "flwr")
Versions = dict[str, str | None]  # "python" and each of PACKAGES: its version, or None

# One line (dry-run shows one line per command); versions without importing the packages.
PROBE = ('import json, platform, importlib.metadata as m; print(json.dumps({"python": '
         'platform.python_version(), **{n: next((d.version for d in m.distributions(name=n)), '
         f'None) for n in {json.dumps(PACKAGES)}}}}}))')


def python_mismatch(spec: ClusterSpec) -> str | None:
    """`env_python` against this driver's Python, as "env_python: why": Ray joins a driver
    to a cluster only when their Python minor versions are the same."""
    here = ".".join(platform.python_version_tuple()[:2])
    wanted = ".".join(spec.env_python.split(".")[:2])
    if wanted == here:
        return None
    return (f"env_python: {spec.env_python} is not this driver's Python {here}: Ray needs the "
            f"same Python minor version on the driver and the nodes; set env_python: "
            f"\"{here}\" (or run the driver with Python {wanted})")


def local_versions() -> Versions:
    """The driver's: this process's Python and packages."""
    found: Versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def driver_pins() -> str:
    """This driver's packages as uv constraints, one `name==version` a line: those from an
    index (not editable or local ones, not sweeper itself), without local version labels
    (`torch==2.14.1` for 2.14.1+cu130: PEP 440's == ignores the node's label)."""
    pins: dict[str, str] = {}
    for dist in metadata.distributions():
        name, version = dist.metadata["Name"], dist.version
        if not name or not version or dist.read_text("direct_url.json") is not None:
            continue
        key = re.sub(r"[-_.]+", "-", name).lower()  # PEP 503's normalized name
        if key != "sweeper":
            pins.setdefault(key, f"{key}=={version.split('+')[0]}")
    return "".join(f"{line}\n" for _, line in sorted(pins.items()))


def pins_path(spec: ClusterSpec) -> str:
    """Where the driver's pins are written beside the env (the NFS home)."""
    return f"{spec.python_env}-pins.txt"


def build_command(spec: ClusterSpec, pins: str) -> str:
    """Build the env unless it has Ray: uv (on PATH, in ~/.local/bin, else `pip install
    --user uv` with the node's Python), `uv venv` with the pinned Python unless the env has
    a Python already, then `uv pip install -e project_dir` constrained to the driver's
    versions of every package (`pins`, from `driver_pins`): the nodes compute with the very
    stack the driver has."""
    env, project = shell_path(spec.python_env), shell_path(spec.project_dir)
    constraints = shell_path(pins_path(spec))
    pip_uv = "python3 -m pip install --user --quiet"
    no_project = shlex.quote(f"no {spec.project_dir}/pyproject.toml: git clone this project "
                             f"to {spec.project_dir}")
    return (f"test -x {env}/bin/ray && exit 0; "
            f"test -f {project}/pyproject.toml || {{ echo {no_project} >&2; exit 1; }}; "
            'uv=$(command -v uv || echo "$HOME"/.local/bin/uv); '
            # Debian 12+ marks its Python externally managed; uv alone goes to ~/.local
            f'[ -x "$uv" ] || {pip_uv} --break-system-packages uv >&2 || {pip_uv} uv >&2 || '
            "{ echo 'no uv, and pip could not install it: pip install --user uv' >&2; "
            "exit 1; }; "
            f'test -x {env}/bin/python || "$uv" venv --python {shlex.quote(spec.env_python)} '
            f"{env} >&2 || exit 1; "
            f"printf %s {shlex.quote(pins)} > {constraints} || exit 1; "
            f'"$uv" pip install --python {env}/bin/python -c {constraints} -e {project} >&2')


def probe_command(spec: ClusterSpec) -> str:
    """Print the env's versions as JSON (`null` when it has no Python), then `project` when
    project_dir holds a pyproject.toml."""
    env, project = shell_path(spec.python_env), shell_path(spec.project_dir)
    return (f"if [ -x {env}/bin/python ]; then {env}/bin/python -c {shlex.quote(PROBE)} "
            f"|| echo broken; else echo null; fi; test -f {project}/pyproject.toml && "
            "echo project; true")


def read_versions(remote: Remote, spec: ClusterSpec) -> tuple[Versions | None, bool]:
    """(the env's versions, or None when it has no Python; whether project_dir is there)."""
    code, out, err = remote.execute(probe_command(spec))
    lines = out.strip().splitlines()
    if code != 0 or not lines:
        reason = (err.strip().splitlines() or [f"exit code {code}"])[-1]
        raise G5kError(f"cannot read the versions in {spec.python_env} on {remote.host}: "
                       f"{reason}")
    if lines[0] == "broken":
        reason = (err.strip().splitlines() or ["no message"])[-1]
        raise G5kError(f"{spec.python_env}/bin/python does not run on {remote.host}: {reason}"
                       f" (remove {spec.python_env} for `sweeper cluster up` to build it again)")
    try:
        versions = json.loads(lines[0])
    except ValueError:
        raise G5kError(f"{spec.python_env}/bin/python on {remote.host} printed "
                       f"{lines[0][:80]!r}, not its versions") from None
    return versions, "project" in lines[1:]


def mismatches(here: Versions, there: Versions) -> list[str]:
    """What differs between the driver (`here`) and the env (`there`): "ray 2.54.0 (here
    2.55.1)". Python by minor version; torch without its local build label (+cpu, +cu128)."""
    def key(name: str, version: str | None) -> str | None:
        if version is None:
            return None
        if name == "python":
            return ".".join(version.split(".")[:2])
        return version.split("+")[0] if name == "torch" else version

    found = []
    for name in ("python", *PACKAGES):
        if here.get(name) is None:
            continue  # the driver does without it: nothing to agree on
        if key(name, there.get(name)) != key(name, here[name]):
            found.append(f"{'Python' if name == 'python' else name} "
                         f"{there.get(name) or 'missing'} (here {here[name]})")
    return found


def describe(versions: Versions) -> str:
    """"Python 3.11.7, ray 2.55.1, torch 2.14.1, flwr 1.41.0"."""
    return ", ".join([f"Python {versions.get('python')}",
                      *(f"{n} {versions.get(n) or 'missing'}" for n in PACKAGES)])


def mismatch_fix(spec: ClusterSpec) -> str:
    return (f"the driver and the nodes must agree: remove {spec.python_env} (on the "
            f"frontend) for `sweeper cluster up` to build it again from {spec.project_dir} "
            "at this checkout's commit, or install the nodes' versions here")


def ensure(spec: ClusterSpec, first: Remote) -> None:
    """Build the env on the job's first node when it has no Ray yet (a few minutes the first
    time: an interpreter, torch and Ray into the NFS home)."""
    if first.dry_run:
        # shown apart from the node's own commands: it runs only when the env lacks Ray
        pins = driver_pins()
        first.say(f"[dry-run] on {first.host}, unless {spec.python_env}/bin/ray exists: "
                  + build_command(spec, f"<this driver's {pins.count(chr(10))} pins>"))
        return
    code, _, err = first.execute(build_command(spec, driver_pins()), timeout_s=3600)
    if code != 0:
        lines = err.strip().splitlines()
        raise G5kError(f"building {spec.python_env} on {first.host} failed: "
                       f"{lines[-1] if lines else f'exit code {code}'} (uv, Python "
                       f"{spec.env_python}, {spec.project_dir}); fix that and run `sweeper "
                       "cluster up` again")


def verify(spec: ClusterSpec, remote: Remote) -> Versions:
    """The env's versions, read on `remote`; G5kError when they are not the driver's."""
    if remote.dry_run:
        remote.execute(probe_command(spec))
        return {}
    versions, _ = read_versions(remote, spec)
    if versions is None:
        raise G5kError(f"{spec.python_env} on {remote.host} has no bin/python")
    if problems := mismatches(local_versions(), versions):
        raise G5kError(f"{spec.python_env} on {remote.host} has {', '.join(problems)}: "
                       + mismatch_fix(spec))
    return versions
