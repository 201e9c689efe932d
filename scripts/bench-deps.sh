#!/usr/bin/env bash
# Installs what `make bench-instructions` needs on a Debian machine:
# valgrind, whose callgrind tool counts the instructions the server
# executes. (`perf stat -e instructions` would be cheaper, but many virtual
# machines do not expose the hardware counters.) Not part of `make test`.
set -euo pipefail

if command -v valgrind >/dev/null 2>&1 && command -v callgrind_control >/dev/null 2>&1; then
  exit 0
fi
echo "bench-deps: installing valgrind"
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    sudo="sudo"
  else
    echo "bench-deps: need root (or sudo) to install valgrind" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
if ! $sudo apt-get update -qq || ! $sudo apt-get install -y -qq --no-install-recommends valgrind; then
  echo "bench-deps: FAILED to install valgrind" >&2
  exit 1
fi
