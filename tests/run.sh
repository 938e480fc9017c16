#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it (.ci/run calls this script).
#
#   bash tests/run.sh                 # as root on Debian: installs what is missing, then runs
#   bash tests/run.sh -k nginx -x     # extra arguments go to pytest
#   bash tests/run.sh --python 3.12   # only pytest, on that Python (its own venv, .venv312)
#   bash tests/run.sh --matrix        # the default run, then pytest on every other Python
#                                     # (also FCGI_ASYNC_MATRIX=1)
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
# The Pythons we support (pyproject.toml's requires-python and classifiers). The default run
# (ruff, mypy, pytest, the coverage runs) is on MAIN_PYTHON, in .venv.
MAIN_PYTHON=3.11
OTHER_PYTHONS=(3.10 3.12 3.13)
# What the default run (and so CI) adds on the other Pythons: the whole pytest suite on the
# oldest and the newest. Measured on this project's 2-core machine, otherwise idle: pytest took
# 238 s on 3.10, 253 s on 3.12, 263 s on 3.13, and the 3.11 steps ~230 s; the default run
# (3.11 + 3.10 + 3.13) took 751 s, --matrix would take ~17 min. 3.12.1 shares 3.13.0's asyncio
# bugs that mattered (CPython gh-127655), so it runs with --matrix only, to keep .ci/run far
# from its 30 minutes on a noisy machine (a failing 3.13 run took 410 s).
DEFAULT_EXTRA_PYTHONS=(3.10 3.13)

ONLY_PYTHON=""
MATRIX="${FCGI_ASYNC_MATRIX:-0}"
case "${1:-}" in
    --python)
        ONLY_PYTHON="${2:?tests/run.sh: --python needs a version, e.g. --python 3.12}"
        shift 2
        ;;
    --matrix)
        MATRIX=1
        shift
        ;;
esac

step() { printf '\n==> %s\n' "$*" >&2; }

# find_python X.Y: the path of a working pythonX.Y (PATH, then pyenv), or nothing.
find_python() {
    local candidate
    for candidate in "$(command -v "python$1" || true)" "$HOME"/.pyenv/versions/"$1".*/bin/python"$1"; do
        if [ -n "$candidate" ] && [ -x "$candidate" ] && "$candidate" -c 'import sys' >/dev/null 2>&1; then
            echo "$candidate"
            return
        fi
    done
}

# run_pytest_on X.Y [pytest args]: the whole pytest suite on Python X.Y, in its own venv
# (.venv310, .venv312, ...; .venv for MAIN_PYTHON). A missing interpreter fails the run in
# CI (CI=true) and is skipped with a notice elsewhere.
run_pytest_on() {
    local version="$1" python venv
    shift
    python="$(find_python "$version")"
    if [ -z "$python" ]; then
        if [ "${CI:-}" = "true" ]; then
            echo "tests/run.sh: python$version not found (PATH, ~/.pyenv/versions/$version.*/bin)" >&2
            exit 1
        fi
        step "NOTICE: python$version not found (PATH, ~/.pyenv/versions/$version.*/bin): its run is SKIPPED"
        return
    fi
    if [ "$version" = "$MAIN_PYTHON" ]; then
        venv="$VENV"
    else
        venv="$ROOT/.venv${version//./}"
    fi
    if [ ! -x "$venv/bin/python" ]; then
        step "$python -m venv $venv"
        "$python" -m venv "$venv"
    fi
    step "pip install -e '.[test]' (Python $version)"
    "$venv/bin/python" -m pip install -q -e '.[test]' </dev/null
    step "$(basename "$venv")/bin/python -m pytest -q $* (Python $version)"
    local started=$SECONDS
    "$venv/bin/python" -m pytest -q -p no:cacheprovider "$@" </dev/null
    step "Python $version: pytest took $((SECONDS - started)) s"
}

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

if [ -n "$ONLY_PYTHON" ]; then
    run_pytest_on "$ONLY_PYTHON" "$@"
    exit 0
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

# The other Pythons, each in its own venv: their asyncio differs where it matters (3.12.0-3.12.8
# and 3.13.0-3.13.1 writelines() never pauses the protocol, 3.13 and uvloop 0.22+ unlink unix
# socket files at close, 3.10 lacks tomllib and asyncio.timeout). The default run covers the
# oldest and the newest, --matrix all of them.
if [ "$MATRIX" = "1" ]; then
    EXTRA_PYTHONS=("${OTHER_PYTHONS[@]}")
else
    EXTRA_PYTHONS=("${DEFAULT_EXTRA_PYTHONS[@]}")
fi
for version in "${EXTRA_PYTHONS[@]}"; do
    run_pytest_on "$version" "$@"
done
