#!/bin/sh
# Make a Temporal namespace ready for genie-worker: the namespace exists and our search
# attributes are registered with the right types. Idempotent: compose runs it on every
# `docker compose up` (service temporal-init); it also works by hand against any cluster
# the `temporal` CLI can reach.
#
#   init.sh NAME=TYPE [NAME=TYPE ...]        e.g. init.sh GenieHandle=Keyword
#
# Environment: TEMPORAL_ADDRESS (host:port, default temporal:7233), TEMPORAL_NAMESPACE
# (default "default"), TEMPORAL_NAMESPACE_RETENTION (for a namespace this creates;
# default 168h), TEMPORAL_INIT_TIMEOUT (seconds to wait for each step; default 120).
# Needs a POSIX shell, sed, tr, grep and the `temporal` CLI (all in
# temporalio/admin-tools).
set -eu

log() { echo "temporal-init: $*" >&2; }

if [ "$#" -eq 0 ]; then
    log "usage: $0 NAME=TYPE [NAME=TYPE ...]"
    exit 2
fi
for pair in "$@"; do
    case "$pair" in
    *[!A-Za-z0-9_=]* | *=*=* | =* | *=) bad=1 ;;
    *=*) bad= ;;
    *) bad=1 ;;
    esac
    if [ -n "$bad" ]; then
        log "bad argument '$pair' (want NAME=TYPE: letters, digits and _ only)"
        exit 2
    fi
done

address="${TEMPORAL_ADDRESS:-temporal:7233}"
namespace="${TEMPORAL_NAMESPACE:-default}"
retention="${TEMPORAL_NAMESPACE_RETENTION:-168h}"
timeout="${TEMPORAL_INIT_TIMEOUT:-120}"

cli() {
    temporal "$@" --address "$address"
}

# Run "$@" until it succeeds or $timeout seconds pass: the server may still be starting,
# and a new namespace takes a few seconds to reach every frontend's cache.
retry() {
    what="$1"
    shift
    deadline=$(($(date +%s) + timeout))
    until "$@"; do
        if [ "$(date +%s)" -ge "$deadline" ]; then
            log "gave up after ${timeout}s: $what"
            return 1
        fi
        log "waiting: $what"
        sleep 2
    done
}

retry "server $address serving" cli operator cluster health >/dev/null

if cli operator namespace describe --namespace "$namespace" >/dev/null 2>&1; then
    log "namespace $namespace exists"
else
    log "creating namespace $namespace (retention $retention)"
    # Another creator may win the race: the describe below is the real check.
    cli operator namespace create --namespace "$namespace" --retention "$retention" || true
    retry "namespace $namespace visible" \
        cli operator namespace describe --namespace "$namespace" >/dev/null
fi

# Sets $listing to the namespace's search attributes, "NAME INDEXED_VALUE_TYPE_X" per
# line (from the CLI's JSON, pretty-printed or not); fails if the server cannot answer.
# shellcheck disable=SC2329  # called through retry
list_attributes() {
    json="$(cli operator search-attribute list --namespace "$namespace" --output json)" ||
        return 1
    # shellcheck disable=SC2020  # three characters to three newlines, as intended
    listing="$(printf '%s\n' "$json" | tr ',{}' '\n\n\n' |
        sed -n 's/^[[:space:]]*"\([A-Za-z0-9_]*\)":[[:space:]]*"\(INDEXED_VALUE_TYPE_[A-Z_]*\)".*/\1 \2/p')"
}

# Keyword -> INDEXED_VALUE_TYPE_KEYWORD (the CLI takes the one, the API lists the other).
indexed_type() {
    printf 'INDEXED_VALUE_TYPE_%s' "$(printf '%s' "$1" | tr '[:lower:]' '[:upper:]')"
}

# One create call for every attribute in $missing (each call makes the server refresh
# its metadata, about a second), then succeed once the server lists them all.
# shellcheck disable=SC2329  # called through retry
register_missing() {
    args=""
    for pair in $missing; do
        args="$args --name ${pair%%=*} --type ${pair#*=}"
    done
    # shellcheck disable=SC2086  # word splitting intended: the names were validated
    cli operator search-attribute create --namespace "$namespace" $args >/dev/null 2>&1 || true
    list_attributes || return 1
    for pair in $missing; do
        printf '%s\n' "$listing" | grep -qx "${pair%%=*} $(indexed_type "${pair#*=}")" ||
            return 1
    done
}

retry "search attributes of $namespace readable" list_attributes
missing=""
status=0
for pair in "$@"; do
    name="${pair%%=*}"
    want="$(indexed_type "${pair#*=}")"
    have="$(printf '%s\n' "$listing" | sed -n "s/^$name //p")"
    if [ "$have" = "$want" ]; then
        log "search attribute $name is already ${pair#*=}"
    elif [ -n "$have" ]; then
        # Never papered over: the workflow's upserts would fail at run time.
        log "search attribute $name is $have on the server, want $want"
        status=1
    else
        missing="$missing $pair"
    fi
done
if [ -n "$missing" ]; then
    if retry "register search attributes:$missing" register_missing; then
        log "registered:$missing"
    else
        status=1
    fi
fi
exit "$status"
