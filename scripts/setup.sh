#!/usr/bin/env bash
# Installs and starts what building and testing k3rs needs on Debian 12.
# Idempotent: fast when everything is already in place.
set -euo pipefail

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

need=()
command -v protoc >/dev/null || need+=(protobuf-compiler)
# etcd-client's build imports google/protobuf/*.proto, shipped by libprotobuf-dev.
[ -f /usr/include/google/protobuf/descriptor.proto ] || need+=(libprotobuf-dev)
command -v etcd >/dev/null || need+=(etcd-server)
command -v etcdctl >/dev/null || need+=(etcd-client)
# The node-agent tests run pods on a private containerd (runc, CNI plugins, iptables
# for masquerading) with images built from the static busybox.
command -v containerd >/dev/null || need+=(containerd)
command -v runc >/dev/null || need+=(runc)
[ -x /usr/lib/cni/bridge ] || need+=(containernetworking-plugins)
dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)
# Image-pull tests push to a private registry on loopback (python3's crypt
# makes its htpasswd entries).
[ -x /usr/bin/docker-registry ] || need+=(docker-registry)
command -v iptables >/dev/null || need+=(iptables)
# The node agent's service proxy programs nftables through `nft`.
command -v nft >/dev/null || need+=(nftables)
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
# deploy/ tests check the systemd units with systemd-analyze.
command -v systemd-analyze >/dev/null || need+=(systemd)
if [ "${#need[@]}" -gt 0 ]; then
  echo "setup: installing ${need[*]}"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# The Debian package may start a system etcd on :2379; tests use their own ports, so stop it.
if command -v systemctl >/dev/null && systemctl is-active --quiet etcd 2>/dev/null; then
  $SUDO systemctl disable --now etcd >/dev/null 2>&1 || true
fi

if ! command -v cargo-nextest >/dev/null && ! cargo nextest --version >/dev/null 2>&1; then
  cargo install --locked cargo-nextest
fi

# The official Python client, for the API server's client tests, in a
# virtualenv of its own so the system Python is left alone.
venv="$HOME/.cache/k3rs/venv"
if ! "$venv/bin/python" -c 'import kubernetes' 2>/dev/null; then
  echo "setup: installing the Python kubernetes client into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check kubernetes
fi

# Databases the tests use (CI has them installed; start them if they are down).
if command -v pg_ctlcluster >/dev/null && ! (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; then
  echo "setup: starting PostgreSQL"
  $SUDO pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
fi
if command -v mariadbd >/dev/null && ! (exec 3<>/dev/tcp/127.0.0.1/3306) 2>/dev/null; then
  echo "setup: starting MariaDB"
  $SUDO start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd || true
fi
for i in $(seq 1 30); do
  pg=0; my=0
  (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null && pg=1
  (exec 3<>/dev/tcp/127.0.0.1/3306) 2>/dev/null && my=1
  [ "$pg$my" = 11 ] && break
  sleep 1
done
