#!/bin/sh
# Installs k3rs on a systemd host from prebuilt binaries.
#
#   INSTALL_K3RS_SKIP_DOWNLOAD=true INSTALL_K3RS_ARTIFACT_DIR=./dist sh install.sh
#
# Settings (environment):
#   INSTALL_K3RS_ARTIFACT_DIR   directory with the k3rs binaries and optional
#                               image tarballs (*.tar) for airgap installs;
#                               default: the directory of this script, else
#                               ../target/release beside it
#   INSTALL_K3RS_SKIP_DOWNLOAD  true: use only INSTALL_K3RS_ARTIFACT_DIR (there
#                               is no release server yet, so this is the only mode)
#   INSTALL_K3RS_UNITS          single (default): one k3rs.service supervisor;
#                               split: one unit per daemon under k3rs-split.target
#   INSTALL_K3RS_BIN_DIR        where binaries go (default /usr/local/bin)
#   INSTALL_K3RS_SYSTEMD_DIR    where units go (default /etc/systemd/system)
#   INSTALL_K3RS_ROOT           prefix for every path written (packaging, tests)
#   INSTALL_K3RS_SKIP_DEPS      true: do not apt-get install runtime dependencies
#   INSTALL_K3RS_SKIP_ENABLE    true: write units but do not enable them
#   INSTALL_K3RS_SKIP_START     true: enable but do not start
#   K3RS_URL, K3RS_TOKEN        agent mode: write and start k3rs-agent.service,
#                               which joins the server at K3RS_URL with the
#                               token (kept in k3rs-agent.service.env, 0600)
set -eu

info() { echo "[k3rs-install] $*"; }
fatal() { echo "[k3rs-install] error: $*" >&2; exit 2; }

here=$(cd "$(dirname "$0")" && pwd)
root=${INSTALL_K3RS_ROOT:-}
bin_dir=${INSTALL_K3RS_BIN_DIR:-/usr/local/bin}
systemd_dir=${INSTALL_K3RS_SYSTEMD_DIR:-/etc/systemd/system}
units=${INSTALL_K3RS_UNITS:-single}
data_dir=/var/lib/k3rs
binaries="k3rs k3rs-datastore k3rs-apiserver k3rs-scheduler k3rs-controller-manager k3rs-node-agent"

case "$units" in single|split) ;; *) fatal "INSTALL_K3RS_UNITS must be single or split, not '$units'";; esac
mode=server
if [ -n "${K3RS_URL:-}" ]; then
  mode=agent
  case "$K3RS_URL" in https://*) ;; *) fatal "K3RS_URL must be https://<server>:6443, not '$K3RS_URL'";; esac
  [ -n "${K3RS_TOKEN:-}" ] || fatal "agent mode (K3RS_URL) needs K3RS_TOKEN: the server's node token (k3rs token show, or k3rs token create)"
  [ "$units" = single ] || fatal "INSTALL_K3RS_UNITS=split is for servers; an agent runs one k3rs-agent.service"
fi
if [ "${INSTALL_K3RS_SKIP_DOWNLOAD:-false}" != true ]; then
  info "no release server is configured; installing from local artifacts (set INSTALL_K3RS_SKIP_DOWNLOAD=true to silence this)"
fi

# Where the binaries come from.
artifacts=${INSTALL_K3RS_ARTIFACT_DIR:-}
if [ -z "$artifacts" ]; then
  if [ -x "$here/k3rs" ]; then artifacts=$here
  elif [ -x "$here/../target/release/k3rs" ]; then artifacts=$here/../target/release
  elif [ -n "${CARGO_TARGET_DIR:-}" ] && [ -x "$CARGO_TARGET_DIR/release/k3rs" ]; then artifacts=$CARGO_TARGET_DIR/release
  else fatal "no k3rs binary found: build with 'cargo build --release' and set INSTALL_K3RS_ARTIFACT_DIR to its output directory"
  fi
fi
[ -x "$artifacts/k3rs" ] || fatal "$artifacts/k3rs is missing or not executable"
[ "$mode" = server ] || [ -x "$artifacts/k3rs-node-agent" ] || fatal "agent mode needs $artifacts/k3rs-node-agent (cargo build --release -p k3rs-node-agent)"
units_src=$here/systemd
[ -d "$units_src" ] || fatal "$units_src (the unit templates shipped beside install.sh) is missing"

SUDO=
if [ "$(id -u)" != 0 ]; then
  if [ -z "$root" ]; then
    command -v sudo >/dev/null || fatal "run as root (or install sudo)"
    SUDO=sudo
  fi
fi

# Runtime dependencies (the node agent's); only when something is missing.
if [ "${INSTALL_K3RS_SKIP_DEPS:-false}" != true ]; then
  need=""
  command -v containerd >/dev/null || need="$need containerd"
  command -v runc >/dev/null || need="$need runc"
  [ -x /usr/lib/cni/bridge ] || need="$need containernetworking-plugins"
  command -v iptables >/dev/null || need="$need iptables"
  if [ -n "$need" ]; then
    info "installing$need"
    if ! { $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $need; } >/dev/null 2>&1; then
      info "warning: could not install$need (offline?); install them before starting a node agent"
    fi
  fi
fi

$SUDO mkdir -p "$root$bin_dir" "$root$systemd_dir" "$root/etc/k3rs"
installed=""
for b in $binaries; do
  if [ -x "$artifacts/$b" ]; then
    $SUDO install -m 0755 "$artifacts/$b" "$root$bin_dir/$b"
    installed="$installed $b"
  fi
done
info "installed$installed to $root$bin_dir"

# Airgap images: imported by the node agent at start.
if ls "$artifacts"/*.tar >/dev/null 2>&1; then
  $SUDO mkdir -p "$root$data_dir/agent/images"
  $SUDO cp "$artifacts"/*.tar "$root$data_dir/agent/images/"
  info "copied image tarballs to $root$data_dir/agent/images"
fi

# An example config the first time, never over the user's (its keys are
# the server's; an agent takes its settings from the environment file).
if [ "$mode" = server ] && [ ! -e "$root/etc/k3rs/config.yaml" ] && [ -f "$here/config.yaml.example" ]; then
  $SUDO install -m 0600 "$here/config.yaml.example" "$root/etc/k3rs/config.yaml"
fi

write_unit() {
  sed "s|@BIN_DIR@|$bin_dir|g" "$units_src/$1" | $SUDO tee "$root$systemd_dir/$1" >/dev/null
  $SUDO chmod 0644 "$root$systemd_dir/$1"
}
if [ "$mode" = agent ]; then
  write_unit k3rs-agent.service
  env_file="$root$systemd_dir/k3rs-agent.service.env"
  # The token is a secret: the file is created private, then filled.
  $SUDO sh -c "umask 077; : > '$env_file'"
  printf 'K3RS_URL=%s\nK3RS_TOKEN=%s\n' "$K3RS_URL" "$K3RS_TOKEN" | $SUDO tee "$env_file" >/dev/null
  $SUDO chmod 0600 "$env_file"
  start_units=k3rs-agent.service
elif [ "$units" = single ]; then
  write_unit k3rs.service
  start_units=k3rs.service
else
  for u in k3rs-split.target k3rs-datastore.service k3rs-apiserver.service k3rs-scheduler.service k3rs-controller-manager.service; do
    write_unit "$u"
  done
  start_units="k3rs-split.target k3rs-datastore.service k3rs-apiserver.service k3rs-scheduler.service k3rs-controller-manager.service"
fi
info "wrote units to $root$systemd_dir ($mode, $units)"

# Helper scripts.
$SUDO tee "$root$bin_dir/k3rs-killall.sh" >/dev/null <<KILLALL
#!/bin/sh
# Stops k3rs and every process it started (also those left by a crash).
[ "\$(id -u)" = 0 ] || exec sudo "\$0" "\$@"
for u in k3rs.service k3rs-agent.service k3rs-split.target k3rs-controller-manager.service k3rs-scheduler.service k3rs-apiserver.service k3rs-datastore.service; do
  systemctl stop "\$u" 2>/dev/null || true
done
for p in k3rs-node-agent k3rs-controller-manager k3rs-scheduler k3rs-apiserver k3rs-datastore; do
  pkill -TERM -x "\$p" 2>/dev/null || true
done
sleep 2
for p in k3rs-node-agent k3rs-controller-manager k3rs-scheduler k3rs-apiserver k3rs-datastore; do
  pkill -KILL -x "\$p" 2>/dev/null || true
done
KILLALL
$SUDO tee "$root$bin_dir/k3rs-uninstall.sh" >/dev/null <<UNINSTALL
#!/bin/sh
# Removes k3rs: units, binaries, configuration and all cluster state.
set -e
[ "\$(id -u)" = 0 ] || [ -n "\${K3RS_UNINSTALL_ROOT:-}" ] || exec sudo "\$0" "\$@"
r="\${K3RS_UNINSTALL_ROOT:-$root}"
if [ -z "\$r" ]; then "$bin_dir/k3rs-killall.sh" || true; fi
for u in k3rs.service k3rs-agent.service k3rs-split.target k3rs-datastore.service k3rs-apiserver.service k3rs-scheduler.service k3rs-controller-manager.service; do
  if [ -z "\$r" ]; then systemctl disable "\$u" 2>/dev/null || true; fi
  rm -f "\$r$systemd_dir/\$u"
done
rm -f "\$r$systemd_dir/k3rs-agent.service.env"
if [ -z "\$r" ]; then systemctl daemon-reload 2>/dev/null || true; fi
for b in $binaries k3rs-killall.sh; do rm -f "\$r$bin_dir/\$b"; done
rm -rf "\$r/etc/k3rs" "\$r$data_dir"
rm -f "\$r$bin_dir/k3rs-uninstall.sh"
echo "k3rs uninstalled"
UNINSTALL
$SUDO chmod 0755 "$root$bin_dir/k3rs-killall.sh" "$root$bin_dir/k3rs-uninstall.sh"

if [ -n "$root" ] || [ "${INSTALL_K3RS_SKIP_ENABLE:-false}" = true ]; then
  info "not enabling units (INSTALL_K3RS_ROOT or INSTALL_K3RS_SKIP_ENABLE set)"
  exit 0
fi
if ! [ -d /run/systemd/system ]; then
  info "systemd is not running here; start k3rs with: $bin_dir/k3rs $mode"
  exit 0
fi
$SUDO systemctl daemon-reload
$SUDO systemctl enable $start_units >/dev/null
if [ "${INSTALL_K3RS_SKIP_START:-false}" = true ]; then
  info "enabled; not started (INSTALL_K3RS_SKIP_START=true)"
  exit 0
fi
if [ "$mode" = agent ]; then
  $SUDO systemctl restart k3rs-agent.service
  info "started k3rs-agent.service; it joins $K3RS_URL (check: journalctl -u k3rs-agent)"
elif [ "$units" = single ]; then
  $SUDO systemctl restart k3rs.service
  info "started; kubeconfig: /etc/k3rs/k3rs.yaml (try: k3rs kubectl get nodes)"
else
  $SUDO systemctl restart k3rs-split.target
  info "started; kubeconfig: /etc/k3rs/k3rs.yaml (try: k3rs kubectl get nodes)"
fi
