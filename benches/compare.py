#!/usr/bin/env python3
"""roundhouse side by side with haproxy and nginx (stream), in the same run, on loopback.

What it measures (one line per load and proxy, medians over --runs runs):
  keepalive  wrk -t1 -c64, ~1 KiB Elasticsearch-like JSON from two nginx backends: requests/s, p99
  close      the same with `Connection: close`: a new proxied TCP connection per request
  bulk       iperf3 through the proxy to one iperf3 server: Gbit/s
  idle       4000 open proxied connections, each with a completed request: proxy RSS growth per connection
For keepalive and close it also prints each proxy's own CPU time per request (user + system, all
threads): what a request costs the proxy, however the 2 cores were shared in that run.

Ports: backends 19201/19202 (nginx, static JSON) and 19203 (iperf3); haproxy 19100/19110,
nginx stream 19101/19111, roundhouse 19102/19112; direct = the backends themselves.
haproxy is configured as its users tune it for this (mode tcp, option splice-auto, default
threads); nginx stream with worker_processes auto. roundhouse gets the equivalent: two
listeners, round robin, an Elasticsearch health check on the JSON backends.

Needs Debian's haproxy, nginx-light, libnginx-mod-stream, wrk and iperf3; with --install
(or when run as root and something is missing) it apt-get installs them.

Usage: benches/compare.py [--runs 3] [--secs 6] [--only keepalive,close,bulk,idle]
                          [--binary target/release/roundhouse] [--json FILE]
"""
import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = {"haproxy": "haproxy", "nginx": "nginx-light", "wrk": "wrk", "iperf3": "iperf3"}
STREAM_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"
PROXIES = ("haproxy", "nginx", "roundhouse")
# load -> (metric, higher is better, target ratio roundhouse/haproxy)
TARGETS = {
    "keepalive": ("rps", True, 1.10),
    "close": ("rps", True, 1.10),
    "bulk": ("gbit_s", True, 1.00),
}
IDLE_TARGET_KIB = 3.0

BACKENDS_CONF = """
worker_processes 1;
daemon off;
pid {d}/backend.pid;
error_log {d}/backend.err warn;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  default_type application/json;
  server {{ listen 127.0.0.1:19201 reuseport backlog=4096; root {d}/www; }}
  server {{ listen 127.0.0.1:19202 reuseport backlog=4096; root {d}/www; }}
}}
"""

HAPROXY_CONF = """
global
  maxconn 4500
  log stderr format raw local0 err
defaults
  mode tcp
  option splice-auto
  timeout connect 2s
  timeout client 30s
  timeout server 30s
frontend es
  bind 127.0.0.1:19100 backlog 4096
  default_backend es
backend es
  balance roundrobin
  option httpchk GET /_cluster/health
  http-check expect rstring \\"status\\":\\"(green|yellow)\\"
  server es1 127.0.0.1:19201 check inter 1s
  server es2 127.0.0.1:19202 check inter 1s
frontend bulk
  bind 127.0.0.1:19110 backlog 4096
  default_backend bulk
backend bulk
  server iperf 127.0.0.1:19203
"""

NGINX_STREAM_CONF = """
worker_processes auto;
daemon off;
load_module {module};
pid {d}/stream.pid;
error_log {d}/stream.err warn;
events {{ worker_connections 10000; }}
stream {{
  upstream es {{ server 127.0.0.1:19201; server 127.0.0.1:19202; }}
  server {{ listen 127.0.0.1:19101 backlog=4096; proxy_pass es; }}
  upstream bulk {{ server 127.0.0.1:19203; }}
  server {{ listen 127.0.0.1:19111 backlog=4096; proxy_pass bulk; }}
}}
"""

ROUNDHOUSE_CONF = """
enabled: true
admin:
  bind: 127.0.0.1:19902
listeners:
  - {{ name: es, bind: "127.0.0.1:19102", backend: es }}
  - {{ name: bulk, bind: "127.0.0.1:19112", backend: bulk }}
backends:
  - name: es
    servers: [127.0.0.1:19201, 127.0.0.1:19202]
    health_check: {{ type: elasticsearch, interval: 1s, timeout: 500ms, cluster_name: bench }}
  - name: bulk
    servers: [127.0.0.1:19203]
    health_check: {{ type: tcp, interval: 1s }}
"""


def ensure_tools(install):
    missing = [pkg for tool, pkg in PACKAGES.items() if not shutil.which(tool)]
    if not os.path.exists(STREAM_MODULE):
        missing.append("libnginx-mod-stream")
    if not missing:
        return
    if not (install or os.geteuid() == 0):
        sys.exit("missing: %s (apt-get install -y %s, or run with --install as root)" % (missing, " ".join(missing)))
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True, env=env, stdout=subprocess.DEVNULL)


def wait_port(port, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def write_site(d):
    os.makedirs(os.path.join(d, "www", "_cluster"))
    health = {"cluster_name": "bench", "status": "green", "timed_out": False, "number_of_nodes": 2,
              "number_of_data_nodes": 2, "discovered_master": True}
    with open(os.path.join(d, "www", "_cluster", "health"), "w") as f:
        json.dump(health, f, separators=(",", ":"))
    hits = [{"_index": "logs", "_id": str(i), "_score": 1.0, "_source": {"msg": "event %d" % i, "level": "info"}}
            for i in range(12)]
    with open(os.path.join(d, "www", "search.json"), "w") as f:
        json.dump({"took": 1, "timed_out": False, "hits": {"total": {"value": 12}, "hits": hits}}, f)


class Processes:
    """Started servers, each in its own process group, all stopped at the end."""

    def __init__(self, d):
        self.d, self.procs = d, []

    def start(self, name, cmd, port):
        log = open(os.path.join(self.d, name + ".log"), "w")
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
        self.procs.append(p)
        if not wait_port(port):
            sys.exit("%s did not start; its log:\n%s" % (name, open(log.name).read()[-3000:]))
        return p

    def stop_all(self):
        for p in self.procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in self.procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)


def group_cpu_s(pgid):
    """CPU seconds (user + system, all threads) used so far by the processes of a group."""
    ticks = sum(int(fields[11]) + int(fields[12]) for _, fields in group_pids(pgid))
    return ticks / os.sysconf("SC_CLK_TCK")


def wrk(port, secs, conns, close, pgid=None):
    cmd = ["wrk", "-t1", "-c%d" % conns, "-d%ds" % secs, "--latency"]
    if close:
        cmd += ["-H", "Connection: close"]
    cpu_before = group_cpu_s(pgid) if pgid else None
    out = subprocess.run(cmd + ["http://127.0.0.1:%d/search.json" % port], capture_output=True, text=True).stdout
    cpu = group_cpu_s(pgid) - cpu_before if pgid else None
    found = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not found:
        sys.exit("wrk printed no rate:\n" + out)

    def latency_ms(pct):
        m = re.search(r"\s%s%%\s+([\d.]+)(us|ms|s)\b" % pct, out)
        return float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)] if m else float("nan")
    errors = re.search(r"Socket errors: (.*)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    result = {"rps": float(found.group(1)), "p50_ms": latency_ms(50), "p99_ms": latency_ms(99),
              "errors": (errors.group(1) if errors else "") + (" non2xx=" + non2xx.group(1) if non2xx else "")}
    requests = re.search(r"(\d+) requests in", out)
    if cpu is not None and requests:
        # the proxy's own CPU per request: what it costs, whatever share of the 2 cores it got
        result["cpu_us_per_req"] = cpu * 1e6 / int(requests.group(1))
    return result


def iperf(port, secs):
    out = subprocess.run(["iperf3", "-c", "127.0.0.1", "-p", str(port), "-t", str(secs), "-J"],
                         capture_output=True, text=True).stdout
    return {"gbit_s": json.loads(out)["end"]["sum_received"]["bits_per_second"] / 1e9}


def group_pids(pgid):
    """The processes of a process group (a proxy and its workers or threads' process)."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open("/proc/%s/stat" % pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            yield pid, fields


def group_rss_kib(pgid):
    total = 0
    for pid, _ in group_pids(pgid):
        try:
            with open("/proc/%s/status" % pid) as f:
                total += next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
        except (OSError, StopIteration):
            pass
    return total


def idle(port, pgid, n=4000):
    before = group_rss_kib(pgid)
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), 2)
        s.sendall(b"GET /_cluster/health HTTP/1.1\r\nHost: x\r\n\r\n")
        socks.append(s)
    for s in socks:  # each round trip completed: both legs of every connection exist
        s.settimeout(5)
        s.recv(4096)
    time.sleep(0.5)
    after = group_rss_kib(pgid)
    for s in socks:
        s.close()
    return {"kib_per_conn": (after - before) / n, "rss_mib": after / 1024.0}


def one_run(args, binary):
    d = tempfile.mkdtemp(prefix="roundhouse-bench-")
    os.chmod(d, 0o755)
    procs = Processes(d)

    def conf(name, text):
        path = os.path.join(d, name)
        with open(path, "w") as f:
            f.write(text)
        return path
    try:
        write_site(d)
        procs.start("backends", ["nginx", "-c", conf("backends.conf", BACKENDS_CONF.format(d=d)), "-p", d], 19201)
        procs.start("iperf3", ["iperf3", "-s", "-p", "19203"], 19203)
        groups = {
            "haproxy": procs.start("haproxy", ["haproxy", "-f", conf("haproxy.cfg", HAPROXY_CONF)], 19100).pid,
            "nginx": procs.start("nginx", ["nginx", "-c", conf("stream.conf", NGINX_STREAM_CONF.format(
                d=d, module=STREAM_MODULE)), "-p", d], 19101).pid,
            "roundhouse": procs.start("roundhouse", [binary, "run", "--config",
                                                      conf("roundhouse.yaml", ROUNDHOUSE_CONF.format())], 19102).pid,
        }
        for port in (19110, 19111, 19112):
            if not wait_port(port):
                sys.exit("nothing listens on %d" % port)
        time.sleep(1.5)  # let every proxy's health checks mark the backends up
        ports = {"direct": (19201, 19203), "haproxy": (19100, 19110), "nginx": (19101, 19111),
                 "roundhouse": (19102, 19112)}
        result = {}
        for name, (http_port, bulk_port) in ports.items():
            r = {}
            if "keepalive" in args.only:
                r["keepalive"] = wrk(http_port, args.secs, 64, close=False, pgid=groups.get(name))
            if "close" in args.only:
                r["close"] = wrk(http_port, args.secs, 32, close=True, pgid=groups.get(name))
            if "bulk" in args.only:
                r["bulk"] = iperf(bulk_port, args.secs)
            if "idle" in args.only and name in groups:
                r["idle"] = idle(http_port, groups[name])
            result[name] = r
            for load, v in r.items():
                print("  %-10s %-9s %s" % (name, load, "  ".join(
                    "%s=%s" % (k, "%.3f" % x if isinstance(x, float) else x) for k, x in v.items())), flush=True)
        return result
    finally:
        procs.stop_all()
        shutil.rmtree(d, ignore_errors=True)


def median(runs, proxy, load, key):
    values = [r[proxy][load][key] for r in runs if load in r.get(proxy, {})]
    return statistics.median(values) if values else float("nan")


def report(runs, only):
    print("\nmedians of %d run(s); ratio = roundhouse / haproxy (same run)\n" % len(runs))
    print("| load | direct | haproxy | nginx | roundhouse | ratio | target | met |")
    print("|---|---|---|---|---|---|---|---|")
    for load, (key, _, target) in TARGETS.items():
        if load not in only:
            continue
        v = {p: median(runs, p, load, key) for p in ("direct",) + PROXIES}
        ratios = [r["roundhouse"][load][key] / r["haproxy"][load][key] for r in runs]
        ratio = statistics.median(ratios)
        unit = "req/s" if key == "rps" else "Gbit/s"
        fmt = "%.0f" if key == "rps" else "%.2f"
        print("| %s (%s) | %s | %s | %s | %s | %.2f× | ≥ %.2f× | %s |" % (
            load, unit, *(fmt % v[p] for p in ("direct",) + PROXIES), ratio, target, "yes" if ratio >= target else "NO"))
        if load == "keepalive":
            p99 = {p: median(runs, p, load, "p99_ms") for p in PROXIES}
            ok = p99["roundhouse"] <= p99["haproxy"]
            print("| keepalive p99 (ms) | %.2f | %.2f | %.2f | %.2f | | ≤ haproxy | %s |" % (
                median(runs, "direct", load, "p99_ms"), p99["haproxy"], p99["nginx"], p99["roundhouse"],
                "yes" if ok else "NO"))
        if key == "rps":
            cpu = {p: median(runs, p, load, "cpu_us_per_req") for p in PROXIES}
            print("| %s, proxy CPU (µs/req) | | %.1f | %.1f | %.1f | %.2f× | (lower is better) | |" % (
                load, cpu["haproxy"], cpu["nginx"], cpu["roundhouse"], cpu["roundhouse"] / cpu["haproxy"]))
    if "idle" in only:
        v = {p: median(runs, p, "idle", "kib_per_conn") for p in PROXIES}
        print("| idle (KiB/conn) | | %.2f | %.2f | %.2f | | ≤ %.1f | %s |" % (
            v["haproxy"], v["nginx"], v["roundhouse"], IDLE_TARGET_KIB, "yes" if v["roundhouse"] <= IDLE_TARGET_KIB else "NO"))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--secs", type=int, default=6)
    ap.add_argument("--only", default="keepalive,close,bulk,idle")
    ap.add_argument("--binary", help="roundhouse binary (default: build target/release/roundhouse)")
    ap.add_argument("--install", action="store_true", help="apt-get install missing tools")
    ap.add_argument("--json", help="write every run's raw figures here")
    args = ap.parse_args()
    args.only = args.only.split(",")
    ensure_tools(args.install)
    binary = args.binary
    if not binary:
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
        binary = os.path.join(ROOT, "target", "release", "roundhouse")
    runs = []
    for i in range(args.runs):
        print("run %d/%d" % (i + 1, args.runs), flush=True)
        runs.append(one_run(args, binary))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(runs, f, indent=1)
    report(runs, args.only)


if __name__ == "__main__":
    main()
