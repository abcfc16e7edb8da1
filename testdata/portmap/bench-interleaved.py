#!/usr/bin/env python3
# portmap ADD/DEL medians, ferry (both backends) and the reference, at 0 and N existing
# mappings, measured round-robin so machine load hits every case alike. Root; private netns.
# usage: bench-interleaved.py [N=1000] [ROUNDS=30]   (run from the workspace root after
# `cargo build --release -p portmap`; FERRY_PORTMAP overrides the binary)
import subprocess, time, statistics, json, os, sys
B=os.path.abspath(os.environ.get("FERRY_PORTMAP", "target/release/portmap")); REF="/usr/lib/cni/portmap"
N=int(sys.argv[1]) if len(sys.argv)>1 else 1000
ROUNDS=int(sys.argv[2]) if len(sys.argv)>2 else 30
def conf(backend, port):
    c={"cniVersion":"1.0.0","name":"benchnet","type":"portmap","runtimeConfig":{"portMappings":[{"hostPort":port,"containerPort":80,"protocol":"tcp"}]},
       "prevResult":{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","sandbox":"/var/run/netns/x"}],"ips":[{"address":"10.213.40.5/24","interface":0}]}}
    if backend: c["backend"]=backend
    return json.dumps(c).encode()
def run(ns, plugin, cmd, cid, data):
    env=dict(os.environ, CNI_COMMAND=cmd, CNI_CONTAINERID=cid, CNI_NETNS="/x", CNI_IFNAME="eth0", CNI_PATH="/usr/lib/cni")
    # nsenter --net: enters the network namespace only (ip netns exec also builds a mount
    # namespace, slower and noisier); a constant overhead for every case, reported below
    t=time.perf_counter()
    p=subprocess.run(["nsenter","--net=/run/netns/"+ns,plugin],input=data,env=env,stdout=subprocess.DEVNULL,stderr=subprocess.PIPE)
    dt=time.perf_counter()-t
    if p.returncode!=0: raise SystemExit(f"{ns} {cmd} failed: {p.stderr}")
    return dt
cases=[]
for be in ["iptables","nftables"]:
    for n in [0,N]:
        cases.append((f"ferry-{be}-{n}", B, be, n))
cases.append((f"reference-0", REF, "", 0))
cases.append((f"reference-{N}", REF, "", N))
COOKIE="import socket,struct;s=socket.socket(socket.AF_UNIX,socket.SOCK_DGRAM);print(struct.unpack('Q',s.getsockopt(socket.SOL_SOCKET,71,8))[0])"
indexes=[]  # portmap's index of each namespace (/run/ferry/portmap/ns-<netns cookie>)
try:
    for name,plugin,be,n in cases:
        ns="fpm-i-"+name; subprocess.run(["ip","netns","add",ns],check=True)
        cookie=subprocess.run(["nsenter","--net=/run/netns/"+ns,"python3","-c",COOKIE],capture_output=True,text=True).stdout.strip()
        if cookie: indexes.append("/run/ferry/portmap/ns-"+cookie)
        for i in range(n):
            run(ns, B, "ADD", f"p{i}", conf(be or "iptables", 30000+i))
    res={c[0]:{"add":[],"del":[]} for c in cases}
    base=[]
    for r in range(ROUNDS):
        for name,plugin,be,n in cases:
            ns="fpm-i-"+name; data=conf(be,22999)
            if name.startswith("reference") and n>0 and r>=8: continue
            res[name]["add"].append(run(ns,plugin,"ADD","bench",data))
            res[name]["del"].append(run(ns,plugin,"DEL","bench",data))
        t=time.perf_counter(); subprocess.run(["nsenter","--net=/run/netns/fpm-i-reference-0","true"]); base.append(time.perf_counter()-t)
    b=statistics.median(base)*1000
    print(f"median of `nsenter --net=… true` (included in every number): {b:.1f} ms")
    for name in res:
        a=statistics.median(res[name]["add"])*1000; d=statistics.median(res[name]["del"])*1000
        print(f"{name:22s} ADD median {a:6.1f} ms (minus exec {a-b:6.1f})   DEL median {d:6.1f} ms (minus exec {d-b:6.1f})   n={len(res[name]['add'])}")
finally:
    for name,*_ in cases: subprocess.run(["ip","netns","del","fpm-i-"+name],stderr=subprocess.DEVNULL)
    for d in indexes: subprocess.run(["rm","-rf",d])
