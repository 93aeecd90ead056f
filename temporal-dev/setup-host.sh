#!/usr/bin/env bash
# Host tools the lab and the tests need, from Debian's packages; installs only what is missing,
# so it is quick to re-run (npm runs it before `start` and `test`).
set -euo pipefail

# command -> Debian package providing it
declare -A pkg_for=(
  [iptables]=iptables
  [iptables-restore]=iptables
  [conntrack]=conntrack
  [ip]=iproute2
  [arping]=arping
  [ping]=iputils-ping
  [nc]=netcat-openbsd
  [python3]=python3
)
missing=()
for cmd in "${!pkg_for[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${pkg_for[$cmd]}")
done
if ((${#missing[@]})); then
  echo "[setup] installing Debian packages: ${missing[*]}" >&2
  sudo=()
  if [[ $(id -u) -ne 0 ]]; then sudo=(sudo); fi
  "${sudo[@]}" apt-get update -q
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
fi
