#!/usr/bin/env bash
# Installs Prometheus (and Alertmanager, promtool, amtool) from the distribution's
# packages when they are not on PATH. Debian/Ubuntu only; elsewhere install them by hand
# (https://prometheus.io/download/) and put them on PATH.
set -euo pipefail
if command -v prometheus >/dev/null && command -v promtool >/dev/null \
  && command -v prometheus-alertmanager >/dev/null && command -v amtool >/dev/null; then
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "prometheus is not on PATH and this is not a Debian/Ubuntu machine:" >&2
  echo "install prometheus and promtool from https://prometheus.io/download/ and retry" >&2
  exit 1
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "run as root or install sudo to install prometheus" >&2; exit 1; }
  sudo="sudo"
fi
echo "installing prometheus from the distribution's packages ..."
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
  prometheus prometheus-alertmanager >/dev/null
command -v prometheus >/dev/null
