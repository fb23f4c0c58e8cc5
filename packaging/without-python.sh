#!/bin/sh
# Run a command where no Python can be found. packaging/smoke_test.py uses it
# to show that the built binary needs none.
#
#   unshare --mount packaging/without-python.sh PATH... -- COMMAND ARGS...
#
# Each PATH (a Python installation's folder or interpreter) is covered, in
# this private mount namespace only: a folder by an empty tmpfs, a file by
# /dev/null. Needs root (or CAP_SYS_ADMIN) for the mounts.
set -eu
while [ "$#" -gt 0 ] && [ "$1" != "--" ]; do
    if [ -d "$1" ]; then
        mount -t tmpfs -o ro,size=4k none "$1"
    elif [ -e "$1" ]; then
        mount --bind /dev/null "$1"
    fi
    shift
done
if [ "$#" -eq 0 ]; then
    echo "usage: without-python.sh PATH... -- COMMAND ARGS..." >&2
    exit 2
fi
shift
exec "$@"
