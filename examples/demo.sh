#!/usr/bin/env bash
# The fcgi-async demo: the example Flask and Starlette apps, each served by fcgi-async on a
# unix socket, behind a real nginx on http://127.0.0.1:${PORT:-8080}/.
#
#   bash examples/demo.sh            # on a fresh Debian machine, as root; Ctrl-C stops it
#   PORT=9090 bash examples/demo.sh  # another port
#
# Installs what is missing (nginx and python3-venv with apt, the project into .venv with pip),
# then runs until Ctrl-C or SIGTERM and stops everything it started. Needs no stdin.
set -euo pipefail

PORT="${PORT:-8080}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NGINX=/usr/sbin/nginx
VENV="$ROOT/.venv"

say() { printf 'demo: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

apt_install() {
    [ "$(id -u)" -eq 0 ] || die "$* missing; run as root (or install: apt-get install $*)"
    say "installing $* with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q </dev/null
    apt-get install -y -q "$@" </dev/null
}

# --- prerequisites ---------------------------------------------------------------------------
[ -x "$NGINX" ] || apt_install nginx
if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    apt_install python3 python3-venv
fi
if ! "$VENV/bin/python" -c 'import fcgi_async, flask, starlette, multipart' 2>/dev/null; then
    [ -x "$VENV/bin/python" ] || { say "creating $VENV"; python3 -m venv "$VENV"; }
    say "installing the project into $VENV"
    (cd "$ROOT" && "$VENV/bin/pip" install -q -e '.[test]' </dev/null)
fi

# A port someone else serves on would make nginx fail with a less clear message.
if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
    die "127.0.0.1:$PORT is in use; choose another port with PORT=..."
fi

# --- run -------------------------------------------------------------------------------------
RUN_DIR="$(mktemp -d /tmp/fcgi-async-demo.XXXXXX)"
PIDS=()

cleanup() {
    trap - EXIT INT TERM
    say "stopping"
    local pid
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$RUN_DIR"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

wait_for() {  # wait_for WHAT PID COMMAND...: poll COMMAND for up to 15 s while PID lives
    local what="$1" pid="$2" deadline=$((SECONDS + 15))
    shift 2
    until "$@" 2>/dev/null; do
        kill -0 "$pid" 2>/dev/null || die "$what exited; its log: $RUN_DIR/$what.log"$'\n'"$(tail -n 20 "$RUN_DIR/$what.log" 2>/dev/null)"
        [ "$SECONDS" -lt "$deadline" ] || die "$what not ready after 15 s"
        sleep 0.1
    done
}

unix_connect() {
    "$VENV/bin/python" -c 'import socket, sys; socket.socket(socket.AF_UNIX).connect(sys.argv[1])' "$1"
}

for app in flask starlette; do
    "$VENV/bin/python" -m fcgi_async "${app}_app:app" --app-dir "$ROOT/examples" \
        --bind "unix:$RUN_DIR/$app.sock" </dev/null >"$RUN_DIR/$app.log" 2>&1 &
    PIDS+=("$!")
    wait_for "$app" "$!" unix_connect "$RUN_DIR/$app.sock"
done

sed -e "s|__RUN_DIR__|$RUN_DIR|g" -e "s|__PORT__|$PORT|g" \
    "$ROOT/examples/nginx.conf" >"$RUN_DIR/nginx.conf"
GLOBALS="daemon off;"
# As root, nginx's workers would run as "nobody" and could not reach our sockets.
[ "$(id -u)" -ne 0 ] || GLOBALS="$GLOBALS user root;"
NGINX_ARGS=(-p "$RUN_DIR" -e "$RUN_DIR/nginx-error.log" -c "$RUN_DIR/nginx.conf" -g "$GLOBALS")
"$NGINX" -t -q "${NGINX_ARGS[@]}" >"$RUN_DIR/nginx.log" 2>&1 \
    || die "nginx rejected the config: $(cat "$RUN_DIR/nginx.log")"
"$NGINX" "${NGINX_ARGS[@]}" </dev/null >>"$RUN_DIR/nginx.log" 2>&1 &
PIDS+=("$!")
wait_for nginx "$!" bash -c "exec 3<>/dev/tcp/127.0.0.1/$PORT"

cat <<EOF

  fcgi-async demo is running (logs in $RUN_DIR):

    http://127.0.0.1:$PORT/flask/       Flask       (examples/flask_app.py)
    http://127.0.0.1:$PORT/starlette/   Starlette   (examples/starlette_app.py)

  Try:  curl http://127.0.0.1:$PORT/starlette/api/items
        curl -N http://127.0.0.1:$PORT/flask/stream
        curl -F file=@/etc/hostname http://127.0.0.1:$PORT/flask/upload

  Ctrl-C (or SIGTERM) stops everything.

EOF

# Until a signal arrives or one of the processes dies (then say which and stop the rest).
set +e
wait -n "${PIDS[@]}"
status=$?
set -e
names=(flask starlette nginx)
for i in "${!PIDS[@]}"; do
    if ! kill -0 "${PIDS[$i]}" 2>/dev/null; then
        say "${names[$i]} exited (status $status); its log: $(tail -n 20 "$RUN_DIR/${names[$i]}.log" 2>/dev/null)"
    fi
done
exit 1
