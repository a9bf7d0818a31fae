#!/usr/bin/env bash
# Installs the distribution packages that provide missing commands. Each argument is
# COMMAND=PACKAGE; nothing is installed when every COMMAND is already on PATH.
# Debian/Ubuntu only; elsewhere install the packages by hand and put them on PATH.
#   scripts/install-packages.sh prometheus=prometheus haproxy=haproxy
set -euo pipefail
missing=()
for pair in "$@"; do
  command -v "${pair%%=*}" >/dev/null || missing+=("${pair#*=}")
done
[ ${#missing[@]} -eq 0 ] && exit 0
# one package may provide several of the commands asked for
mapfile -t packages < <(printf '%s\n' "${missing[@]}" | sort -u)
if ! command -v apt-get >/dev/null; then
  echo "not on PATH, and this is not a Debian/Ubuntu machine: install ${packages[*]}" >&2
  echo "(Prometheus: https://prometheus.io/download/) and retry" >&2
  exit 1
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "run as root or install sudo to install ${packages[*]}" >&2; exit 1; }
  sudo="sudo"
fi
echo "installing ${packages[*]} from the distribution's packages ..."
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
  "${packages[@]}" >/dev/null
for pair in "$@"; do
  command -v "${pair%%=*}" >/dev/null || { echo "${pair%%=*} is still not on PATH" >&2; exit 1; }
done
