#!/usr/bin/env bash
# Installs what the test suite needs on a Debian machine: a C compiler for
# the race detector, Prosody with its community modules (mod_cloud_notify)
# for the end-to-end tests, ejabberd for the same tests against the other
# big server, PostgreSQL's server binaries for the shared registry (and
# PgBouncer, which the registry is tested through too) and
# MariaDB's for importing Prosody's SQL store from MySQL (the tests run
# their own servers; the system ones stay off), podman and runc to build
# and run the container image, Node.js with http_ece, which checks our
# WebPush encryption independently of our code, Prometheus's promtool,
# which loads and unit-tests the alerting rules in deploy/prometheus, and
# nginx, which runs the reverse proxy example in deploy/nginx.
# Runs apt-get only when something is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# staticcheck, pinned, into bin/ (make vet runs it from there).
STATICCHECK_VERSION=v0.8.2
if ! bin/staticcheck -version 2>/dev/null | grep -q "(${STATICCHECK_VERSION#v})"; then
  echo "test-deps: installing staticcheck ${STATICCHECK_VERSION}"
  GOBIN="$PWD/bin" "${GO:-go}" install "honnef.co/go/tools/cmd/staticcheck@${STATICCHECK_VERSION}"
fi

missing=()
command -v gcc >/dev/null 2>&1 || missing+=(gcc libc6-dev)
command -v prosody >/dev/null 2>&1 || missing+=(prosody)
[ -f /usr/lib/prosody/modules/mod_cloud_notify/mod_cloud_notify.lua ] ||
  [ -f /usr/lib/prosody/modules/mod_cloud_notify.lua ] || missing+=(prosody-modules)
compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null || missing+=(postgresql)
# PgBouncer, in front of the tests' PostgreSQL (internal/testutil/pgtest).
[ -x /usr/sbin/pgbouncer ] || missing+=(pgbouncer)
{ [ -x /usr/sbin/mariadbd ] && command -v mariadb-install-db >/dev/null 2>&1; } || missing+=(mariadb-server)
command -v ejabberdctl >/dev/null 2>&1 || [ -x /usr/sbin/ejabberdctl ] || missing+=(ejabberd)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
# The container image test (deploy/image_test.go) runs podman with runc.
command -v podman >/dev/null 2>&1 || missing+=(podman)
command -v runc >/dev/null 2>&1 || missing+=(runc)
# promtool checks deploy/prometheus's rules (deploy/prometheus_test.go).
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
# nginx runs deploy/nginx's example in front of the binary (cmd/push-appserver).
[ -x /usr/sbin/nginx ] || missing+=(nginx-light)
# systemd-analyze verifies deploy/push-appserver.service.
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
# strace shows deploy's test which sockets the server opens.
command -v strace >/dev/null 2>&1 || missing+=(strace)

# http_ece, pinned by package-lock.json, into the test's own folder.
ECE_DIR=internal/push/webpush/testdata/ece
npm_deps() {
  if [ ! -f "$ECE_DIR/node_modules/http_ece/package.json" ] ||
    [ "$ECE_DIR/package-lock.json" -nt "$ECE_DIR/node_modules/.package-lock.json" ]; then
    echo "test-deps: installing http_ece (npm ci in $ECE_DIR)"
    if ! (cd "$ECE_DIR" && npm ci --no-audit --no-fund --loglevel=error); then
      echo "test-deps: FAILED: npm ci in $ECE_DIR; the WebPush interoperability test cannot run without http_ece" >&2
      exit 1
    fi
  fi
}

if [ ${#missing[@]} -eq 0 ]; then
  npm_deps
  exit 0
fi

echo "test-deps: installing ${missing[*]}"
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    sudo="sudo"
  else
    echo "test-deps: need root (or sudo) to install: ${missing[*]}" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
if ! $sudo apt-get update -qq || ! $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"; then
  echo "test-deps: FAILED to install ${missing[*]}; the end-to-end tests cannot run without them" >&2
  exit 1
fi
# The Debian packages start system-wide servers; the tests run their own.
for svc in prosody postgresql pgbouncer mariadb ejabberd epmd.socket epmd podman.socket prometheus nginx; do
  if command -v systemctl >/dev/null 2>&1; then
    $sudo systemctl disable --now "$svc" >/dev/null 2>&1 || true
  fi
  $sudo service "$svc" stop >/dev/null 2>&1 || true
done
npm_deps
# ejabberd's start leaves Erlang's port mapper running; the tests' ejabberd
# needs none (a fixed distribution port instead).
if command -v epmd >/dev/null 2>&1; then
  epmd -kill >/dev/null 2>&1 || true
fi
