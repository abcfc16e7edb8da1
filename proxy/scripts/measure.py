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


def spawn(binary, host_port, backend_port):
    r, w = os.pipe()
    # Put the write end on fd 3 in the parent so the child inherits it there (like dockerd).
    os.dup2(w, 3, inheritable=True)
    os.close(w)
    t0 = time.perf_counter()
    p = subprocess.Popen([binary, "-proto", "tcp", "-host-ip", "127.0.0.1", "-host-port", str(host_port),
                          "-container-ip", "127.0.0.1", "-container-port", str(backend_port)],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, pass_fds=(3,))
    os.dup2(DEVNULL_FD, 3)  # keep fd 3 occupied so os.pipe() never returns it
    # Popen returns once exec succeeded (CPython waits on its CLOEXEC error pipe), so
    # t_exec is a close upper bound of the moment the new program started.
    t_exec = time.perf_counter()
    status = os.read(r, 64)
    t_ready = time.perf_counter()
    dt = (t_ready - t0, t_ready - t_exec)
    os.close(r)
    assert status.startswith(b"0\n"), (binary, status)
    return p, dt


def stop(p):
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=10)


def ready_times(binary, port, n=40):
    total, after_exec = [], []
    for _ in range(n):
        p, (dt, de) = spawn(binary, port, port + 1)
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
    p, _ = spawn(binary, host_port, backend_port)
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


def main():
    resource.setrlimit(resource.RLIMIT_NOFILE, (8192, 8192))
    print("== ready signal on fd 3, ms (40 runs): spawn->ready median; exec->ready median, min")
    for name, b, port in (("docker-proxy", DOCKER, BASE), ("ferry-proxy", FERRY, BASE + 2)):
        med, med_exec, min_exec = ready_times(b, port)
        print(f"{name:13s} {med:6.2f}; {med_exec:6.2f}, {min_exec:6.2f}")

    print("== iperf3 TCP on loopback, 5 s, single stream")
    srv = subprocess.Popen(["iperf3", "-s", "-p", str(BASE + 10)], stdout=subprocess.DEVNULL)
    time.sleep(0.5)
    try:
        direct, _ = iperf_best(BASE + 10)
        print(f"{'direct':13s} {direct:6.2f} Gbit/s")
        for name, b, port in (("docker-proxy", DOCKER, BASE + 11), ("ferry-proxy", FERRY, BASE + 12)):
            p, _ = spawn(b, port, BASE + 10)
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


if __name__ == "__main__":
    main()
