"""Collect the licence texts that the built binary must carry.

Run by packaging/realcast-box.spec inside build.sh's virtual environment,
so importlib.metadata sees exactly the packages that PyInstaller bundles.
Writes into one folder:

- README.md: the terms for redistributors (packaging/BINARY-LICENSES.md).
- realcast-box/LICENSE: the box's own licence, Apache-2.0.
- python/: the CPython licence of the interpreter that is bundled.
- packages/<name>/: the licence files of every runtime dependency, read from
  its installed metadata, PyAV's among them.
- ffmpeg/: the SBOM that PyAV's wheel ships for its bundled libraries, and
  the configure line and versions of the bundled FFmpeg.
- common/: GPL-2, GPL-3, LGPL-2.1 and LGPL-3 from Debian's
  /usr/share/common-licenses, because PyAV's wheel carries no licence text
  for FFmpeg, x264 or x265.
- system/<package>/copyright: for each shared library that PyInstaller
  copies from the build machine, its Debian package's copyright file (the
  spec adds these after its analysis, through copy_system_licenses).

Usage: python packaging/licenses.py DEST
"""

from __future__ import annotations

import importlib.metadata
import json
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
COMMON_LICENSES = Path("/usr/share/common-licenses")
COMMON_NAMES = ("GPL-2", "GPL-3", "LGPL-2.1", "LGPL-3")
LICENSE_FILE = re.compile(r"(LICEN[CS]E|COPYING|NOTICE|AUTHORS)", re.IGNORECASE)


def runtime_distributions(root: str = "realcast-box") -> list[str]:
    """Return the names of ``root`` and of every package it needs at runtime.

    Follows the requirements without extras, and skips those whose
    environment marker is false here, as pip does when it installs them.
    """
    seen: dict[str, str] = {}
    pending = [root]
    while pending:
        name = pending.pop()
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in seen:
            continue
        try:
            distribution = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        seen[key] = distribution.metadata["Name"]
        for line in distribution.requires or []:
            requirement = Requirement(line)
            if requirement.marker and not requirement.marker.evaluate({"extra": ""}):
                continue
            pending.append(requirement.name)
    return sorted(seen.values(), key=str.lower)


def copy_package_licenses(name: str, dest: Path) -> int:
    """Copy the licence files of installed package ``name`` into ``dest``.

    Files keep their path below the metadata's licenses/ folder, or below
    site-packages, because a package such as numpy ships several files of
    the same name for the libraries it vendors.
    """
    distribution = importlib.metadata.distribution(name)
    copied = 0
    for file in distribution.files or []:
        parts = file.parts
        if "licenses" in parts[:-1]:
            relative = Path(*parts[parts.index("licenses") + 1 :])
        elif LICENSE_FILE.search(file.name) and file.suffix not in (".py", ".pyc"):
            relative = Path(*parts)
        else:
            continue
        source = Path(file.locate())
        if file.suffix == ".pyc" or not source.is_file():
            continue
        (dest / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, dest / relative)
        copied += 1
    return copied


def debian_package(library: Path) -> str | None:
    """Return the Debian package that installed ``library``, or None."""
    candidates = [library, library.resolve()]
    if library.parts[1:2] == ("lib",):
        candidates.append(Path("/usr") / library.relative_to("/"))
    for candidate in candidates:
        try:
            result = subprocess.run(
                ["dpkg", "-S", str(candidate)],
                capture_output=True,
                text=True,
                check=False,
            )
        except FileNotFoundError:
            return None
        if result.returncode == 0:
            return result.stdout.split(":", 1)[0].strip()
    return None


def copy_system_licenses(libraries: list[Path], dest: Path) -> list[Path]:
    """Copy the Debian copyright file of each library's package into ``dest``.

    Covers the shared libraries that PyInstaller took from the build
    machine (OpenSSL, SQLite, libffi, the GCC runtime) rather than from a
    wheel. Returns the libraries whose package was not found.
    """
    unknown = []
    for library in libraries:
        package = debian_package(library)
        copyright_file = Path("/usr/share/doc") / str(package) / "copyright"
        if package is None or not copyright_file.is_file():
            unknown.append(library)
            continue
        (dest / package).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(copyright_file, dest / package / "copyright")
    return unknown


def write_ffmpeg_info(dest: Path) -> None:
    """Write PyAV's SBOM and the bundled FFmpeg's configure line into ``dest``."""
    import av._core

    dest.mkdir(parents=True, exist_ok=True)
    distribution = importlib.metadata.distribution("av")
    for file in distribution.files or []:
        if "sboms" in file.parts:
            shutil.copyfile(Path(file.locate()), dest / file.name)
    lines = [f"FFmpeg {av._core.ffmpeg_version_info}, bundled by PyAV {av.__version__}"]
    for library, meta in sorted(av._core.library_meta.items()):
        version = ".".join(str(part) for part in meta["version"])
        lines.append(f"{library} {version}: {meta['license']}")
    configuration = av._core.library_meta["libavcodec"]["configuration"]
    lines += ["", "configure arguments:", configuration]
    # The wheel's own libraries, with their versions in their file names
    # (libx264's .so number is x264's API version).
    libraries = sorted(
        Path(file.locate()).name
        for file in distribution.files or []
        if file.parts[0] == "av.libs"
    )
    lines += ["", "libraries in PyAV's wheel (av.libs/):", *libraries]
    (dest / "ffmpeg-build.txt").write_text("\n".join(lines) + "\n")
    (dest / "ffmpeg-build.json").write_text(
        json.dumps(av._core.library_meta, indent=2, default=list) + "\n"
    )


def collect(dest: Path) -> None:
    """Fill ``dest`` with every licence text the binary ships (see module doc)."""
    missing = [name for name in COMMON_NAMES if not (COMMON_LICENSES / name).is_file()]
    if missing:
        raise SystemExit(
            f"licence texts not found in {COMMON_LICENSES}: {', '.join(missing)};"
            " build on Debian or Ubuntu (package base-files), or copy them there"
        )
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    shutil.copyfile(ROOT / "packaging" / "BINARY-LICENSES.md", dest / "README.md")
    (dest / "realcast-box").mkdir()
    shutil.copyfile(ROOT / "LICENSE", dest / "realcast-box" / "LICENSE")

    python_license = Path(sysconfig.get_path("stdlib")) / "LICENSE.txt"
    if python_license.is_file():
        (dest / "python").mkdir()
        shutil.copyfile(python_license, dest / "python" / "LICENSE.txt")
    else:
        print(f"warning: no CPython licence at {python_license}", file=sys.stderr)

    for name in runtime_distributions():
        if name.lower() == "realcast-box":
            continue
        if not copy_package_licenses(name, dest / "packages" / name):
            print(f"warning: package {name} has no licence file", file=sys.stderr)

    write_ffmpeg_info(dest / "ffmpeg")
    (dest / "common").mkdir()
    for name in COMMON_NAMES:
        shutil.copyfile(COMMON_LICENSES / name, dest / "common" / name)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python packaging/licenses.py DEST")
    collect(Path(sys.argv[1]))
