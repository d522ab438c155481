#!/usr/bin/env bash
# Install a pepi-fleet camera node (and optionally the controller) on Raspberry Pi OS
# (Bookworm or later): python3-picamera2 from apt, a venv with the system's site packages,
# the node-only Python install, chrony against the rig's time server, a `pepi` system user
# in group video, the systemd units. Run it from a checkout of pepi-fleet:
#
#   sudo deploy/install-pi.sh --broker mqtt://rig-broker:1883 --node-id cam01 \
#        --password-file ./cam01.password --time-server rig-broker
#
# A node of a site with a broker of its own, bridged to the controller's (pepi broker init
# --site north=cam05,...): --broker mqtts://gw-north:8883 --ca-file ./ca.crt --site north
#
#   deploy/install-pi.sh --dry-run --root /tmp/pi ...   writes every file under /tmp/pi and
#                                                       prints the commands instead of running them
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
PREFIX=/opt/pepi
VENV=$PREFIX/venv
ETC=/etc/pepi
DATA=/var/lib/pepi

usage() {
  cat <<'EOF'
usage: deploy/install-pi.sh [options]
  --broker URL            MQTT broker (mqtt://host:1883, mqtts://host:8883); required
  --node-id ID            node id (default: the Pi's CPU serial)
  --site SITE             the site whose broker --broker is, when that broker is bridged to
                          the controller's (pepi broker init --site SITE=...): the node
                          reports it, so the controller shows it unreachable, not stale,
                          while the site's bridge is down
  --password-file FILE    this node's MQTT password (copied to /etc/pepi/mqtt-password)
  --ca-file FILE          CA certificate of an mqtts:// broker (copied to /etc/pepi/ca.crt)
  --time-server HOST      the rig's NTP server for chrony (repeatable; replaces Debian's pool)
  --serve-time SUBNET     also serve time to SUBNET (e.g. 192.168.10.0/24): for the rig's
                          time server, usually the broker/controller machine
  --camera-count N        cameras on this Pi (default 1)
  --frame-lock            libcamera camera sync across the rig
  --sync-role ROLE        server | client | auto (default auto; name one server per rig)
  --controller            also install and start the controller (pepi-controller.service)
  --controller-password-file FILE   the controller's MQTT password (login "controller")
  --no-node               install no camera node (a controller-only machine)
  --ptp                   also install linuxptp and print how to use it (deploy/PTP.md)
  --source PATH           what to pip install (default: this checkout)
  --dry-run               run nothing: print the commands, write the files under --root
  --root DIR              with --dry-run: where the files go (default: a new temporary dir)
EOF
}

BROKER="" NODE_ID="" SITE="" PASSWORD_FILE="" CA_FILE="" SERVE_TIME="" CAMERA_COUNT=1
FRAME_LOCK=false SYNC_ROLE=auto CONTROLLER=false CONTROLLER_PASSWORD_FILE="" NODE=true
PTP=false SOURCE=$REPO DRY_RUN=false ROOT=""
TIME_SERVERS=()

die() { echo "install-pi.sh: $*" >&2; exit 2; }
need_arg() { if [ $# -lt 2 ] || [ -z "$2" ]; then die "$1 needs a value (see --help)"; fi; }

while [ $# -gt 0 ]; do
  case "$1" in
    --broker) need_arg "$@"; BROKER=$2; shift ;;
    --node-id) need_arg "$@"; NODE_ID=$2; shift ;;
    --site) need_arg "$@"; SITE=$2; shift ;;
    --password-file) need_arg "$@"; PASSWORD_FILE=$2; shift ;;
    --ca-file) need_arg "$@"; CA_FILE=$2; shift ;;
    --time-server) need_arg "$@"; TIME_SERVERS+=("$2"); shift ;;
    --serve-time) need_arg "$@"; SERVE_TIME=$2; shift ;;
    --camera-count) need_arg "$@"; CAMERA_COUNT=$2; shift ;;
    --frame-lock) FRAME_LOCK=true ;;
    --sync-role) need_arg "$@"; SYNC_ROLE=$2; shift ;;
    --controller) CONTROLLER=true ;;
    --controller-password-file) need_arg "$@"; CONTROLLER_PASSWORD_FILE=$2; shift ;;
    --no-node) NODE=false ;;
    --ptp) PTP=true ;;
    --source) need_arg "$@"; SOURCE=$2; shift ;;
    --dry-run) DRY_RUN=true ;;
    --root) need_arg "$@"; ROOT=$2; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown option '$1'" ;;
  esac
  shift
done

# -- checks ---------------------------------------------------------------------------------

[ -n "$BROKER" ] || die "give --broker mqtt://HOST:1883 (the rig's mosquitto)"
[[ "$BROKER" =~ ^(mqtts?|tcp|ssl):// ]] || die "--broker '$BROKER': use mqtt://host[:port] or mqtts://"
[[ "$BROKER" != *'"'* && "$BROKER" != *\\* ]] || die "--broker: no quotes or backslashes"
[ -z "$NODE_ID" ] || [[ "$NODE_ID" =~ ^[a-z0-9][a-z0-9_-]{0,31}$ ]] \
  || die "--node-id '$NODE_ID': use 1-32 of a-z 0-9 _ - starting with a letter or digit"
[ -z "$SITE" ] || [[ "$SITE" =~ ^[a-z0-9][a-z0-9_-]{0,31}$ ]] \
  || die "--site '$SITE': use 1-32 of a-z 0-9 _ - starting with a letter or digit"
[[ "$CAMERA_COUNT" =~ ^[1-4]$ ]] || die "--camera-count: 1 to 4"
[[ "$SYNC_ROLE" =~ ^(server|client|auto)$ ]] || die "--sync-role: server, client or auto"
for file in "$PASSWORD_FILE" "$CA_FILE" "$CONTROLLER_PASSWORD_FILE"; do
  [ -z "$file" ] || [ -r "$file" ] || die "cannot read $file"
done
for host in "${TIME_SERVERS[@]}"; do
  [[ "$host" =~ ^[A-Za-z0-9._:-]+$ ]] || die "--time-server '$host' is not a host name or address"
done
[ -z "$SERVE_TIME" ] || [[ "$SERVE_TIME" =~ ^[0-9A-Fa-f.:/]+$ ]] || die "--serve-time: a subnet, e.g. 192.168.10.0/24"
$NODE || $CONTROLLER || die "--no-node without --controller installs nothing"
$NODE || [ -z "$SITE" ] || die "--site is a node's setting: drop it or --no-node"
if $CONTROLLER && [ -z "$CONTROLLER_PASSWORD_FILE" ]; then
  die "--controller needs --controller-password-file (the broker login 'controller')"
fi
[ -f "$SOURCE/pyproject.toml" ] || [[ "$SOURCE" == *.whl ]] || die "--source $SOURCE: not a checkout or wheel"

if $DRY_RUN; then
  if [ -z "$ROOT" ]; then ROOT=$(mktemp -d -t pepi-install.XXXXXX); fi
  mkdir -p "$ROOT"
  ROOT=$(cd "$ROOT" && pwd)
  echo "# dry run: nothing is installed or started; files go under $ROOT"
else
  [ -z "$ROOT" ] || die "--root is for --dry-run (a live install writes to /)"
  [ "$(id -u)" -eq 0 ] || die "run as root: sudo $0 ..."
fi

warn() { echo "install-pi.sh: warning: $*" >&2; }
if [ -r /etc/os-release ]; then
  # shellcheck disable=SC1091
  . /etc/os-release
  case "${VERSION_CODENAME:-}" in
    bookworm|trixie|forky) ;;
    *) warn "written for Raspberry Pi OS Bookworm or later; this is '${PRETTY_NAME:-unknown}'" ;;
  esac
fi
if $NODE && ! grep -qs "Raspberry Pi" /proc/device-tree/model; then
  warn "this is not a Raspberry Pi: the node's camera check will fail (pepi doctor)"
fi

# -- helpers: run or print; write files (under ROOT in a dry run) -----------------------------

run() {  # a command that must succeed
  if $DRY_RUN; then printf '+'; printf ' %q' "$@"; printf '\n'; else "$@"; fi
}
try() {  # a command whose failure is fine (a service that is not there)
  if $DRY_RUN; then printf '+'; printf ' %q' "$@"; printf ' || true\n'; else "$@" || true; fi
}
put() {  # put MODE OWNER PATH: stdin becomes PATH (under ROOT in a dry run)
  local mode=$1 owner=$2 path=$3 dest=$ROOT$3
  mkdir -p "$(dirname "$dest")"
  cat >"$dest"
  chmod "$mode" "$dest"
  if $DRY_RUN; then echo "+ wrote $path (mode $mode, owner $owner)"; else chown "$owner" "$dest"; fi
}
toml_string() { printf '"%s"' "$1"; }  # inputs are checked above: no quotes or backslashes

# -- 1. system packages -------------------------------------------------------------------------

PACKAGES=(python3-venv python3-pip chrony)
$NODE && PACKAGES+=(python3-picamera2 python3-numpy)
$PTP && PACKAGES+=(linuxptp ethtool)
run apt-get update
run env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${PACKAGES[@]}"

# -- 2. time: chrony replaces systemd-timesyncd (SNTP, only ms-accurate) ------------------------

try systemctl disable --now systemd-timesyncd
if [ ${#TIME_SERVERS[@]} -gt 0 ]; then
  {
    echo "# The rig's time server(s), from deploy/install-pi.sh --time-server. Every node follows"
    echo "# the same server, so their clocks agree with each other; polled often (cheap on a LAN)."
    for host in "${TIME_SERVERS[@]}"; do echo "server $host iburst minpoll 2 maxpoll 4"; done
  } | put 0644 root:root /etc/chrony/sources.d/pepi.sources
  # Debian's pool would let nodes pick different internet servers: ms apart from each other.
  run sed -i 's/^pool /#pool /' /etc/chrony/chrony.conf
else
  warn "no --time-server: chrony keeps Debian's internet pool (ms-accurate across nodes at best)"
fi
{
  echo "# pepi-fleet: step the clock if it is far off while starting, then only slew it (a step"
  echo "# during a session moves frame timestamps); hardware timestamps on NICs that have them"
  echo "# (Pi 5, CM4, CM5; ignored elsewhere)."
  echo "makestep 0.1 3"
  echo "hwtimestamp *"
  if [ -n "$SERVE_TIME" ]; then
    echo "# This machine is the rig's time server (--serve-time)."
    echo "allow $SERVE_TIME"
    echo "local stratum 8"
  fi
} | put 0644 root:root /etc/chrony/conf.d/pepi.conf
run systemctl restart chrony

# -- 3. the pepi user (group video for the cameras) ---------------------------------------------

put 0644 root:root /etc/sysusers.d/pepi.conf <"$HERE/sysusers.d/pepi.conf"
run systemd-sysusers /etc/sysusers.d/pepi.conf

# -- 4. Python: a venv that sees apt's picamera2, libcamera and numpy ---------------------------

run python3 -m venv --system-site-packages "$VENV"
run "$VENV/bin/pip" install --upgrade pip
if $CONTROLLER; then
  run "$VENV/bin/pip" install "$SOURCE"  # the controller needs the whole dependency set
else
  # Node only: not the controller's web stack, and numpy stays apt's (picamera2 is built on it).
  run "$VENV/bin/pip" install --no-deps "$SOURCE"
  run "$VENV/bin/pip" install -r "$HERE/requirements-node.txt"
fi

# -- 5. configuration ---------------------------------------------------------------------------

config_path() {  # an existing config is kept; the new one goes next to it for comparison
  if [ -e "$ROOT$1" ]; then warn "$1 exists: kept; the new one is $1.new"; echo "$1.new"; else echo "$1"; fi
}
run install -d -m 0750 -o root -g pepi "$ETC"
if $NODE; then
  if [ -n "$PASSWORD_FILE" ]; then
    put 0640 root:pepi "$ETC/mqtt-password" <"$PASSWORD_FILE"
  fi
  if [ -n "$CA_FILE" ]; then
    put 0644 root:root "$ETC/ca.crt" <"$CA_FILE"
  fi
  {
    echo "# pepi-node configuration (deploy/install-pi.sh). Keys are \`pepi node\` flag names;"
    echo "# \`pepi node --help\` lists them. PEPI_* variables in $ETC/node.env override these."
    echo "[node]"
    echo "broker = $(toml_string "$BROKER")"
    [ -z "$NODE_ID" ] || echo "node-id = $(toml_string "$NODE_ID")"
    [ -z "$SITE" ] || echo "site = $(toml_string "$SITE")"
    [ -z "$PASSWORD_FILE" ] || echo "password-file = $(toml_string "$ETC/mqtt-password")"
    [ -z "$CA_FILE" ] || echo "ca-file = $(toml_string "$ETC/ca.crt")"
    echo "data-dir = $(toml_string "$DATA/node")"
    echo "camera = \"picamera2\""
    echo "camera-count = $CAMERA_COUNT"
    echo "frame-lock = $FRAME_LOCK"
    echo "sync-role = $(toml_string "$SYNC_ROLE")"
    echo "# resolution = \"4056x3040\"   # the sensor's mode sets the frame rate it can deliver"
    echo "# fps = 10.0"
  } | put 0640 root:pepi "$(config_path "$ETC/node.toml")"
fi
if $CONTROLLER; then
  {
    echo "# pepi controller configuration (deploy/install-pi.sh): PEPI_* variables,"
    echo "# see \`pepi controller --help\`."
    echo "PEPI_BROKER=$BROKER"
    echo "PEPI_MQTT_USERNAME=controller"
    echo "PEPI_MQTT_PASSWORD=$(head -n1 "$CONTROLLER_PASSWORD_FILE")"
    [ -z "$CA_FILE" ] || echo "PEPI_CA_FILE=$ETC/ca.crt"
    echo "# PEPI_WEB_HOST=0.0.0.0   # the page listens on loopback unless told otherwise"
  } | put 0640 root:pepi "$(config_path "$ETC/controller.env")"
fi

# -- 6. services --------------------------------------------------------------------------------

UNITS=()
$NODE && UNITS+=(pepi-node.service)
$CONTROLLER && UNITS+=(pepi-controller.service)
for unit in "${UNITS[@]}"; do
  put 0644 root:root "/etc/systemd/system/$unit" <"$HERE/systemd/$unit"
done
run systemctl daemon-reload
run systemctl enable --now "${UNITS[@]}"

# -- 7. what next -------------------------------------------------------------------------------

echo
if $NODE; then
  echo "Check the node:   sudo -u pepi $VENV/bin/pepi doctor --config $ETC/node.toml"
  echo "Follow its log:   journalctl -u pepi-node -f"
fi
$CONTROLLER && echo "Controller page:  http://127.0.0.1:8080 (journalctl -u pepi-controller -f)"
if $PTP; then
  echo
  echo "PTP: linuxptp is installed but not enabled; see deploy/PTP.md (hardware timestamps on"
  echo "Pi 5, CM4 and CM5; 'ethtool -T eth0' shows whether this Pi has them)."
fi
