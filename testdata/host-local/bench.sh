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
    # DEL of a container that holds nothing here (a repeated DEL): ferry has no owner hint
    # and must scan, as the reference always does.
    hyperfine --warmup 5 --runs "$RUNS" --export-markdown "$OUT/del-unknown-$n.md" --export-json "$OUT/del-unknown-$n.json" \
        -n "ferry DEL, unknown container ($n leases)" \
        "CNI_CONTAINERID=nosuch CNI_NETNS=/x CNI_IFNAME=eth0 CNI_PATH=/usr/lib/cni CNI_COMMAND=DEL $FERRY <$WORK/ferry-$n.json" \
        -n "reference DEL, unknown container ($n leases)" \
        "CNI_CONTAINERID=nosuch CNI_NETNS=/x CNI_IFNAME=eth0 CNI_PATH=/usr/lib/cni CNI_COMMAND=DEL $REF <$WORK/ref-$n.json"
done
# No shell at all: the variable is in hyperfine's own environment.
CNI_COMMAND=VERSION hyperfine -N --warmup 20 --runs "$RUNS" --export-markdown "$OUT/version.md" \
    --export-json "$OUT/version.json" -n "ferry VERSION" "$FERRY" -n "reference VERSION" "$REF" \
    -n "baseline /bin/true (exec cost)" /bin/true
# One table: median wall time (robust on a shared machine), mean CPU time (user+sys, less
# sensitive to other load), and the ratio reference/ferry of each.
python3 - "$OUT" <<'PY'
import json, os, sys
out = sys.argv[1]
print(f"{'benchmark':18} {'ferry wall':>10} {'ref wall':>9} {'ratio':>6} {'ferry cpu':>10} {'ref cpu':>8} {'ratio':>6}   (ms)")
for case in ["add-del-10", "add-del-5000", "add-10", "add-5000", "del-unknown-10", "del-unknown-5000", "version"]:
    rs = json.load(open(os.path.join(out, case + ".json")))["results"]
    by = {r["command"].split()[0]: r for r in rs}
    f, r = by["ferry"], by["reference"]
    fw, rw = f["median"] * 1000, r["median"] * 1000
    fc, rc = (f["user"] + f["system"]) * 1000, (r["user"] + r["system"]) * 1000
    print(f"{case:18} {fw:10.2f} {rw:9.2f} {rw / fw:6.1f} {fc:10.2f} {rc:8.2f} {rc / fc:6.1f}")
PY
echo "results: $OUT"
