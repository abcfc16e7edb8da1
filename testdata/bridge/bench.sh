#!/bin/sh
# bridge + host-local ADD and DEL: ferry beside the reference, same run, same kernel.
#
# usage: bench.sh FERRY_BIN_DIR [REFERENCE_BIN_DIR] [RESULTS_DIR]
#   FERRY_BIN_DIR holds ferry's `bridge` and `host-local` (e.g. target/release);
#   REFERENCE_BIN_DIR defaults to /usr/lib/cni. Needs root and hyperfine.
#
# Everything runs inside a throw-away "host" namespace (its own bridges, sysctls and
# firewall), so the real host is never touched; containers are namespaces made here.
# ADD is timed with the DEL in --prepare and the other way round; each plugin uses its
# own IPAM (ferry with ferry's host-local, reference with the reference's).
# Cases: plain, with ipMasq (iptables), and 50 ADDs (then 50 DELs) in parallel.
set -eu
FERRY=${1:?usage: bench.sh FERRY_BIN_DIR [REFERENCE_BIN_DIR] [RESULTS_DIR]}
REF=${2:-/usr/lib/cni}
OUT=${3:-$(mktemp -d /tmp/fbr-bench-results.XXXXXX)}
RUNS=${RUNS:-60}
PAR=${PAR:-50}
WORK=$(mktemp -d /tmp/fbr-bench.XXXXXX)
HOST=fbr-bench-host-$$
cleanup() {
    ip netns del "$HOST" 2>/dev/null || true
    i=0
    while [ "$i" -lt "$PAR" ]; do ip netns del "fbr-bench-c$$-$i" 2>/dev/null || true; i=$((i + 1)); done
    rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p "$OUT" "$WORK/ferry" "$WORK/ref"
ln -s "$(realpath "$FERRY/host-local")" "$WORK/ferry/host-local"
ln -s "$(realpath "$REF/host-local")" "$WORK/ref/host-local"
ip netns add "$HOST"
ip -n "$HOST" link set lo up
i=0
while [ "$i" -lt "$PAR" ]; do ip netns add "fbr-bench-c$$-$i"; i=$((i + 1)); done

conf() { # name masq -> file
    printf '{"cniVersion":"1.0.0","name":"%s","type":"bridge","bridge":"fbrbench0","isGateway":true,"ipMasq":%s,"ipam":{"type":"host-local","dataDir":"%s/data","ranges":[[{"subnet":"10.213.19.0/24"}]]}}' \
        "$1" "$2" "$WORK" >"$WORK/$1.json"
    echo "$WORK/$1.json"
}

call() { # bin ipamdir cmd conf container-index
    echo "CNI_COMMAND=$3 CNI_CONTAINERID=bench$5 CNI_NETNS=/var/run/netns/fbr-bench-c$$-$5 CNI_IFNAME=eth0 CNI_PATH=$2 $1 <$4 >/dev/null"
}

run_in_host() {
    ip netns exec "$HOST" "$@"
}

for masq in false true; do
    c=$(conf "fbrbench-masq-$masq" "$masq")
    tag=$([ "$masq" = true ] && echo " +ipMasq" || echo "")
    run_in_host hyperfine --warmup 5 --runs "$RUNS" --export-markdown "$OUT/add-masq-$masq.md" \
        -n "ferry ADD$tag" --prepare "$(call "$FERRY/bridge" "$WORK/ferry" DEL "$c" 0)" "$(call "$FERRY/bridge" "$WORK/ferry" ADD "$c" 0)" \
        -n "reference ADD$tag" --prepare "$(call "$REF/bridge" "$WORK/ref" DEL "$c" 0)" "$(call "$REF/bridge" "$WORK/ref" ADD "$c" 0)"
    run_in_host sh -c "$(call "$REF/bridge" "$WORK/ref" DEL "$c" 0)"
    run_in_host hyperfine --warmup 5 --runs "$RUNS" --export-markdown "$OUT/del-masq-$masq.md" \
        -n "ferry DEL$tag" --prepare "$(call "$FERRY/bridge" "$WORK/ferry" ADD "$c" 0)" "$(call "$FERRY/bridge" "$WORK/ferry" DEL "$c" 0)" \
        -n "reference DEL$tag" --prepare "$(call "$REF/bridge" "$WORK/ref" ADD "$c" 0)" "$(call "$REF/bridge" "$WORK/ref" DEL "$c" 0)"
done

# PAR ADDs at once into one bridge, then PAR DELs at once.
c=$(conf fbrbench-par false)
par() { # bin ipamdir cmd
    i=0
    while [ "$i" -lt "$PAR" ]; do
        echo "$(call "$1" "$2" "$3" "$c" "$i")"
        i=$((i + 1))
    done >"$WORK/par-$3.sh.lines"
    # one background job per line, then wait for all
    { sed 's/$/ \&/' "$WORK/par-$3.sh.lines"; echo wait; } >"$WORK/par-$3.sh"
    echo "sh $WORK/par-$3.sh"
}
for impl in ferry ref; do
    if [ "$impl" = ferry ]; then bin="$FERRY/bridge"; else bin="$REF/bridge"; fi
    add=$(par "$bin" "$WORK/$impl" ADD)
    del=$(par "$bin" "$WORK/$impl" DEL)
    run_in_host hyperfine --warmup 1 --runs "${PAR_RUNS:-5}" --export-markdown "$OUT/par-$impl.md" \
        -n "$impl $PAR parallel ADD" --prepare "$del" "$add" \
        -n "$impl $PAR parallel DEL" --prepare "$add" "$del"
    run_in_host sh -c "$del"
done
echo "results in $OUT"
