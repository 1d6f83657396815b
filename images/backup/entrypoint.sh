#!/bin/sh
# Entrypoint of the backup image: as root, create the data directory if needed and chown what is
# not owned by squall (1000:1000) yet; then run the command (default `squall-backup run`) as squall.
set -eu
data=${PDS_DATA_DIRECTORY:-/data}
if [ "$(id -u)" = 0 ]; then
    mkdir -p "$data"
    find "$data" \( ! -user 1000 -o ! -group 1000 \) -exec chown -h 1000:1000 {} +
fi
if ! /usr/local/lib/squall/as-squall test -w "$data"; then
    printf 'squall-backup-entrypoint: the data directory %s is not writable by uid 1000\n' "$data" >&2
    exit 1
fi
[ "$#" -gt 0 ] || set -- squall-backup run
# On a first boot the PDS may not have created pds.sqlite yet: the daemon itself waits for it
# (status "waiting", looking again every few seconds), already without root.
exec /usr/local/lib/squall/as-squall "$@"
