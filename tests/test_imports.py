"""Every module of the package imports on its own, whatever was imported before.

An import cycle breaks only the module that starts it, so each module is
imported first in turn. Between imports the package's modules are dropped
from ``sys.modules``. Third-party modules stay loaded, which keeps the
test fast.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import realcast_box

CHECK = """
import importlib, sys
failures = []
for name in sys.argv[1:]:
    for loaded in [m for m in sys.modules if m.split(".")[0] == "realcast_box"]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception as exc:
        failures.append(f"{name}: {type(exc).__name__}: {exc}")
print("\\n".join(failures))
sys.exit(1 if failures else 0)
"""


def package_modules() -> list[str]:
    root = Path(realcast_box.__file__).parent
    names = []
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__main__":
            continue
        if parts[-1] == "__init__":
            parts.pop()
        names.append(".".join(parts))
    return names


def test_each_module_imports_first() -> None:
    names = package_modules()
    assert "realcast_box.hls.routes" in names
    result = subprocess.run(
        [sys.executable, "-c", CHECK, *names],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
