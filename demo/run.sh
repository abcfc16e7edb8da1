#!/usr/bin/env bash
# make demo: the three-tier example from the Docker guides, with ferry's CNI plugins.
#
#   frontend (10.213.160.0/24, bridge fdm-front, isolated)   backend (10.213.161.0/24, bridge fdm-back, isolated)
#      web  — busybox httpd, host port 8080 → web:80           db — busybox httpd (the "database")
#      api  — on both networks ───────────────────────────────── api
#
# "Containers" are network namespaces (fdm-web, fdm-api, fdm-db) attached by the `ferry`
# runtime (cnitool-compatible, libcni semantics). Every step prints a ✓/✗ line; everything
# is torn down on every exit path and the script shows that nothing is left.
#
# Environment: FERRY_DEMO_NO_BUILD=1 skips the build, FERRY_TARGET picks the binaries
# (default target/release). Exit status: 0 only if every check passed.

set -u
set -o pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET=${FERRY_TARGET:-$ROOT/target/release}
PORT=8080

if [ "$(id -u)" != 0 ]; then
  echo "make demo needs root: it creates network namespaces, bridges, veths and firewall rules on this host (run: sudo make demo)" >&2
  exit 1
fi
for tool in ip nsenter flock curl busybox iptables-save; do
  command -v "$tool" >/dev/null || { echo "make demo needs $tool (iproute2, curl, busybox-static, iptables)" >&2; exit 1; }
done

# One demo at a time (fixed names fdm-*, host port 8080): lock this script itself.
exec 9<"$ROOT/demo/run.sh"
if ! flock -n 9; then
  echo "another make demo is running on this host; wait for it to finish" >&2
  exit 1
fi

if [ -z "${FERRY_DEMO_NO_BUILD:-}" ]; then
  echo "▸ building: cargo build --release --workspace --bins"
  (cd "$ROOT" && cargo build --release --workspace --bins) || { echo "build failed" >&2; exit 1; }
fi
for b in ferry bridge host-local portmap; do
  [ -x "$TARGET/$b" ] || { echo "$TARGET/$b missing: build first (cargo build --release --workspace --bins)" >&2; exit 1; }
done

DEMO=$(mktemp -d /tmp/fdm-demo-XXXXXX)
export NETCONFPATH=$DEMO/net
export CNI_PATH=$TARGET
export FERRY_CACHE_DIR=$DEMO/cache
unset CNI_ARGS CAP_ARGS CNI_IFNAME
FERRY=$TARGET/ferry
NETNS=(fdm-web fdm-api fdm-db fdm-web2)
BRIDGES=(fdm-front fdm-back)
PIDS=()
FAILED=0
IDS=()

if [ -t 1 ]; then GREEN=$'\e[32m' RED=$'\e[31m' PLAIN=$'\e[0m'; else GREEN="" RED="" PLAIN=""; fi
ok()   { printf '  %s✓%s %s\n' "$GREEN" "$PLAIN" "$*"; }
bad()  { printf '  %s✗%s %s\n' "$RED" "$PLAIN" "$*"; FAILED=1; }
step() { printf '\n▸ %s\n' "$*"; }

# userlandProxy (issue #6) makes localhost work over ::1 too; use it when this portmap has it.
# The demo's ferry-proxy daemon (portmap starts it on the first ADD) gets a socket and state
# dir under the demo's temp dir, so the teardown can stop exactly that daemon and leave no
# state behind; a daemon you already run at the default /run/ferry/proxy.sock is not touched.
USERLAND=""
if grep -q userlandProxy "$TARGET/portmap" 2>/dev/null; then
  USERLAND=", \"userlandProxy\": true, \"proxySocket\": \"$DEMO/proxy.sock\", \"proxyStateDir\": \"$DEMO/proxy-state\""
fi

# PIDs of the ferry-proxy daemon serving the demo's socket.
demo_daemons() {
  local d cmd
  for d in /proc/[0-9]*; do
    cmd=$( { tr '\0' ' ' < "$d/cmdline"; } 2>/dev/null ) || continue
    case "$cmd" in *ferry-proxy*daemon*"$DEMO/proxy.sock"*) echo "${d#/proc/}" ;; esac
  done
}

# portmap keeps a shared layout (the reference's CNI-HOSTPORT-* chains and their jumps) and a
# port index in /run/ferry/portmap after its last DEL, as the reference does. If the demo is
# what brought them to this host, the teardown removes them again once no container uses them.
shared_layout() {
  local t
  for t in iptables ip6tables; do
    "$t-save" -t nat 2>/dev/null | grep -q '^:CNI-HOSTPORT-DNAT ' && echo "$t"
  done
}
HAD_LAYOUT=$(shared_layout)
HAD_INDEX=$(ls /run/ferry/portmap 2>/dev/null)

remove_shared_layout_if_ours() {
  local t
  for t in iptables ip6tables; do
    grep -qx "$t" <<<"$HAD_LAYOUT" && continue
    "$t-save" -t nat 2>/dev/null | grep -q '^:CNI-HOSTPORT-DNAT ' || continue
    # Still in use by some container: a per-container jump in CNI-HOSTPORT-DNAT.
    "$t" -t nat -S CNI-HOSTPORT-DNAT 2>/dev/null | grep -q -- '^-A ' && continue
    "$t" -t nat -D PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT 2>/dev/null
    "$t" -t nat -D OUTPUT -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT 2>/dev/null
    "$t" -t nat -D POSTROUTING -m comment --comment "CNI portfwd requiring masquerade" -j CNI-HOSTPORT-MASQ 2>/dev/null
    local c
    for c in CNI-HOSTPORT-DNAT CNI-HOSTPORT-MASQ CNI-HOSTPORT-SETMARK; do
      "$t" -t nat -F "$c" 2>/dev/null
      "$t" -t nat -X "$c" 2>/dev/null
    done
  done
  local d
  for d in /run/ferry/portmap/*; do
    [ -e "$d" ] || continue
    grep -qx "$(basename "$d")" <<<"$HAD_INDEX" || rm -rf "$d"
  done
  rmdir /run/ferry/portmap /run/ferry 2>/dev/null || true
}

teardown() {
  # Finish the cleanup whatever happens to the terminal or the pipe we print to.
  trap - EXIT
  trap '' INT TERM HUP PIPE
  step "teardown"
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; done
  "$FERRY" del backend /var/run/netns/fdm-api -i eth1 >/dev/null 2>&1
  "$FERRY" del backend /var/run/netns/fdm-db >/dev/null 2>&1
  for ns in fdm-web fdm-api fdm-web2; do
    "$FERRY" del frontend "/var/run/netns/$ns" >/dev/null 2>&1
  done
  for ns in "${NETNS[@]}"; do ip netns del "$ns" 2>/dev/null; done
  for br in "${BRIDGES[@]}"; do ip link del "$br" 2>/dev/null; done
  # GC: the isolation rules of bridges that are gone, and anything still cached.
  "$FERRY" gc frontend >/dev/null 2>&1
  "$FERRY" gc backend >/dev/null 2>&1
  local pid
  for pid in $(demo_daemons); do kill "$pid" 2>/dev/null; done
  for _ in $(seq 50); do [ -z "$(demo_daemons)" ] && break; sleep 0.1; done
  remove_shared_layout_if_ours

  local left=()
  for ns in "${NETNS[@]}"; do [ -e "/var/run/netns/$ns" ] && left+=("netns $ns"); done
  while read -r l; do [ -n "$l" ] && left+=("link $l"); done < <(ip -o link show | awk -F': ' '{print $2}' | grep '^fdm-' || true)
  local rules
  rules=$( { iptables-save; ip6tables-save; nft list ruleset; } 2>/dev/null)
  local pattern='fdm-|10\.213\.16[01]\.|fd00:213:160'
  for id in "${IDS[@]}"; do pattern="$pattern|$id"; done
  while read -r l; do [ -n "$l" ] && left+=("rule: $l"); done < <(grep -E -- "$pattern" <<<"$rules" || true)
  while read -r l; do [ -n "$l" ] && left+=("lease $l"); done < <(find "$DEMO/ipam" -type f -name '10.*' 2>/dev/null)
  while read -r l; do [ -n "$l" ] && left+=("cache entry $l"); done < <(find "$DEMO/cache/results" -type f 2>/dev/null)
  for id in "${IDS[@]}"; do
    while read -r l; do [ -n "$l" ] && left+=("portmap claim $l"); done < <(grep -rl -- "$id" /run/ferry/portmap 2>/dev/null)
  done
  for t in $(shared_layout); do
    grep -qx "$t" <<<"$HAD_LAYOUT" || left+=("$t: portmap's shared CNI-HOSTPORT-* chains")
  done
  for pid in $(demo_daemons); do left+=("ferry-proxy daemon pid $pid"); done
  for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && left+=("server process $pid"); done
  if [ ${#left[@]} -eq 0 ]; then
    ok "nothing left: no fdm-* netns or link, no rule, lease, cache entry, port claim or proxy daemon of the demo"
  else
    bad "left behind:"
    printf '      %s\n' "${left[@]}"
  fi
  rm -rf "$DEMO"
  echo
  if [ "$FAILED" = 0 ]; then
    echo "demo: every check passed"
  else
    echo "demo: some checks FAILED (✗ above)"
  fi
  exit "$FAILED"
}
# Every way out runs the teardown: normal end, errors, Ctrl-C, kill, a closed terminal, and a
# closed pipe (`make demo | head`), which would otherwise kill bash without its EXIT trap.
trap teardown EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP
trap 'exec >/dev/null 2>&1; exit 141' PIPE

mkdir -p "$DEMO/net" "$DEMO/www-web" "$DEMO/www-api" "$DEMO/www-db"
cat > "$DEMO/net/10-frontend.conflist" <<EOF
{
  "cniVersion": "1.1.0",
  "name": "frontend",
  "plugins": [
    {"type": "bridge", "bridge": "fdm-front", "isGateway": true, "ipMasq": true,
     "hairpinMode": true, "isolate": true,
     "ipam": {"type": "host-local", "dataDir": "$DEMO/ipam",
              "ranges": [[{"subnet": "10.213.160.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}$USERLAND}
  ]
}
EOF
cat > "$DEMO/net/20-backend.conflist" <<EOF
{
  "cniVersion": "1.1.0",
  "name": "backend",
  "plugins": [
    {"type": "bridge", "bridge": "fdm-back", "isGateway": true, "isolate": true,
     "ipam": {"type": "host-local", "dataDir": "$DEMO/ipam",
              "ranges": [[{"subnet": "10.213.161.0/24"}]]}}
  ]
}
EOF
echo "web: hello from the frontend" > "$DEMO/www-web/index.html"
echo "api: ok" > "$DEMO/www-api/index.html"
echo "db: 42 rows" > "$DEMO/www-db/index.html"

# attach NETNS NETWORK [IFNAME] [CAP_ARGS] → prints the IPv4 address
attach() {
  local ns=$1 net=$2 ifname=${3:-eth0} caps=${4:-}
  local out
  if ! out=$(CAP_ARGS=$caps "$FERRY" add "$net" "/var/run/netns/$ns" -i "$ifname" 2>&1); then
    echo "ferry add $net $ns: $out" >&2
    return 1
  fi
  sed -n 's/.*"address": *"\([0-9.]*\)\/.*/\1/p' <<<"$out" | head -1
}

serve() {
  local ns=$1 dir=$2
  # nsenter execs the server itself, so $! is the server's PID.
  nsenter --net="/var/run/netns/$ns" busybox httpd -f -p 80 -h "$dir" &
  PIDS+=($!)
}

# fetch NETNS URL → body (2 s)
fetch() { ip netns exec "$1" busybox timeout 2 busybox wget -q -O - "$2" 2>/dev/null; }

step "networks frontend (10.213.160.0/24) and backend (10.213.161.0/24), both \"isolate\": true${USERLAND:+, portmap \"userlandProxy\": true}"
for ns in fdm-web fdm-api fdm-db; do
  ip netns add "$ns" && ip -n "$ns" link set lo up || exit 1
done
WEB=$(attach fdm-web frontend eth0 "{\"portMappings\":[{\"hostPort\":$PORT,\"containerPort\":80,\"protocol\":\"tcp\"}]}") || exit 1
API_FRONT=$(attach fdm-api frontend eth0) || exit 1
API_BACK=$(attach fdm-api backend eth1) || exit 1
DB=$(attach fdm-db backend eth0) || exit 1
# The container IDs ferry (like cnitool) derives from the netns path.
cid() { echo "cnitool-$(printf %s "/var/run/netns/$1" | sha512sum | cut -c1-20)"; }
WEB_ID=$(cid fdm-web)
IDS=("$WEB_ID" "$(cid fdm-api)" "$(cid fdm-db)" "$(cid fdm-web2)")
serve fdm-web "$DEMO/www-web"
serve fdm-api "$DEMO/www-api"
serve fdm-db "$DEMO/www-db"
echo "  web  $WEB on frontend, host port $PORT → web:80"
echo "  api  $API_FRONT on frontend, $API_BACK on backend"
echo "  db   $DB on backend"

# Wait (≤ 5 s) until the servers answer inside their namespaces.
for _ in $(seq 50); do
  fetch fdm-web "http://127.0.0.1/" >/dev/null && fetch fdm-db "http://127.0.0.1/" >/dev/null && break
  sleep 0.1
done

step "checks"
body=$(curl -s -m 3 "http://127.0.0.1:$PORT/")
if [ "$body" = "web: hello from the frontend" ]; then
  ok "curl http://127.0.0.1:$PORT/ → \"$body\""
else
  bad "curl http://127.0.0.1:$PORT/ → \"$body\" (expected the web page)"
fi

body=$(curl -s -g -m 3 "http://[::1]:$PORT/" 2>&1)
if [ "$body" = "web: hello from the frontend" ]; then
  ok "curl -g http://[::1]:$PORT/ → \"$body\""
elif [ -z "$USERLAND" ]; then
  bad "curl -g http://[::1]:$PORT/ → no answer: the kernel cannot NAT ::1, and this portmap has no \"userlandProxy\" mode yet (issue #6)"
else
  bad "curl -g http://[::1]:$PORT/ → \"$body\" (expected the web page through ferry-proxy)"
fi

if body=$(fetch fdm-web "http://$DB/"); then
  bad "web ↛ db: web reached db at $DB (\"$body\") — isolation does not hold"
else
  ok "web ↛ db: web cannot reach db at $DB (frontend and backend are isolated)"
fi

body=$(fetch fdm-api "http://$DB/")
if [ "$body" = "db: 42 rows" ]; then
  ok "api → db: api reaches db at $DB → \"$body\""
else
  bad "api → db: no answer from $DB"
fi

ip netns add fdm-web2 && ip -n fdm-web2 link set lo up
if out=$(CAP_ARGS="{\"portMappings\":[{\"hostPort\":$PORT,\"containerPort\":80,\"protocol\":\"tcp\"}]}" \
    "$FERRY" add frontend /var/run/netns/fdm-web2 2>&1); then
  bad "a second container mapping host port $PORT was accepted"
else
  msg=$(grep -m1 'failed (add)' <<<"$out" || echo "$out")
  if grep -q -- "$WEB_ID" <<<"$msg"; then
    ok "a second mapping of $PORT is refused, naming web ($WEB_ID): $msg"
  else
    bad "a second mapping of $PORT is refused, but the message does not name the holder: $msg"
  fi
fi

ports=$("$FERRY" ports 2>&1)
if grep -q "80/tcp -> 0.0.0.0:$PORT" <<<"$ports"; then
  ok "ferry ports:"
else
  bad "ferry ports does not list 80/tcp -> 0.0.0.0:$PORT:"
fi
sed 's/^/      /' <<<"$ports"
