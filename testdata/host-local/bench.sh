#!/bin/sh
# host-local ADD+DEL and VERSION: ferry beside the reference, same run, same data.
#
# usage: bench.sh FERRY_HOST_LOCAL [REFERENCE_HOST_LOCAL] [RESULTS_DIR]
#
# For each N in 10 and 5000 it builds two identical data directories (one per plugin) that
# already hold N reservations (as `<ip>` files with `<id>\r\neth0`, cursor after the last),
# then times one ADD followed by the DEL of the same container, and ADD alone (DEL in
# --prepare, untimed). Variables are set by the shell (no `env` exec); hyperfine subtracts
# its shell's start-up time. IPv6 /112 because a
# /20 of IPv4 cannot hold 5,000 leases; nothing touches the network.
set -eu
FERRY=${1:?usage: bench.sh FERRY_HOST_LOCAL [REFERENCE] [RESULTS_DIR]}
REF=${2:-/usr/lib/cni/host-local}
OUT=${3:-$(mktemp -d /tmp/fhl-bench-results.XXXXXX)}
WORK=$(mktemp -d /tmp/fhl-bench.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$OUT"
RUNS=${RUNS:-200}

populate() { # dir n
    d="$1/fhlbench"
    mkdir -p "$d"
    i=0
    while [ "$i" -lt "$2" ]; do
        printf 'bench%d\r\neth0' "$i" >"$d/$(printf 'fd00:213:64::%x' $((i + 2)))"
        i=$((i + 1))
    done
    printf 'fd00:213:64::%x' $(($2 + 1)) >"$d/last_reserved_ip.0"
    : >"$d/lock"
    printf '{"cniVersion":"1.0.0","name":"fhlbench","type":"host-local","ipam":{"type":"host-local","dataDir":"%s","ranges":[[{"subnet":"fd00:213:64::/112"}]]}}' "$1" >"$1.json"
}

ENV='CNI_CONTAINERID=benchctr CNI_NETNS=/var/run/netns/fhl-bench CNI_IFNAME=eth0 CNI_PATH=/usr/lib/cni'
for n in 10 5000; do
    populate "$WORK/ferry-$n" "$n"
    populate "$WORK/ref-$n" "$n"
    hyperfine --warmup 10 --runs "$RUNS" --export-markdown "$OUT/add-del-$n.md" --export-json "$OUT/add-del-$n.json" \
        -n "ferry ADD+DEL ($n leases)" \
        "$ENV CNI_COMMAND=ADD $FERRY <$WORK/ferry-$n.json >/dev/null && $ENV CNI_COMMAND=DEL $FERRY <$WORK/ferry-$n.json" \
        -n "reference ADD+DEL ($n leases)" \
        "$ENV CNI_COMMAND=ADD $REF <$WORK/ref-$n.json >/dev/null && $ENV CNI_COMMAND=DEL $REF <$WORK/ref-$n.json"
    hyperfine --warmup 10 --runs "$RUNS" --export-markdown "$OUT/add-$n.md" --export-json "$OUT/add-$n.json" \
        -n "ferry ADD ($n leases)" \
        --prepare "$ENV CNI_COMMAND=DEL $FERRY <$WORK/ferry-$n.json" \
        "$ENV CNI_COMMAND=ADD $FERRY <$WORK/ferry-$n.json >/dev/null" \
        -n "reference ADD ($n leases)" \
        --prepare "$ENV CNI_COMMAND=DEL $REF <$WORK/ref-$n.json" \
        "$ENV CNI_COMMAND=ADD $REF <$WORK/ref-$n.json >/dev/null"
done
# No shell at all: the variable is in hyperfine's own environment.
CNI_COMMAND=VERSION hyperfine -N --warmup 20 --runs "$RUNS" --export-markdown "$OUT/version.md" \
    --export-json "$OUT/version.json" -n "ferry VERSION" "$FERRY" -n "reference VERSION" "$REF" \
    -n "baseline /bin/true (exec cost)" /bin/true
echo "results: $OUT"
