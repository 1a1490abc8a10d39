"""The other CPythons CI builds and tests the wheel on: the oldest and the newest installed that pyfastq
claims (requires-python, and a wheel in [tool.cibuildwheel] build), other than the one running this.

    python .ci/pythons.py   # the chosen interpreters' paths on stdout, what was found and why on stderr

Looks in pyenv's versions (where pyenv is installed) and for python3.N on PATH (pyenv's shims left out:
they run whichever version pyenv has selected, not necessarily the one their name says).
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path


def claimed(pyproject: Path) -> set[tuple[int, int]]:
    """The CPython minor versions with a wheel, as cibuildwheel builds them, that requires-python allows."""
    text = pyproject.read_text()  # read with re, not tomllib: that is new in 3.11, and 3.10 is claimed
    low = re.search(r'^requires-python = ">=3\.(\d+)"$', text, re.M)
    builds = re.search(r'^build = "(.*)"$', text, re.M)
    if low is None or builds is None:
        sys.exit('pyproject.toml: expected requires-python = ">=3.N" and [tool.cibuildwheel] build = "cp3N-* ..."')
    minors = [int(m) for m in re.findall(r"\bcp3(\d+)-", builds[1])]
    return {(3, m) for m in minors if m >= int(low[1])}


def candidates() -> list[Path]:
    found = []
    pyenv = shutil.which("pyenv")
    if pyenv:
        root = Path(subprocess.run([pyenv, "root"], capture_output=True, text=True, check=True).stdout.strip())
    else:  # pyenv installed but not on this PATH
        root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    found += sorted((root / "versions").glob("*/bin/python3"))
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        if folder and "/shims" not in folder:
            found += sorted(Path(folder).glob("python3.[0-9]*[0-9]"))
    return found


def version(python: Path) -> tuple[str, str] | None:
    """(major.minor.micro, implementation) of an interpreter, or None when it does not run."""
    probe = "import sys; print('%d.%d.%d' % sys.version_info[:3], sys.implementation.name)"
    try:
        out = subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    full, impl = out.split()
    return full, impl


def main() -> None:
    wanted = claimed(Path(__file__).resolve().parent.parent / "pyproject.toml")
    current = sys.version_info[:2]
    names = ", ".join(f"{a}.{b}" for a, b in sorted(wanted))
    used = f"{sys.executable} ({sys.version.split()[0]})"
    print(f"CPythons pyfastq claims: {names}; already used: {used}", file=sys.stderr)
    by_minor: dict[tuple[int, int], Path] = {}
    seen = set()
    for python in candidates():
        real = python.resolve()
        if real in seen:
            continue
        seen.add(real)
        info = version(python)
        if info is None:
            print(f"  skipped {python}: does not run", file=sys.stderr)
            continue
        full, impl = info
        minor = tuple(int(x) for x in full.split(".")[:2])
        why = None
        if impl != "cpython":
            why = f"{impl}, not CPython"
        elif minor not in wanted:
            why = "not a version pyfastq claims"
        elif minor == current:
            why = "the version already used"
        elif minor in by_minor:
            why = f"Python {full[: full.rindex('.')]} already found at {by_minor[minor]}"
        if why:
            print(f"  found {python} ({full}): skipped, {why}", file=sys.stderr)
            continue
        print(f"  found {python} ({full})", file=sys.stderr)
        by_minor[minor] = python
    chosen = sorted(by_minor)
    chosen = [chosen[0], chosen[-1]] if len(chosen) > 1 else chosen
    for minor, python in sorted(by_minor.items()):
        if minor not in chosen:
            print(f"  skipped {python}: neither the oldest nor the newest of the others", file=sys.stderr)
    for minor in sorted(wanted - set(by_minor) - {current}):
        print(f"  Python {minor[0]}.{minor[1]}: not installed here, not tested", file=sys.stderr)
    for minor in chosen:
        print(f"  using {by_minor[minor]} (Python {minor[0]}.{minor[1]})", file=sys.stderr)
        print(by_minor[minor])


if __name__ == "__main__":
    main()
