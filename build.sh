#!/usr/bin/env bash
# Build the single-binary box with PyInstaller, or test the built binary.
#
#   ./build.sh         build dist/realcast-box
#   ./build.sh test    run packaging/smoke_test.py against dist/realcast-box
#
# The build installs the project, its runtime dependencies and the `build`
# extra (PyInstaller) into its own virtual environment, build/venv, made
# with $PYTHON (python3 unless set). So the binary bundles exactly the
# packages that pyproject.toml lists, not those of the calling environment.
# REALCAST_BUILD_MODE=onedir builds a folder, dist/realcast-box/, with the
# executable dist/realcast-box/realcast-box, in place of the single file.
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3}
VENV=build/venv
MODE=${REALCAST_BUILD_MODE:-onefile}

case "$MODE" in
    onefile) BINARY=dist/realcast-box ;;
    onedir) BINARY=dist/realcast-box/realcast-box ;;
    *)
        echo "invalid REALCAST_BUILD_MODE '$MODE': expected onefile or onedir" >&2
        exit 2
        ;;
esac

make_venv() {
    if [ ! -x "$VENV/bin/python" ]; then
        "$PYTHON" -m venv "$VENV"
    fi
    # Reinstall only when pyproject.toml changed since the last install.
    if [ ! -f "$VENV/.installed" ] || [ pyproject.toml -nt "$VENV/.installed" ]; then
        "$VENV/bin/python" -m pip install -q --upgrade pip
        "$VENV/bin/python" -m pip install -q '.[build]'
        touch "$VENV/.installed"
    fi
}

build() {
    make_venv
    rm -rf dist/realcast-box dist/realcast-box-licenses
    REALCAST_BUILD_MODE="$MODE" "$VENV/bin/python" -m PyInstaller \
        --noconfirm --clean --log-level WARN \
        --distpath dist --workpath build/pyinstaller \
        packaging/realcast-box.spec
    # The licence texts also ship next to the binary, where a redistributor
    # finds them without unpacking anything.
    cp -r build/licenses dist/realcast-box-licenses
    ls -l "$BINARY"
}

run_tests() {
    if [ ! -x "$BINARY" ]; then
        echo "no binary at $BINARY: run ./build.sh first" >&2
        exit 1
    fi
    make_venv
    "$VENV/bin/python" packaging/smoke_test.py "$BINARY"
}

case "${1:-build}" in
    build) build ;;
    test) run_tests ;;
    *)
        echo "usage: ./build.sh [build|test]" >&2
        exit 2
        ;;
esac
