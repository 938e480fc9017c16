#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it (.ci/run calls this script).
#
#   bash tests/run.sh                 # as root on Debian: installs what is missing, then runs
#   bash tests/run.sh -k nginx -x     # extra arguments go to pytest
#
# Steps: apt packages (nginx, php-fpm, libfcgi-bin, spawn-fcgi, wrk, apache2-bin, lighttpd)
# when missing, a .venv with the project and its test extra, ruff (lint and format), mypy
# --strict, then pytest (and the protocol and adapter tests again on the pure-Python
# references of the C accelerators, requiring 100% branch coverage of fcgi_async/protocol/).
# Needs no stdin. The tests start and stop their own nginx, php-fpm, Apache httpd, lighttpd
# and fcgi-async processes.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="$ROOT/.venv"
APT_PACKAGES=(nginx php8.2-fpm libfcgi-bin spawn-fcgi wrk python3-venv apache2-bin lighttpd)

step() { printf '\n==> %s\n' "$*" >&2; }

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
    step "apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # The tests start their own nginx, php-fpm, httpd and lighttpd on loopback: keep the
    # packages' system services from starting (and taking port 80) while they install.
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    apt-get update </dev/null
    apt-get install -y "${missing[@]}" </dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
    step "python3 -m venv $VENV"
    python3 -m venv "$VENV"
fi
step "pip install -e '.[test]'"
"$VENV/bin/python" -m pip install -q -e '.[test]' </dev/null

step "ruff check ."
"$VENV/bin/ruff" check .
step "ruff format --check ."
"$VENV/bin/ruff" format --check .
step "mypy (strict; files from pyproject.toml)"
"$VENV/bin/mypy"
step ".venv/bin/python -m pytest $*"
"$VENV/bin/python" -m pytest "$@" </dev/null
# The protocol suite once more on the pure-Python reference of the C accelerator, with 100%
# branch coverage of fcgi_async/protocol/ required (the selectors of the C paths are covered too).
COV_ARGS="--cov=fcgi_async.protocol --cov-branch --cov-report=term-missing:skip-covered"
step "FCGI_ASYNC_NO_SPEEDUPS=1 .venv/bin/python -m pytest -q tests/protocol $COV_ARGS --cov-fail-under=100"
# shellcheck disable=SC2086 # COV_ARGS is several words on purpose
FCGI_ASYNC_NO_SPEEDUPS=1 "$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/protocol \
    $COV_ARGS --cov-fail-under=100 </dev/null
# The adapter suite once more on the pure-Python reference of the ASGI scope accelerator.
step "FCGI_ASYNC_NO_SPEEDUPS=1 .venv/bin/python -m pytest -q tests/adapters"
FCGI_ASYNC_NO_SPEEDUPS=1 "$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/adapters </dev/null
