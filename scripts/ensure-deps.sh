#!/usr/bin/env bash
# Installs the system packages the build needs, only when they are missing, and checks
# what glommio needs from the host (io_uring, locked memory). Safe to run repeatedly.
set -euo pipefail

packages=(gcc g++ make pkg-config libclang-dev ccache)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done

if ! command -v cargo >/dev/null 2>&1; then
  echo "ensure-deps: cargo is not on PATH; install a Rust toolchain (rustup) first" >&2
  exit 1
fi

if [ "${#missing[@]}" -gt 0 ]; then
  echo "ensure-deps: installing ${missing[*]}"
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "ensure-deps: need root or sudo to install ${missing[*]}" >&2; exit 1; }
    sudo="sudo"
  fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# glommio: io_uring must be enabled and each executor locks a little memory.
if [ -r /proc/sys/kernel/io_uring_disabled ] && [ "$(cat /proc/sys/kernel/io_uring_disabled)" = "2" ]; then
  echo "ensure-deps: warning: io_uring is disabled (kernel.io_uring_disabled=2); the engine cannot start" >&2
fi
memlock=$(ulimit -l)
echo "ensure-deps: ok (locked-memory limit: ${memlock} KiB; uid $(id -u))"
