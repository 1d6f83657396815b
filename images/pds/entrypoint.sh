#!/bin/sh
# Entrypoint of the pds image.
#
# Starts as root only to make the data directory belong to squall (1000:1000): it creates it if
# needed and chowns whatever is not owned by squall yet (a fresh volume is root-owned on Railway;
# files restored or copied in by root). Then every process runs as squall.
#
# Modes:
#   command     (default) run the CMD, e.g. `squall serve`, as squall.
#   all-in-one  supervisord runs `squall serve` and `squall-backup run`; the container exits
#               non-zero when either fails for good. Chosen by SQUALL_MODE=all-in-one, by the
#               command `all-in-one`, or automatically on Railway (RAILWAY_* variables present)
#               when the command is the default `squall serve`.
set -eu

SQUALL_UID=1000
SQUALL_GID=1000
data=${PDS_DATA_DIRECTORY:-/data}

say() { printf 'squall-entrypoint: %s\n' "$*" >&2; }

prepare_data() {
    if [ "$(id -u)" = 0 ]; then
        mkdir -p "$data"
        # Only what is not ours yet, so a large blob tree costs a stat per file, not a write.
        find "$data" \( ! -user "$SQUALL_UID" -o ! -group "$SQUALL_GID" \) \
            -exec chown -h "$SQUALL_UID:$SQUALL_GID" {} +
    fi
    if ! /usr/local/lib/squall/as-squall test -w "$data"; then
        say "the data directory $data is not writable by uid $SQUALL_UID (start the container as root once, or chown it to $SQUALL_UID:$SQUALL_GID)"
        exit 1
    fi
    blobs=${PDS_BLOBSTORE_DISK_LOCATION:-}
    case "$blobs" in
        ""|"$data"|"$data"/*) ;;
        *) say "warning: PDS_BLOBSTORE_DISK_LOCATION=$blobs is outside $data; blobs there are not in the volume or the backups" ;;
    esac
}

run_all_in_one() {
    # Railway's edge terminates TLS and sets X-Forwarded-*; nothing else can reach the port.
    export PDS_TRUST_PROXY_HEADERS="${PDS_TRUST_PROXY_HEADERS:-true}"
    rundir=/tmp/squall-supervisor
    rm -rf "$rundir"
    install -d -o "$SQUALL_UID" -g "$SQUALL_GID" -m 0700 "$rundir" 2>/dev/null || mkdir -p "$rundir"
    export SQUALL_FATAL_MARKER="$rundir/fatal"
    # supervisord reopens /dev/stdout and /dev/stderr for the programs' logs; as squall it may only
    # do so if it owns them (they are the container runtime's pipes, created by root).
    # (No 2>/dev/null here: the shell would apply it to its own fd 2 before chown looks at it.)
    chown "$SQUALL_UID:$SQUALL_GID" "/proc/$$/fd/1" "/proc/$$/fd/2" || say "warning: cannot hand stdout/stderr to uid $SQUALL_UID; program logs may be lost"
    /usr/local/lib/squall/as-squall /opt/venv/bin/supervisord -c /etc/squall/supervisord.conf &
    child=$!
    # We stay PID 1 to read the verdict after supervisord stops, so pass the stop signals on.
    trap 'kill -TERM "$child" 2>/dev/null || true' TERM INT HUP
    status=0
    while :; do
        if wait "$child"; then status=0; else status=$?; fi
        kill -0 "$child" 2>/dev/null || break
    done
    if [ -s "$SQUALL_FATAL_MARKER" ]; then
        say "program '$(cat "$SQUALL_FATAL_MARKER")' failed for good; exiting with status 1 so the platform restarts the container"
        exit 1
    fi
    exit "$status"
}

mode=${SQUALL_MODE:-}
if [ "${1:-}" = all-in-one ]; then
    mode=all-in-one
elif [ -z "$mode" ]; then
    mode=command
    if [ -n "${RAILWAY_SERVICE_ID:-}${RAILWAY_PROJECT_ID:-}${RAILWAY_ENVIRONMENT_ID:-}" ] && [ "$*" = "squall serve" ]; then
        mode=all-in-one
    fi
fi

case "$mode" in
    all-in-one)
        prepare_data
        run_all_in_one
        ;;
    command)
        [ "$#" -gt 0 ] || set -- squall serve
        prepare_data
        exec /usr/local/lib/squall/as-squall "$@"
        ;;
    *)
        say "SQUALL_MODE=$mode: unknown mode (use 'command' or 'all-in-one')"
        exit 2
        ;;
esac
