#!/usr/bin/env bash
# Installs what the end-to-end tests need beyond Prometheus: HAProxy (the webhook
# actuator's worked example runs against a real one), from the distribution's packages,
# when it is not on PATH. Debian/Ubuntu only; elsewhere install haproxy by hand.
set -euo pipefail
if command -v haproxy >/dev/null; then
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "haproxy is not on PATH and this is not a Debian/Ubuntu machine:" >&2
  echo "install haproxy (2.4 or newer, with the Prometheus exporter) and retry" >&2
  exit 1
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "run as root or install sudo to install haproxy" >&2; exit 1; }
  sudo="sudo"
fi
echo "installing haproxy from the distribution's packages ..."
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends haproxy >/dev/null
command -v haproxy >/dev/null
