#!/bin/sh
# Install stepwise from this bundle with no network (make bundle builds the bundle).
#
#   ./install.sh [--prefix DIR] [--python PYTHON] [--systemd]
#
# Creates a venv in PREFIX (default /opt/stepwise) from the bundled wheels only, their
# sha256 checked (pip --no-index --require-hashes), and copies the artifacts to
# PREFIX/artifacts (manifest last). With --systemd (as root) it also creates the system
# user "stepwise" and installs the systemd unit, the udev rule and the logrotate file:
# plugging the board in then starts the daemon.
set -eu

usage() {
    echo "usage: $0 [--prefix DIR] [--python PYTHON] [--systemd]" >&2
    exit 2
}

here=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
prefix=/opt/stepwise
python=python3
systemd=no
while [ $# -gt 0 ]; do
    case $1 in
        --prefix) [ $# -ge 2 ] || usage; prefix=$2; shift 2 ;;
        --python) [ $# -ge 2 ] || usage; python=$2; shift 2 ;;
        --systemd) systemd=yes; shift ;;
        *) usage ;;
    esac
done

if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
    echo "install.sh: stepwise needs Python 3.10 or newer; '$python' is not (use --python)" >&2
    exit 1
fi
echo "installing into $prefix/venv with $("$python" -V 2>&1)"
if ! "$python" -m venv "$prefix/venv"; then
    echo "install.sh: '$python' cannot create a venv (Debian: apt install python3-venv)" >&2
    exit 1
fi
PIP_CONFIG_FILE=/dev/null "$prefix/venv/bin/pip" install --quiet --disable-pip-version-check \
    --no-index --find-links "$here/wheels" --only-binary=:all: --require-hashes \
    -r "$here/requirements.txt"

mkdir -p "$prefix/artifacts"
for f in "$here"/artifacts/*; do
    [ "$(basename "$f")" = manifest.json ] || cp "$f" "$prefix/artifacts/"
done
cp "$here/artifacts/manifest.json" "$prefix/artifacts/manifest.json.new"
mv "$prefix/artifacts/manifest.json.new" "$prefix/artifacts/manifest.json"
echo "artifacts in $prefix/artifacts; command: $prefix/venv/bin/stepwise"

[ "$systemd" = yes ] || exit 0
if [ "$(id -u)" != 0 ]; then
    echo "install.sh: --systemd needs root" >&2
    exit 1
fi
id stepwise > /dev/null 2>&1 || useradd --system --user-group --groups dialout \
    --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin stepwise
sed "s#/opt/stepwise#$prefix#g" "$here/deploy/stepwise.service" > /etc/systemd/system/stepwise.service
cp "$here/deploy/99-stepwise.rules" /etc/udev/rules.d/99-stepwise.rules
cp "$here/deploy/stepwise.logrotate" /etc/logrotate.d/stepwise
systemctl daemon-reload
udevadm control --reload-rules
udevadm trigger --subsystem-match=tty --action=add
echo "systemd: stepwise.service starts when the board is plugged in (/dev/stepwise0)"
