#!/bin/sh
# portmap ADD/DEL cost with 0 and N existing mappings, ferry (both backends) beside the
# reference, measured in the same run. Everything happens in private network namespaces.
# usage: bench-add.sh [ferry-portmap-binary] [N]   (root; needs hyperfine, jq)
# The N existing mappings use host ports 30000+i: they exist only as rules inside the
# private namespaces, nothing binds them.
set -eu
FERRY=${1:-target/release/portmap}
N=${2:-1000}
REF=/usr/lib/cni/portmap
TMP=$(mktemp -d)
cookie() { # ns: its SO_NETNS_COOKIE, which names portmap's index /run/ferry/portmap/ns-<cookie>
	nsenter --net=/run/netns/"$1" python3 -c "import socket,struct;s=socket.socket(socket.AF_UNIX,socket.SOCK_DGRAM);print(struct.unpack('Q',s.getsockopt(socket.SOL_SOCKET,71,8))[0])"
}
cleanup() {
	for ns in $(ip netns list | awk '/^fpm-bench-/{print $1}'); do
		c=$(cookie "$ns") && [ -n "$c" ] && rm -rf "/run/ferry/portmap/ns-$c"
		ip netns del "$ns"
	done
	rm -rf "$TMP"
}
trap cleanup EXIT

conf() { # backend hostPort
	printf '{"cniVersion":"1.0.0","name":"benchnet","type":"portmap"%s,"runtimeConfig":{"portMappings":[{"hostPort":%s,"containerPort":80,"protocol":"tcp"}]},"prevResult":{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","sandbox":"/var/run/netns/x"}],"ips":[{"address":"10.213.40.5/24","interface":0}]}}' \
		"$( [ -n "$1" ] && printf ',"backend":"%s"' "$1")" "$2"
}

run() { # ns plugin command id conffile
	ip netns exec "$1" env CNI_COMMAND="$3" CNI_CONTAINERID="$4" CNI_NETNS=/var/run/netns/x CNI_IFNAME=eth0 CNI_PATH=/usr/lib/cni "$2" <"$5" >/dev/null
}

populate() { # ns backend count
	i=0
	while [ "$i" -lt "$3" ]; do
		conf "$2" $((30000 + i)) >"$TMP/p.json"
		run "$1" "$FERRY" ADD "pop$i" "$TMP/p.json"
		i=$((i + 1))
	done
}

hyperfine -N -w 3 -r 30 --style none --export-json "$TMP/sh.json" "sh -c true" >/dev/null 2>&1
echo "(each number includes starting sh: $(jq -r '.results[0].mean*1000*10|floor/10' "$TMP/sh.json") ms)"
for existing in 0 "$N"; do
	for case in ferry-iptables ferry-nftables reference; do
		ns=fpm-bench-$case-$existing
		ip netns add "$ns"
		case $case in
		ferry-iptables) be=iptables; bin=$FERRY ;;
		ferry-nftables) be=nftables; bin=$FERRY ;;
		reference) be=iptables; bin=$REF ;;
		esac
		populate "$ns" "$be" "$existing"
		conf "$( [ $case = reference ] && echo '' || echo $be)" 22999 >"$TMP/$case.json"
		add="sh -c 'CNI_COMMAND=ADD $bin <$TMP/$case.json >/dev/null'"
		del="sh -c 'CNI_COMMAND=DEL $bin <$TMP/$case.json >/dev/null'"
		# hyperfine itself runs in the namespace, so `ip netns exec` is not in the numbers.
		bench() { # prepare command json
			ip netns exec "$ns" env CNI_CONTAINERID=bench CNI_NETNS=/var/run/netns/x CNI_IFNAME=eth0 CNI_PATH=/usr/lib/cni \
				hyperfine -N -w 3 -r 30 --style none --export-json "$3" --prepare "$1" "$2" >/dev/null 2>&1
			jq -r '.results[0] | "\(.mean*1000*10|floor/10) ms (±\(.stddev*1000*10|floor/10))"' "$3" | tr '\n' ' '
		}
		printf '%-16s %5s existing  ADD ' "$case" "$existing"
		bench "$del" "$add" "$TMP/a.json"
		printf ' DEL '
		bench "$add" "$del" "$TMP/d.json"
		echo
		ip netns del "$ns"
	done
done
