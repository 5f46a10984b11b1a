#!/usr/bin/env bash
# Makes sure PostgreSQL's server programs are here for the history store's tests, which
# start a throwaway server of their own (initdb + pg_ctl on loopback, as the postgres
# user when run as root). Installs Debian's package when they are missing and this runs
# as root; otherwise says what is needed. Used by `make test` and `make test-integration`.
set -euo pipefail
# Debian's package puts them under /usr/lib/postgresql/*/bin.
if ! command -v initdb >/dev/null && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    echo "== installing PostgreSQL for the history tests"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    # The package may start a cluster of its own; the tests start theirs.
    if command -v pg_ctlcluster >/dev/null; then
      for cluster in /etc/postgresql/*/main; do
        [ -d "$cluster" ] || continue
        version=$(basename "$(dirname "$cluster")")
        pg_ctlcluster "$version" main stop 2>/dev/null || true
      done
    fi
  else
    echo "PostgreSQL (initdb, pg_ctl) is required for the history tests" >&2
    exit 1
  fi
fi
