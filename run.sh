#!/usr/bin/env bash
# pepi-fleet: one entry point that installs what it needs, then runs.
#   ./run.sh demo [pepi demo options]   embedded demo: mosquitto, 3 simulated nodes, controller
#   ./run.sh test [pytest options]      lint, type checks and the whole test suite
#   ./run.sh test-wheel [pytest opts]   the test suite against the built wheel, not the checkout
#   ./run.sh setup                      only install (system packages + .venv)
set -euo pipefail
cd "$(dirname "$0")"

VENV=${PEPI_VENV:-.venv}
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

usage() {
  echo "usage: ./run.sh COMMAND [options]"
  sed -n '3,6p' "$0" | sed 's/^#//'
}

need_apt() {  # install the Debian packages among "$@" that are missing
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing system packages: ${missing[*]}" >&2
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # Debian starts a system broker on port 1883 when it installs mosquitto; the demo and the
    # tests run their own, and the README's one-liners expect the demo's on 1883.
    if [[ " ${missing[*]} " == *" mosquitto "* ]] && [ -d /run/systemd/system ]; then
      $SUDO systemctl disable --now mosquitto >/dev/null 2>&1 || true
    fi
  fi
}

install_stamp() {  # what the venv was installed from: pyproject.toml and the extras asked for
  { sha256sum pyproject.toml; echo "extras=$1"; } | sha256sum | cut -d' ' -f1
}

setup() {
  local system=(mosquitto mosquitto-clients)
  local extras=""
  # colmap (~75 MB installed): the export tests run its feature extraction on an exported rig;
  # systemd and shellcheck check the deploy/ units and install script
  if [ "${1:-}" = test ]; then
    system+=(docker-compose chromium colmap systemd shellcheck cmake gcc libssl-dev libcjson-dev libsqlite3-dev)
    extras="[test]"; setup_home_assistant
  fi
  command -v python3 >/dev/null || system+=(python3)
  python3 -c 'import venv, ensurepip' 2>/dev/null || system+=(python3-venv)
  need_apt "${system[@]}"
  if [ "${1:-}" = test ]; then setup_mosquitto_21; fi
  if [ ! -x "$VENV/bin/python" ]; then python3 -m venv "$VENV"; fi
  # The install is editable: code edits need no reinstall, only pyproject.toml changes do.
  local stamp="$VENV/.pepi-install-stamp" want
  want=$(install_stamp "$extras")
  # an install with the test extras also serves the demo
  if [ -f "$stamp" ] && { [ "$(cat "$stamp")" = "$want" ] || [ "$(cat "$stamp")" = "$(install_stamp '[test]')" ]; }; then
    return
  fi
  echo "installing pepi-fleet$extras into $VENV" >&2
  "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
  "$VENV/bin/python" -m pip install -q -e ".$extras"
  echo "$want" >"$stamp"
}

# A real Home Assistant core for the discovery tests, in its own venv on Python 3.13 (HA needs
# it; the project runs on 3.11). Pinned: the newest release this machine's 3.13.0 may run.
HA_PINS=(homeassistant==2025.4.4 home-assistant-frontend==20250411.0 paho-mqtt==2.1.0)
setup_home_assistant() {
  local venv=${PEPI_HA_VENV:-$HOME/.cache/pepi-fleet/ha-venv} py
  local want="${HA_PINS[*]}"
  if [ -f "$venv/.pepi-pins" ] && [ "$(cat "$venv/.pepi-pins")" = "$want" ]; then return; fi
  py=$(ls "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.13*/bin/python3.13 2>/dev/null | tail -1 || true)
  if [ -z "$py" ] && /usr/bin/env python3.13 -c '' 2>/dev/null; then py=python3.13; fi
  if [ -z "$py" ]; then
    echo "no Python 3.13 here: the Home Assistant tests will be skipped" >&2
    return
  fi
  echo "installing Home Assistant ${HA_PINS[0]#*==} into $venv (once; a few minutes)" >&2
  rm -rf "$venv"
  "$py" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip >/dev/null
  "$venv/bin/python" -m pip install -q "${HA_PINS[@]}"
  echo "$want" >"$venv/.pepi-pins"
}

# mosquitto 2.1 beside Debian's 2.0, for the production broker tests (the shipped drop-in must
# start on both): built once from Debian's own source package (sid), checked against its hash.
M21_VERSION=2.1.2
M21_SHA256=a8e37cc4c1d4141e56c5a8729c5fa36b1f0b1ca95378a12131d68f0509de122a
setup_mosquitto_21() {
  local prefix=${PEPI_MOSQUITTO_21:-$HOME/.cache/pepi-fleet/mosquitto-$M21_VERSION} work tarball
  if [ -x "$prefix/sbin/mosquitto" ]; then return; fi
  echo "building mosquitto $M21_VERSION into $prefix (once; about a minute)" >&2
  work=$(mktemp -d)
  tarball="$work/mosquitto_$M21_VERSION.orig.tar.gz"
  if ! curl -fsS -m 120 -o "$tarball" \
    "http://deb.debian.org/debian/pool/main/m/mosquitto/mosquitto_$M21_VERSION.orig.tar.gz" ||
    ! echo "$M21_SHA256  $tarball" | sha256sum -c --quiet; then
    echo "could not fetch mosquitto $M21_VERSION: its tests will be skipped" >&2
    rm -rf "$work"; return
  fi
  tar -xzf "$tarball" -C "$work"
  if ! (cd "$work"/*mosquitto*/ && mkdir build && cd build &&
    cmake .. -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX="$prefix" -DWITH_DOCS=OFF \
      -DWITH_WEBSOCKETS=OFF -DWITH_TESTS=OFF -DWITH_CLIENTS=OFF -DWITH_APPS=OFF \
      -DWITH_CTRL_SHELL=OFF -DWITH_LTO=OFF && make -j"$(nproc)" && make install) \
    >"$work/build.log" 2>&1; then
    tail -20 "$work/build.log" >&2
    echo "building mosquitto $M21_VERSION failed: its tests will be skipped" >&2
  fi
  rm -rf "$work"
}

test_wheel() {  # build the wheel, install it into its own venv, run the suite outside the checkout
  local wvenv=${PEPI_WHEEL_VENV:-.venv-wheel} dist
  dist=$(mktemp -d)
  "$VENV/bin/python" -m pip wheel -q --no-deps -w "$dist" .
  rm -rf "$wvenv"
  python3 -m venv "$wvenv"
  "$wvenv/bin/python" -m pip install -q --upgrade pip >/dev/null
  "$wvenv/bin/python" -m pip install -q "$(ls "$dist"/pepi_fleet-*.whl)[test]"
  rm -rf "$dist"
  # From another folder, so neither pytest nor `python -m` children find the checkout's files.
  local repo=$PWD
  (cd / && PEPI_EXPECT_INSTALLED=1 "$repo/$wvenv/bin/pytest" -c "$repo/pyproject.toml" \
    --rootdir "$repo" -p no:cacheprovider "$repo/tests" "$@")
}

cmd=${1:-}
shift || true
case "$cmd" in
  setup) setup test ;;
  demo) setup demo; exec "$VENV/bin/pepi" demo "$@" ;;
  test)
    setup test
    "$VENV/bin/ruff" check .
    "$VENV/bin/ruff" format --check .
    "$VENV/bin/mypy"
    exec "$VENV/bin/pytest" "$@" ;;
  test-wheel) setup test; test_wheel "$@" ;;
  -h|--help|help) usage ;;
  "") usage; exit 2 ;;
  *) echo "run.sh: unknown command '$cmd'" >&2; usage >&2; exit 2 ;;
esac
