#!/usr/bin/env python3
"""Hand measurement of ferry-proxy beside /usr/sbin/docker-proxy (same run, same machine).

Measures: time from spawn to the ready byte on fd 3, TCP throughput with iperf3 through
each proxy on loopback (and proxy CPU seconds per GB), RSS with 1,000 idle connections
(and after they close). Traffic stays on 127.0.0.1; ports 24900-24949 (the proxy helper's
test range). Usage: measure.py [path/to/ferry-proxy]  (use a release build).
"""
import json, os, resource, selectors, signal, socket, statistics, subprocess, sys, threading, time

FERRY = sys.argv[1] if len(sys.argv) > 1 else "target/release/ferry-proxy"
DOCKER = "/usr/sbin/docker-proxy"
BASE = 24900
DEVNULL_FD = os.open("/dev/null", os.O_RDONLY)
if DEVNULL_FD < 3:
    raise SystemExit("run with stdin/stdout/stderr open")
os.dup2(DEVNULL_FD, 3)


def spawn(binary, host_port, backend_port, argv=None):
    r, w = os.pipe()
    argv = argv or [binary, "-proto", "tcp", "-host-ip", "127.0.0.1", "-host-port", str(host_port),
                    "-container-ip", "127.0.0.1", "-container-port", str(backend_port)]
    devnull = os.open("/dev/null", os.O_RDWR)
    actions = [(os.POSIX_SPAWN_DUP2, devnull, 0), (os.POSIX_SPAWN_DUP2, devnull, 1),
               (os.POSIX_SPAWN_DUP2, w, 3)]
    t0 = time.perf_counter()
    # glibc's posix_spawn returns once the child has exec'd (CLONE_VFORK), so t_exec is a
    # tight upper bound of the moment the new program started.
    pid = os.posix_spawn(argv[0], argv, os.environ, file_actions=actions)
    t_exec = time.perf_counter()
    os.close(w)
    os.close(devnull)
    status = os.read(r, 64)
    t_ready = time.perf_counter()
    os.close(r)
    assert status.startswith(b"0"), (argv[0], status)
    return pid, (t_ready - t0, t_ready - t_exec)


class Spawned:
    def __init__(self, pid):
        self.pid = pid

    def send_signal(self, sig):
        os.kill(self.pid, sig)

    def wait(self, timeout=None):
        os.waitpid(self.pid, 0)


def stop(p):
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=10)


def ready_times(binary, port, n=40, argv=None):
    total, after_exec = [], []
    for _ in range(n):
        pid, (dt, de) = spawn(binary, port, port + 1, argv)
        p = Spawned(pid)
        total.append(dt * 1000)
        after_exec.append(de * 1000)
        stop(p)
    return statistics.median(total), statistics.median(after_exec), min(after_exec)


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])


def iperf(port, seconds=5):
    out = subprocess.run(["iperf3", "-c", "127.0.0.1", "-p", str(port), "-t", str(seconds), "-J"],
                         capture_output=True, text=True, check=True).stdout
    j = json.loads(out)
    return j["end"]["sum_received"]["bits_per_second"] / 1e9, j["end"]["sum_received"]["bytes"]


def iperf_best(port, runs=3):
    results = [iperf(port) for _ in range(runs)]
    return max(r[0] for r in results), sum(r[1] for r in results)


def hold_backend(port, stop_event):
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(4096)
    srv.setblocking(False)
    held = []
    sel = selectors.DefaultSelector()
    sel.register(srv, selectors.EVENT_READ)
    while not stop_event.is_set():
        for _ in sel.select(timeout=0.1):
            try:
                while True:
                    c, _ = srv.accept()
                    held.append(c)
            except BlockingIOError:
                pass
    for c in held:
        c.close()
    srv.close()


def idle_rss(binary, host_port, backend_port, n=1000):
    stop_event = threading.Event()
    t = threading.Thread(target=hold_backend, args=(backend_port, stop_event))
    t.start()
    time.sleep(0.2)
    pid, _ = spawn(binary, host_port, backend_port)
    p = Spawned(pid)
    base = rss_kib(p.pid)
    clients = [socket.create_connection(("127.0.0.1", host_port)) for _ in range(n)]
    time.sleep(1.5)
    loaded = rss_kib(p.pid)
    for c in clients:
        c.close()
    time.sleep(2)
    after = rss_kib(p.pid)
    stop(p)
    stop_event.set()
    t.join()
    return base, loaded, after


def api(sock_path, method, path, body=b""):
    s = socket.socket(socket.AF_UNIX)
    s.connect(sock_path)
    s.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
    out = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        out += chunk
    s.close()
    return int(out.split()[1])


def daemon_rss(n=1000, first_port=23000):
    import tempfile
    d = tempfile.mkdtemp()
    sock = os.path.join(d, "proxy.sock")
    p = subprocess.Popen([FERRY, "daemon", "--socket", sock, "--state-dir", os.path.join(d, "state")],
                         stderr=subprocess.DEVNULL)
    for _ in range(200):
        if os.path.exists(sock):
            break
        time.sleep(0.02)
    try:
        base = rss_kib(p.pid)
        t0 = time.perf_counter()
        added = 0
        for i in range(n):
            body = json.dumps({"owner": f"c{i % 50}", "proto": "tcp", "hostIP": "127.0.0.1",
                               "hostPort": first_port + i, "containerIP": "127.0.0.1", "containerPort": 9}).encode()
            added += api(sock, "POST", "/v1/mappings", body) in (200, 201)
        dt = time.perf_counter() - t0
        loaded = rss_kib(p.pid)
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=15)
    return base, loaded, dt, added


def main():
    resource.setrlimit(resource.RLIMIT_NOFILE, (8192, 8192))
    print("== ready signal on fd 3, ms (40 runs): spawn->ready median; exec->ready median, min")
    baseline = ["/bin/busybox", "sh", "-c", "echo 0 >&3; exec sleep 5"]
    for name, b, port, argv in (("busybox sh (baseline: exec + echo)", None, 0, baseline),
                                ("docker-proxy", DOCKER, BASE, None), ("ferry-proxy", FERRY, BASE + 2, None)):
        med, med_exec, min_exec = ready_times(b, port, argv=argv)
        print(f"{name:13s} {med:6.2f}; {med_exec:6.2f}, {min_exec:6.2f}")

    print("== iperf3 TCP on loopback, 5 s, single stream")
    srv = subprocess.Popen(["iperf3", "-s", "-p", str(BASE + 10)], stdout=subprocess.DEVNULL)
    time.sleep(0.5)
    try:
        direct, _ = iperf_best(BASE + 10)
        print(f"{'direct':13s} {direct:6.2f} Gbit/s")
        for name, b, port in (("docker-proxy", DOCKER, BASE + 11), ("ferry-proxy", FERRY, BASE + 12)):
            p = Spawned(spawn(b, port, BASE + 10)[0])
            c0 = cpu_seconds(p.pid)
            gbps, nbytes = iperf_best(port)
            c1 = cpu_seconds(p.pid)
            stop(p)
            print(f"{name:13s} {gbps:6.2f} Gbit/s ({gbps / direct * 100:.0f}% of direct, best of 3), proxy CPU {(c1 - c0) / (nbytes / 1e9):.3f} s/GB")
    finally:
        srv.terminate()
        srv.wait()

    print("== RSS with 1,000 idle connections (KiB: at start / with 1,000 / 2 s after closing)")
    for name, b, port in (("docker-proxy", DOCKER, BASE + 20), ("ferry-proxy", FERRY, BASE + 30)):
        base, loaded, after = idle_rss(b, port, port + 1)
        print(f"{name:13s} {base:7d} / {loaded:7d} / {after:7d}")

    print("== daemon with 1,000 TCP mappings (one process)")
    base, loaded, dt, added = daemon_rss()
    print(f"ferry-proxy daemon RSS {base} KiB empty, {loaded} KiB with {added} mappings; 1,000 POSTs in {dt:.2f} s")
    print("   (docker-proxy: 1,000 processes; its per-process RSS at start is printed above)")


if __name__ == "__main__":
    main()
