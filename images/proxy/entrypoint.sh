#!/bin/sh
# Entrypoint of the proxy image: pick the Caddyfile for the environment and run Caddy.
#
#   PDS_HOSTNAME          the PDS's name (default localhost)
#   SQUALL_PROXY_PROFILE  auto (default) | public | lan
#                         auto = lan for localhost, an IP address, a single-label name or a
#                         LAN-only suffix (.local .lan .home .internal .localhost .test), else public
#   ACME_EMAIL            ACME account e-mail; required by the public profile
# POSIX sh only: the official caddy image is Alpine (busybox).
set -eu

say() { printf 'squall-proxy: %s\n' "$*" >&2; }

host=$(printf '%s' "${PDS_HOSTNAME:-localhost}" | tr 'A-Z' 'a-z')
[ -n "$host" ] || host=localhost

# The name goes into the Caddyfile as text: allow host-name and IP characters only.
case "$host" in
    *[!a-z0-9.:-]*|.*|*..*)
        say "PDS_HOSTNAME=$host is not a host name (no scheme, port or path)"; exit 2 ;;
esac

is_ip=no
case "$host" in
    *:*) is_ip=yes ;;                  # IPv6
    *[!0-9.]*) ;;                      # has a letter or a dash: a name
    *) is_ip=yes ;;                    # digits and dots: IPv4
esac

is_local=no
if [ "$is_ip" = yes ]; then
    is_local=yes
else
    case "$host" in
        localhost|*.local|*.lan|*.home|*.internal|*.localhost|*.test) is_local=yes ;;
        *.*) ;;
        *) is_local=yes ;;             # a single label never resolves on the public internet
    esac
fi

profile=${SQUALL_PROXY_PROFILE:-auto}
if [ "$profile" = auto ]; then
    if [ "$is_local" = yes ]; then profile=lan; else profile=public; fi
fi

case "$profile" in
    lan) ;;
    public)
        if [ "$is_local" = yes ]; then
            say "the public profile needs a public PDS_HOSTNAME with DNS records; $host is local (use SQUALL_PROXY_PROFILE=lan)"
            exit 2
        fi
        if [ -z "${ACME_EMAIL:-}" ]; then
            say "the public profile needs ACME_EMAIL (the contact address for certificates) in .env"
            exit 2
        fi
        case "$ACME_EMAIL" in
            *[!A-Za-z0-9@._+-]*|*@*@*) say "ACME_EMAIL=$ACME_EMAIL is not an e-mail address"; exit 2 ;;
            ?*@?*.?*) ;;
            *) say "ACME_EMAIL=$ACME_EMAIL is not an e-mail address"; exit 2 ;;
        esac
        ;;
    *)
        say "SQUALL_PROXY_PROFILE=$profile: use auto, public or lan"; exit 2 ;;
esac

if [ "$is_ip" = yes ]; then
    sites=$host
    case "$host" in *:*) sites="[$host]" ;; esac
else
    sites="$host, *.$host"
fi
export PDS_HOSTNAME="$host" SQUALL_SITES="$sites"

config="/etc/caddy/Caddyfile.$profile"
say "profile $profile for $sites"
case "${1:-}" in
    "") exec caddy run --config "$config" --adapter caddyfile ;;
    # The JSON Caddy would run, for checking a setup: docker compose run --rm proxy print-config
    print-config) exec caddy adapt --config "$config" --adapter caddyfile --pretty ;;
    *) exec "$@" ;;
esac
