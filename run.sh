#!/usr/bin/env bash
# pepi-fleet: one entry point that installs what it needs, then runs.
#   ./run.sh demo [pepi demo options]   embedded demo: mosquitto, 3 simulated nodes, controller
#   ./run.sh test [pytest options]      lint, type checks and the whole test suite
#   ./run.sh setup                      only install (system packages + .venv)
set -euo pipefail
cd "$(dirname "$0")"

VENV=${PEPI_VENV:-.venv}
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

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

setup() {
  local system=(mosquitto mosquitto-clients)
  [ "${1:-}" = test ] && system+=(docker-compose chromium)
  command -v python3 >/dev/null || system+=(python3)
  python3 -c 'import venv, ensurepip' 2>/dev/null || system+=(python3-venv)
  need_apt "${system[@]}"
  if [ ! -x "$VENV/bin/python" ]; then python3 -m venv "$VENV"; fi
  "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
  "$VENV/bin/python" -m pip install -q -e '.[test]'
}

cmd=${1:-help}
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
  *) sed -n '2,6p' "$0"; exit 2 ;;
esac
