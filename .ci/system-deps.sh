#!/usr/bin/env bash
# Debian packages the tests use: chromium (admin console browser tests), postfix
# (smtp-source / smtp-sink as a real peer MTA), valgrind (load-tests/cpu_per_message.sh
# --callgrind), and libhyperscan-dev, libssl-dev, libpcre2-dev + pkg-config, with which
# setup.py builds the scanner's C modules (gateway/scan/_hyperscan.c, _digest.c,
# _reread.c). Installed only when missing; needs root.
set -euo pipefail
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
{ command -v smtp-sink >/dev/null 2>&1 || [ -x /usr/sbin/smtp-sink ]; } || need+=(postfix)
command -v valgrind >/dev/null 2>&1 || need+=(valgrind)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
pkg-config --exists libhs 2>/dev/null || need+=(libhyperscan-dev)
pkg-config --exists libcrypto 2>/dev/null || need+=(libssl-dev)
pkg-config --exists libpcre2-8 2>/dev/null || need+=(libpcre2-dev)
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" != 0 ]; then
  echo "system-deps: missing ${need[*]} and not root; install them with apt-get" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
