#!/usr/bin/env bash
# A throwaway PostgreSQL server for archgram's database tests: a fresh
# cluster in a temporary folder, trust authentication, listening on
# 127.0.0.1 at a free port (and a Unix socket in the same folder), no
# durability (fsync off: nothing in it outlives the tests).
#
#   scripts/pg-throwaway.sh run CMD [ARG...]
#       starts a server, runs CMD with ARCHGRAM_TEST_PG set to its URL,
#       then stops it and removes the folder (also on failure or Ctrl-C);
#       exits with CMD's status
#   eval "$(scripts/pg-throwaway.sh start)"
#       starts a server and prints `export` lines for ARCHGRAM_TEST_PG and
#       ARCHGRAM_PG_DIR (the folder); the server runs until
#   scripts/pg-throwaway.sh stop "$ARCHGRAM_PG_DIR"
#       stops it and removes the folder
#
# initdb refuses to run as root, so as root the server runs as the
# `postgres` user (which Debian's postgresql package creates). Finds
# initdb on PATH or under /usr/lib/postgresql/*/bin (where Debian puts it).
# Set PG_THROWAWAY_DURABLE=1 to keep fsync on (for timing writes as a real
# server would make them).
set -euo pipefail

die() {
    echo "pg-throwaway: $*" >&2
    exit 1
}

# The folder holding initdb, pg_ctl and postgres. (Every `return` here
# says 0: a bare one inside the EXIT trap would return the status the
# script is exiting with, and `set -e` would end the cleanup there.)
pg_bin() {
    if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
        dirname "$(command -v initdb)"
        return 0
    fi
    local d
    d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    [ -n "$d" ] && [ -x "$d/initdb" ] || die "initdb not found (install PostgreSQL: apt-get install postgresql)"
    echo "$d"
}

# Runs a command as the server's user: `postgres` when we are root.
as_owner() {
    if [ "$(id -u)" -eq 0 ]; then
        id postgres >/dev/null 2>&1 || die "running as root and there is no \`postgres\` user to run the server as"
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

# A TCP port on 127.0.0.1 that nothing listens on now.
free_port() {
    local p
    for _ in $(seq 50); do
        p=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return 0
        fi
    done
    die "no free TCP port found"
}

start() {
    local bin dir port fsync=off
    bin=$(pg_bin)
    # In /tmp rather than $TMPDIR, which may be a folder the postgres user
    # cannot enter.
    dir=$(mktemp -d /tmp/archgram-pg.XXXXXX)
    chmod 700 "$dir"
    if [ "$(id -u)" -eq 0 ]; then
        chown postgres: "$dir" 2>/dev/null || { rm -rf "$dir"; die "cannot give $dir to the postgres user"; }
    fi
    if ! as_owner "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --locale=C \
        >"$dir/initdb.log" 2>&1; then
        cat "$dir/initdb.log" >&2
        rm -rf "$dir"
        die "initdb failed"
    fi
    [ "${PG_THROWAWAY_DURABLE:-}" = 1 ] && fsync=on
    # A port can be taken between the probe and the server's bind: try again.
    for _ in 1 2 3 4 5; do
        port=$(free_port)
        if as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start \
            -o "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories=$dir \
                -c fsync=$fsync -c synchronous_commit=$fsync -c full_page_writes=$fsync \
                -c max_connections=200" >/dev/null 2>&1; then
            echo "export ARCHGRAM_TEST_PG='postgres://postgres@127.0.0.1:$port/postgres'"
            echo "export ARCHGRAM_PG_DIR='$dir'"
            return 0
        fi
    done
    cat "$dir/server.log" >&2 || true
    rm -rf "$dir"
    die "the server did not start"
}

stop() {
    local dir=${1:-} bin
    [ -n "$dir" ] && [ -d "$dir/data" ] || die "stop: $dir is not a throwaway server's folder"
    bin=$(pg_bin)
    as_owner "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
    rm -rf "$dir"
}

case "${1:-}" in
start)
    start
    ;;
stop)
    stop "${2:-}"
    ;;
run)
    shift
    [ $# -gt 0 ] || die "run: no command given"
    eval "$(start)"
    trap 'stop "$ARCHGRAM_PG_DIR"' EXIT
    trap 'exit 130' INT TERM
    echo "pg-throwaway: server at $ARCHGRAM_TEST_PG" >&2
    status=0
    "$@" || status=$?
    exit "$status"
    ;;
*)
    die "usage: $0 start | stop DIR | run CMD [ARG...]"
    ;;
esac
