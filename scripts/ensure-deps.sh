#!/usr/bin/env bash
# Installs the system packages the build needs, only when they are missing, and says
# whether the host allows io_uring (otherwise the engine runs on epoll). Safe to run
# repeatedly.
#   scripts/ensure-deps.sh           what the build and the tests need (haproxy: the
#                                    cluster test and `make cluster-demo` put it in front;
#                                    socat: to talk to HAProxy's runtime API by hand;
#                                    curl: the demos' commands and readiness checks)
#   scripts/ensure-deps.sh --bench   also nginx, the baseline bench/e2e measures beside the engine
set -euo pipefail

packages=(gcc g++ make pkg-config libclang-dev ccache curl haproxy socat)
if [ "${1:-}" = "--bench" ] && ! command -v nginx >/dev/null 2>&1; then
  packages+=(nginx-light)
fi
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
  # bench/e2e and the cluster test start their own nginx and haproxy processes; keep the
  # packages from starting system services (nginx would take port 80; policy-rc.d
  # answering 101 is Debian's "do not start services").
  policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    policy=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
    $sudo chmod 755 "$policy"
  fi
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
  if [ -n "$policy" ]; then $sudo rm -f "$policy"; fi
fi

# io_uring is optional: where it is refused, `runtime = "auto"` runs on epoll and says so.
if [ -r /proc/sys/kernel/io_uring_disabled ] && [ "$(cat /proc/sys/kernel/io_uring_disabled)" = "2" ]; then
  echo "ensure-deps: note: io_uring is disabled (kernel.io_uring_disabled=2); the engine will run on epoll" >&2
fi
memlock=$(ulimit -l)
echo "ensure-deps: ok (locked-memory limit: ${memlock} KiB; uid $(id -u))"
