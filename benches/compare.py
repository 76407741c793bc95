#!/usr/bin/env python3
"""roundhouse side by side with haproxy and nginx (stream), in the same run, on loopback.

What it measures (one line per load and proxy, medians over --runs runs):
  keepalive  wrk -t1 -c64, ~1 KiB Elasticsearch-like JSON from two nginx backends: requests/s, p99
  close      the same with `Connection: close`: a new proxied TCP connection per request
  bulk       iperf3 through the proxy to one iperf3 server: Gbit/s
  idle       4000 open proxied connections, each with a completed request: proxy RSS growth per connection
  keepalive-1k  keepalive with wrk -c1000
  mixed      keepalive (-c64) twice, back to back: without, then with 10,000 idle proxied connections
             held open (each with a completed request); rate and p99 of both, and p99 with/without.
             Each proxied connection takes two descriptors in the proxy: under a hard limit of
             20,000 (a container without CAP_SYS_RESOURCE) it holds 9,000 instead, and says so.
  large      (not in the default set) wrk -t1 -c8, keep-alive, a 1 MiB Elasticsearch-like search answer
             per request: Gbit/s of answers, and CPU per answer. Where `bulk` (iperf3, a plain TCP
             backend) is a byte relay in roundhouse, these answers come through its followed
             HTTP framing: the body is spliced by count, so it should cost what a byte relay does.
  syscalls   (not in the default set) keepalive -c64 with `strace -c -f` attached to each proxy:
             system calls per request, by call. strace slows the proxy, which then finds more
             events per epoll_wait: so a second pass counts epoll_wait calls and context switches
             per request with `perf stat` (kernel counters, full speed), when perf is installed,
             and a third, wrk -c32 with `Connection: close`, counts every system call per
             proxied connection, by call, on the kernel's syscall tracepoints.
For every wrk load it also prints each proxy's own CPU time per request (user + system, all
threads; and the user-space part alone, where a change to the proxy's own code shows) and
context switches per request (voluntary + involuntary, all threads, from
/proc/PID/task/*/status): what a request costs the proxy, however the 2 cores were shared in
that run; for bulk, the same per GiB moved (CPU) and per MiB (context switches). For
roundhouse it prints how the load's connections spread over its worker threads (the change
of roundhouse_worker_connections_accepted_total{worker} over the load, per worker), and for
haproxy the same from its `show activity` (see haproxy_workers).
Each run takes the loads one at a time, every proxy in turn, and every other run takes the
proxies in the reverse order: the machine drifts within a run, and the same binary measured
up to 5% apart run first and run second, so no proxy is always first.
Before each load on roundhouse it waits until both JSON backends are in rotation (on a busy
machine a check times out now and then). The table's targets are issue 17's.
The script raises its descriptor limit (to 200,000 where it may, else to the hard limit) for
the proxies, wrk and itself; haproxy's maxconn follows that limit.

Ports: backends 19201/19202 (nginx, static JSON) and 19203 (iperf3); haproxy 19100/19110,
nginx stream 19101/19111, roundhouse 19102/19112 (admin 19902), --baseline 19103/19113 (admin
19903); direct = the backends themselves.
haproxy is configured as its users tune it for this (mode tcp, option splice-auto, default
threads); nginx stream with worker_processes auto. roundhouse gets the equivalent: two
listeners, round robin, an Elasticsearch health check on the JSON backends (which also answer
/_nodes/_local/http, where the check learns the node's roles).

Needs Debian's haproxy, nginx-light, libnginx-mod-stream, wrk and iperf3 (and strace, perf for
--only syscalls); with --install (or when run as root and something is missing) it apt-get
installs the first five.

Usage: benches/compare.py [--runs 3] [--secs 6] [--only keepalive,close,bulk,idle,keepalive-1k,mixed,large,syscalls]
                          [--proxies direct,haproxy,nginx,roundhouse,baseline]
                          [--binary target/release/roundhouse] [--baseline OTHER_BINARY] [--json FILE]
                          [--pinned]
With --pinned both proxies run one thread per CPU, each bound to its CPU (haproxy `cpu-map`,
roundhouse `pin_workers: true`); by default neither is pinned.
"""
import argparse
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = {"haproxy": "haproxy", "nginx": "nginx-light", "wrk": "wrk", "iperf3": "iperf3"}
STREAM_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"
PROXIES = ("haproxy", "nginx", "roundhouse")
# load -> (metric, higher is better, target ratio roundhouse/haproxy), issue 17's targets
TARGETS = {
    "keepalive": ("rps", True, 1.00),
    "keepalive-1k": ("rps", True, 1.00),
    "close": ("rps", True, 1.00),
    "bulk": ("gbit_s", True, 1.30),
}
IDLE_TARGET_KIB = 2.0
CPU_TARGET = 0.95
READY = {19102: 19902, 19103: 19903}  # roundhouse's listener port -> its admin port
# The nginx backends' process group, once started: the wrk loads also count what the backends
# spend per request behind each proxy.
BACKENDS = {}
MIXED_IDLE = 10000  # fewer when the descriptor limit is lower: see mixed_idle()
MIXED_P99_TARGET = 1.10
WRK_LOADS = ("keepalive", "close", "keepalive-1k", "mixed")
DEFAULT_LOADS = "keepalive,close,bulk,idle,keepalive-1k,mixed"
# the order loads run in, each on every proxy before the next load
LOADS_IN_ORDER = ("keepalive", "syscalls", "close", "bulk", "large", "idle", "keepalive-1k", "mixed")
LARGE_HITS = 5000  # hits in large.json: about 1 MiB

BACKENDS_CONF = """
worker_processes 1;
daemon off;
pid {d}/backend.pid;
error_log {d}/backend.err warn;
worker_rlimit_nofile {nofile};
events {{ worker_connections {nofile}; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 300s;
  default_type application/json;
  server {{ listen 127.0.0.1:19201 reuseport backlog=4096; root {d}/www;
           location = /_nodes/_local/http {{ alias {d}/www/nodes-19201.json; }} }}
  server {{ listen 127.0.0.1:19202 reuseport backlog=4096; root {d}/www;
           location = /_nodes/_local/http {{ alias {d}/www/nodes-19202.json; }} }}
}}
"""

HAPROXY_CONF = """
global
  maxconn {maxconn}
  log stderr format raw local0 err
  maxpipes 200
  stats socket {d}/haproxy.sock level admin
{cpu_map}defaults
  mode tcp
  maxconn {maxconn}
  option splice-auto
  timeout connect 2s
  timeout client 300s
  timeout server 300s
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
worker_rlimit_nofile {nofile};
daemon off;
load_module {module};
pid {d}/stream.pid;
error_log {d}/stream.err warn;
events {{ worker_connections {nofile}; }}
stream {{
  upstream es {{ server 127.0.0.1:19201; server 127.0.0.1:19202; }}
  server {{ listen 127.0.0.1:19101 backlog=4096; proxy_pass es; }}
  upstream bulk {{ server 127.0.0.1:19203; }}
  server {{ listen 127.0.0.1:19111 backlog=4096; proxy_pass bulk; }}
}}
"""

ROUNDHOUSE_CONF = """
enabled: true
pin_workers: {pinned}
admin:
  bind: 127.0.0.1:{admin}
listeners:
  - {{ name: es, bind: "127.0.0.1:{http}", backend: es }}
  - {{ name: bulk, bind: "127.0.0.1:{bulk}", backend: bulk }}
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


def raise_fd_limit():
    """Enough descriptors for wrk -c1000 and 10,000 idle connections (both legs in each proxy);
    without CAP_SYS_RESOURCE (a container) only up to the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(hard, 200000), max(hard, 200000)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def mixed_idle():
    """MIXED_IDLE, or as many as one proxy process can hold under this descriptor limit: each
    proxied connection takes two descriptors (20,000 allows 9,000, with room for the rest)."""
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return min(MIXED_IDLE, (limit - 2000) // 2)


def nofile():
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def haproxy_maxconn():
    """haproxy refuses to start unless 2 × maxconn + 2 × maxpipes (200, plenty for splice-auto
    here) + a few fit its descriptor limit."""
    return min(25000, (nofile() - 500) // 2)


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
    for port in (19201, 19202):  # what roundhouse's check asks a node about itself (its roles)
        node = {"name": "es-%d" % port, "roles": ["data", "master"], "version": "8.11.1",
                "http": {"publish_address": "127.0.0.1:%d" % port}}
        with open(os.path.join(d, "www", "nodes-%d.json" % port), "w") as f:
            json.dump({"_nodes": {"total": 1, "successful": 1, "failed": 0}, "cluster_name": "bench",
                       "nodes": {"node-%d" % port: node}}, f)
    hits = [{"_index": "logs", "_id": str(i), "_score": 1.0, "_source": {"msg": "event %d" % i, "level": "info"}}
            for i in range(12)]
    with open(os.path.join(d, "www", "search.json"), "w") as f:
        json.dump({"took": 1, "timed_out": False, "hits": {"total": {"value": 12}, "hits": hits}}, f)
    hits = [{"_index": "logs-2026.11", "_id": "%08d" % i, "_score": 1.0,
             "_source": {"@timestamp": "2026-11-30T12:00:%02d.%03dZ" % (i % 60, i % 1000), "level": "info",
                         "message": "request %d served in %d ms by node es-%d" % (i, i % 97, i % 3)}}
            for i in range(LARGE_HITS)]
    with open(os.path.join(d, "www", "large.json"), "w") as f:
        json.dump({"took": 12, "timed_out": False, "hits": {"total": {"value": LARGE_HITS}, "hits": hits}}, f)


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
    """CPU seconds (user + system, all threads) used so far by the processes of a group, and the
    user part of them."""
    ticks = [(int(fields[11]), int(fields[12])) for _, fields in group_pids(pgid)]
    user = sum(u for u, _ in ticks)
    return (user + sum(s for _, s in ticks)) / os.sysconf("SC_CLK_TCK"), user / os.sysconf("SC_CLK_TCK")


def group_task_files(pgid, name):
    """The text of /proc/PID/task/TID/`name` for every thread of a process group (a thread that
    ends meanwhile is skipped)."""
    for pid, _ in group_pids(pgid):
        try:
            tasks = os.listdir("/proc/%s/task" % pid)
        except OSError:
            continue
        for tid in tasks:
            try:
                with open("/proc/%s/task/%s/%s" % (pid, tid, name)) as f:
                    yield f.read()
            except OSError:
                pass


def group_ctx_switches(pgid):
    """Context switches (voluntary + involuntary) so far of every thread of a process group."""
    total = 0
    for text in group_task_files(pgid, "status"):
        try:
            total += sum(int(l.split()[1]) for l in text.splitlines() if "ctxt_switches:" in l)
        except ValueError:
            pass
    return total


def group_runqueue_wait_s(pgid):
    """Seconds the threads of a process group have so far waited, runnable, for a CPU (the second
    field of /proc/PID/task/TID/schedstat): what a thread that cannot run where it is costs."""
    total = 0
    for text in group_task_files(pgid, "schedstat"):
        try:
            total += int(text.split()[1])
        except (ValueError, IndexError):
            pass
    return total / 1e9


def roundhouse_workers(admin=19902):
    """roundhouse's accepted connections per worker, from its metrics."""
    text = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % admin, timeout=5).read().decode()
    # (and roundhouse_worker_connections_total: what served connections were called in a build
    # that handed connections between workers, kept to compare with it)
    found = re.findall(r'^roundhouse_worker_connections(?:_accepted)?_total\{worker="(\d+)"\} (\d+)', text, re.M)
    return [int(n) for _, n in sorted(found, key=lambda w: int(w[0]))]


def wait_servers_up(admin, timeout=15.0):
    """Waits until roundhouse has both JSON backends in rotation again: on a busy machine a check
    times out now and then, and a load started then would measure refusals."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        text = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % admin, timeout=5).read().decode()
        if re.search(r'^roundhouse_backend_servers_up\{backend="es"\} 2$', text, re.M):
            return
        time.sleep(0.1)
    print("  (roundhouse on admin port %d: not both servers up after %.0f s)" % (admin, timeout), flush=True)


def haproxy_workers(sock_path):
    """haproxy's connections per thread, from `show activity` on its stats socket. `accepted`
    counts where accept() ran; haproxy then pushes each to the accept queue of the thread it
    picks, its own included (`accq_pushed`, counted on the receiving thread): that is the spread."""
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(5)
    s.connect(sock_path)
    s.sendall(b"show activity\n")
    out = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        out += chunk
    s.close()
    def per_thread(name):
        line = re.search(r"^%s:\s*\d*\s*\[([\d\s]+)\]" % name, out.decode(), re.M)
        return [int(n) for n in line.group(1).split()] if line else []
    pushed = per_thread("accq_pushed")
    return pushed if sum(pushed) else per_thread("accepted")


def usage(pgid):
    """What a process group has used so far: CPU seconds (total, user), context switches, and
    seconds waited for a CPU."""
    return (*group_cpu_s(pgid), group_ctx_switches(pgid), group_runqueue_wait_s(pgid))


def used_since(before, pgid):
    """(CPU, user, context switches, run-queue wait) since `before` (a `usage`), or Nones without
    a group."""
    return tuple(b - a for a, b in zip(before, usage(pgid))) if pgid else (None,) * 4


def machine_ticks():
    """(busy, all) clock ticks of every CPU so far, from /proc/stat (idle and iowait not busy)."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:]]
    return sum(ticks) - ticks[3] - ticks[4], sum(ticks)


def busy_share(before, after):
    """The share of every CPU's time between two `machine_ticks` that was busy at all."""
    (busy0, all0), (busy1, all1) = before, after
    return (busy1 - busy0) / max(1, all1 - all0)


def around_load():
    """What the machine, the wrk client and the backends have used so far (see `others_between`)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (machine_ticks(), children.ru_utime + children.ru_stime,
            group_cpu_s(BACKENDS["pgid"])[0] if BACKENDS else None)


def others_between(before, after, requests):
    """Besides the proxy, per request between two `around_load`s: the wrk client's CPU (the child
    that ended between them) and the backends', in µs, and the share of the machine's CPU time
    that was busy at all. wrk, the backends and the proxy share the two cores: a proxy that
    leaves them idle more often gets a lower rate for the same CPU per request."""
    ticks0, client0, backends0 = before
    ticks1, client1, backends1 = after
    result = {"busy_share": busy_share(ticks0, ticks1),
              "client_us_per_req": (client1 - client0) * 1e6 / requests}
    if backends0 is not None:
        result["backends_us_per_req"] = (backends1 - backends0) * 1e6 / requests
    return result


def wrk_command(port, secs, conns, close, path="/search.json", latency=False):
    """One wrk thread with `conns` connections for `secs`; with `close`, a new one per request;
    with `latency`, the percentiles printed."""
    cmd = ["wrk", "-t1", "-c%d" % conns, "-d%ds" % secs] + (["--latency"] if latency else [])
    if close:
        cmd += ["-H", "Connection: close"]
    return cmd + ["http://127.0.0.1:%d%s" % (port, path)]


def wrk(port, secs, conns, close, pgid=None, workers=None, path="/search.json"):
    if port in READY:
        wait_servers_up(READY[port])
    before = usage(pgid) if pgid else None
    others = around_load()
    spread_before = workers() if workers else None
    out = subprocess.run(wrk_command(port, secs, conns, close, path, latency=True),
                         capture_output=True, text=True).stdout
    cpu, user, ctx, waited = used_since(before, pgid)
    others = (others, around_load())
    spread = [b - a for a, b in zip(spread_before, workers())] if workers else None
    found = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not found:
        sys.exit("wrk printed no rate:\n" + out)
    if re.search(r"^\s*0 requests in", out, re.M):
        return {"rps": 0.0, "p50_ms": float("nan"), "p99_ms": float("nan"), "errors": "no request completed: " + out}

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
        # the part spent in the proxy's own code (the rest is the kernel moving the bytes): where
        # a change to roundhouse's code shows, without the kernel's run-to-run variation
        result["user_us_per_req"] = user * 1e6 / int(requests.group(1))
    if ctx is not None and requests:
        result["ctx_per_req"] = ctx / int(requests.group(1))
        result["rq_wait_us_per_req"] = waited * 1e6 / int(requests.group(1))
    if requests and int(requests.group(1)):
        result.update(others_between(*others, int(requests.group(1))))
    if spread:
        result["spread"] = "/".join(map(str, spread))
        # the busiest worker's share over an even share: 1.0 is even, 2.0 one of two took all
        result["max_share"] = max(spread) * len(spread) / max(1, sum(spread))
    return result


def iperf(port, secs, pgid=None):
    before = usage(pgid) if pgid else None
    ticks0 = machine_ticks()
    out = subprocess.run(["iperf3", "-c", "127.0.0.1", "-p", str(port), "-t", str(secs), "-J"],
                         capture_output=True, text=True).stdout
    ticks1 = machine_ticks()
    end = json.loads(out)["end"]["sum_received"]
    # the share of both cores busy at all: iperf3's two ends, the loopback and the proxy share them
    result = {"gbit_s": end["bits_per_second"] / 1e9, "busy_share": busy_share(ticks0, ticks1)}
    if pgid:
        # what a GiB costs the proxy, as CPU per request does for the wrk loads
        cpu, _, ctx, _ = used_since(before, pgid)
        gib = end["bytes"] / 2**30
        result["cpu_ms_per_gib"] = cpu * 1e3 / gib
        result["ctx_per_mib"] = ctx / (gib * 1024)
    return result


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


def open_idle(port, n):
    """n proxied connections, each with a completed request, so both legs of each exist."""
    socks = []
    try:
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", port), 5)
            s.sendall(b"GET /_cluster/health HTTP/1.1\r\nHost: x\r\n\r\n")
            socks.append(s)
        for s in socks:
            s.settimeout(10)
            s.recv(4096)
    except OSError:
        close_all(socks)
        raise
    return socks


def close_all(socks):
    for s in socks:
        s.close()


def idle(port, pgid, n=4000):
    before = group_rss_kib(pgid)
    socks = open_idle(port, n)
    time.sleep(0.5)
    after = group_rss_kib(pgid)
    close_all(socks)
    return {"kib_per_conn": (after - before) / n, "rss_mib": after / 1024.0}


def mixed(port, secs, pgid, workers):
    """Keep-alive -c64 without, then with MIXED_IDLE idle proxied connections held open."""
    base = wrk(port, secs, 64, False, pgid, workers)
    before = workers() if workers else None
    socks = open_idle(port, mixed_idle())
    try:
        idle_spread = [b - a for a, b in zip(before, workers())] if workers else None
        loaded = wrk(port, secs, 64, False, pgid, workers)
    finally:
        close_all(socks)
        time.sleep(2)  # the proxy closes both legs of each: not during the next load
    r = {k: v for k, v in loaded.items()}
    r.update({"base_rps": base["rps"], "base_p99_ms": base["p99_ms"],
              "p99_vs_base": loaded["p99_ms"] / base["p99_ms"], "rps_vs_base": loaded["rps"] / base["rps"]})
    if "rq_wait_us_per_req" in base:
        r["base_rq_wait_us_per_req"] = base["rq_wait_us_per_req"]
    if idle_spread:
        r["idle_spread"] = "/".join(map(str, idle_spread))
    return r


def syscalls(port, secs, pgid):
    """System calls per keep-alive request, by call, with `strace -c -f` on every process of the group."""
    out = os.path.join(tempfile.mkdtemp(prefix="roundhouse-strace-"), "strace.txt")
    pids = [pid for pid, _ in group_pids(pgid)]
    tracer = subprocess.Popen(["strace", "-c", "-f", "-o", out] + [a for p in pids for a in ("-p", p)],
                              stderr=subprocess.DEVNULL)
    time.sleep(1)  # attached to every thread
    text = subprocess.run(wrk_command(port, secs, 64, False), capture_output=True, text=True).stdout
    tracer.send_signal(signal.SIGINT)
    tracer.wait(30)
    found = re.search(r"(\d+) requests in", text)
    requests = int(found.group(1)) if found else 0
    if not requests:
        return {"total_per_req": float("nan"), "by_call": "no request completed under strace: " + text[-300:]}
    calls = {}
    for line in open(out):
        m = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)$", line)
        if m and m.group(2) != "total":
            calls[m.group(2)] = int(m.group(1)) / requests
    shutil.rmtree(os.path.dirname(out), ignore_errors=True)
    top = sorted(calls.items(), key=lambda c: -c[1])
    result = {"total_per_req": sum(calls.values()),
              "by_call": " ".join("%s=%.2f" % (k, v) for k, v in top if v >= 0.01)}
    result.update(sleeps(port, secs, pids))
    result.update(close_calls(port, secs, pids))
    return result


def sleeps(port, secs, pids):
    """epoll_wait calls and context switches per keep-alive request counted by `perf stat`
    (kernel counters: the proxy runs at full speed, where strace batches its events)."""
    events = "syscalls:sys_enter_epoll_wait,syscalls:sys_enter_epoll_pwait,context-switches"
    counts, n = perf_counts(port, secs, pids, events, close=False)
    if not counts:
        return {}
    epoll = counts.get("syscalls:sys_enter_epoll_wait", 0) + counts.get("syscalls:sys_enter_epoll_pwait", 0)
    return {"perf_epoll_wait_per_req": epoll / n, "perf_ctx_per_req": counts.get("context-switches", 0) / n}


def close_calls(port, secs, pids):
    """System calls per `Connection: close` request (a proxied connection each), by call, counted
    by `perf stat` on the syscall tracepoints at full speed."""
    counts, n = perf_counts(port, secs, pids, "syscalls:sys_enter_*", close=True)
    if not counts:
        return {}
    calls = {k.split("sys_enter_", 1)[1]: v / n for k, v in counts.items() if v}
    top = sorted(calls.items(), key=lambda c: -c[1])
    return {"close_total_per_conn": sum(calls.values()),
            "close_by_call": " ".join("%s=%.2f" % (k, v) for k, v in top if v >= 0.01)}


def perf_counts(port, secs, pids, events, close):
    """`perf stat -e events` on `pids` over a wrk load (-c64 keep-alive, or -c32 with
    `Connection: close`): the counts by event, and the requests wrk completed. ({}, 0) without
    perf or without a completed request."""
    if not shutil.which("perf"):
        return {}, 0
    out = os.path.join(tempfile.mkdtemp(prefix="roundhouse-perf-"), "perf.txt")
    counter = subprocess.Popen(["perf", "stat", "-x,", "-e", events, "-p", ",".join(pids), "-o", out],
                               stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    text = subprocess.run(wrk_command(port, secs, 32 if close else 64, close),
                          capture_output=True, text=True).stdout
    counter.send_signal(signal.SIGINT)
    counter.wait(30)
    found = re.search(r"(\d+) requests in", text)
    counts = {}
    for line in open(out):
        fields = line.split(",")
        if len(fields) > 2 and fields[0].isdigit():
            counts[fields[2]] = counts.get(fields[2], 0) + int(fields[0])
    shutil.rmtree(os.path.dirname(out), ignore_errors=True)
    if not found or not counts or not int(found.group(1)):
        return {}, 0
    return counts, int(found.group(1))


def one_run(args, binary, run_index):
    d = tempfile.mkdtemp(prefix="roundhouse-bench-")
    os.chmod(d, 0o755)
    procs = Processes(d)
    # --pinned: one thread per CPU for haproxy (its default thread count is the CPUs it may use),
    # as roundhouse's pin_workers does
    cpus = len(os.sched_getaffinity(0))
    cpu_map = "  cpu-map auto:1/1-%d 0-%d\n" % (cpus, cpus - 1) if args.pinned else ""
    pinned = "true" if args.pinned else "false"

    def conf(name, text):
        path = os.path.join(d, name)
        with open(path, "w") as f:
            f.write(text)
        return path
    try:
        write_site(d)
        BACKENDS["pgid"] = procs.start("backends", ["nginx", "-c", conf("backends.conf", BACKENDS_CONF.format(d=d, nofile=nofile())), "-p", d], 19201).pid
        procs.start("iperf3", ["iperf3", "-s", "-p", "19203"], 19203)
        groups = {
            "haproxy": procs.start("haproxy", ["haproxy", "-f", conf("haproxy.cfg", HAPROXY_CONF.format(
                d=d, maxconn=haproxy_maxconn(), cpu_map=cpu_map))],
                                   19100).pid,
            "nginx": procs.start("nginx", ["nginx", "-c", conf("stream.conf", NGINX_STREAM_CONF.format(
                d=d, module=STREAM_MODULE, nofile=nofile())), "-p", d], 19101).pid,
            "roundhouse": procs.start("roundhouse", [binary, "run", "--config", conf("roundhouse.yaml", ROUNDHOUSE_CONF.format(
                admin=19902, http=19102, bulk=19112, pinned=pinned))], 19102).pid,
        }
        ports = {"direct": (19201, 19203), "haproxy": (19100, 19110), "nginx": (19101, 19111),
                 "roundhouse": (19102, 19112)}
        workers = {"roundhouse": roundhouse_workers,
                   "haproxy": lambda: haproxy_workers(os.path.join(d, "haproxy.sock"))}
        if args.baseline:
            groups["baseline"] = procs.start("baseline", [args.baseline, "run", "--config", conf(
                "baseline.yaml", ROUNDHOUSE_CONF.format(admin=19903, http=19103, bulk=19113, pinned=pinned))], 19103).pid
            ports["baseline"] = (19103, 19113)
            workers["baseline"] = lambda: roundhouse_workers(19903)
        for port in [bulk for _, bulk in ports.values()]:
            if not wait_port(port):
                sys.exit("nothing listens on %d" % port)
        time.sleep(1.5)  # let every proxy's health checks mark the backends up
        # Load by load, every proxy in turn, and every other run in the reverse order: the machine
        # drifts over a run (one proxy's loads all in a row measured up to 5% apart from the same
        # binary run second), and no proxy should always be first or last.
        order = [name for name in ports if name in args.proxies]
        if run_index % 2:
            order.reverse()
        result = {name: {} for name in order}
        for load in LOADS_IN_ORDER:
            if load not in args.only:
                continue
            for name in order:
                (http_port, bulk_port), r = ports[name], result[name]
                pgid, spread = groups.get(name), workers.get(name)
                if load == "keepalive":
                    r[load] = wrk(http_port, args.secs, 64, False, pgid, spread)
                elif load == "syscalls" and name in groups:
                    r[load] = syscalls(http_port, args.secs, groups[name])
                elif load == "close":
                    r[load] = wrk(http_port, args.secs, 32, True, pgid, spread)
                elif load == "bulk":
                    r[load] = iperf(bulk_port, args.secs, pgid)
                elif load == "large":
                    r[load] = wrk(http_port, args.secs, 8, False, pgid, spread, "/large.json")
                    size = os.path.getsize(os.path.join(d, "www", "large.json"))
                    r[load]["gbit_s"] = r[load]["rps"] * size * 8 / 1e9
                elif load == "idle" and name in groups:
                    r[load] = idle(http_port, groups[name])
                elif load == "keepalive-1k":
                    r[load] = wrk(http_port, args.secs, 1000, False, pgid, spread)
                elif load == "mixed":
                    r[load] = mixed(http_port, args.secs, pgid, spread)
                if load in r:
                    print("  %-10s %-9s %s" % (name, load, "  ".join(
                        "%s=%s" % (k, "%.3f" % x if isinstance(x, float) else x)
                        for k, x in r[load].items())), flush=True)
        return result
    finally:
        procs.stop_all()
        shutil.rmtree(d, ignore_errors=True)


def median(runs, proxy, load, key):
    values = [r[proxy][load][key] for r in runs if key in r.get(proxy, {}).get(load, {})]
    return statistics.median(values) if values else float("nan")


def ratio(runs, load, key, of="roundhouse", to="haproxy"):
    """The median over runs of of/to, each ratio taken within one run."""
    values = [r[of][load][key] / r[to][load][key] for r in runs
              if key in r.get(of, {}).get(load, {}) and key in r.get(to, {}).get(load, {})]
    return statistics.median(values) if values else float("nan")


def report(runs, only):
    proxies = PROXIES + (("baseline",) if "baseline" in runs[0] else ())
    print("\nmedians of %d run(s); ratio = roundhouse / haproxy (same run)%s\n" % (
        len(runs), "; vs baseline = roundhouse / baseline (same run)" if "baseline" in proxies else ""))
    print("| load | direct | %s | ratio | target | met |%s" % (
        " | ".join(proxies), "" if "baseline" not in proxies else " vs baseline |"))
    print("|---|---|%s---|---|---|%s" % ("---|" * len(proxies), "" if "baseline" not in proxies else "---|"))

    def row(label, load, key, fmt, target=None, higher=True, direct=True):
        v = [median(runs, p, load, key) for p in ("direct",) + proxies]
        cells = [fmt % x if x == x else "" for x in v]
        if not direct:
            cells[0] = ""
        r = ratio(runs, load, key)
        met = ""
        if target is not None:
            met = "yes" if (r >= target if higher else r <= target) else "NO"
        line = "| %s | %s | %.2f× | %s | %s |" % (
            label, " | ".join(cells), r, "" if target is None else ("≥ %.2f×" if higher else "≤ %.2f×") % target, met)
        if "baseline" in proxies:
            line += " %.2f× |" % ratio(runs, load, key, "roundhouse", "baseline")
        print(line)

    for load in ("keepalive", "keepalive-1k", "close", "bulk"):
        if load not in only:
            continue
        key, _, target = TARGETS[load]
        unit = "req/s" if key == "rps" else "Gbit/s"
        row("%s (%s)" % (load, unit), load, key, "%.0f" if key == "rps" else "%.2f", target)
        if load.startswith("keepalive"):
            row("%s p99 (ms)" % load, load, "p99_ms", "%.2f", 1.00, higher=False)
        if load == "bulk":
            row("bulk, proxy CPU (ms/GiB)", load, "cpu_ms_per_gib", "%.0f", None, False, False)
            row("bulk, context switches/MiB", load, "ctx_per_mib", "%.2f", None, False, False)
            row("bulk, machine busy (share of both cores)", load, "busy_share", "%.3f")
        if key == "rps":
            row("%s, proxy CPU (µs/req)" % load, load, "cpu_us_per_req", "%.1f", CPU_TARGET, False, False)
            row("%s, of which user space (µs/req)" % load, load, "user_us_per_req", "%.2f", None, False, False)
            row("%s, context switches/req" % load, load, "ctx_per_req", "%.3f", None, False, False)
            row("%s, waited for a CPU (µs/req)" % load, load, "rq_wait_us_per_req", "%.2f", None, False, False)
            row("%s, busiest worker's share (1.00 = even)" % load, load, "max_share", "%.2f", None, False, False)
            row("%s, wrk's CPU (µs/req)" % load, load, "client_us_per_req", "%.1f", None, False)
            row("%s, the backends' CPU (µs/req)" % load, load, "backends_us_per_req", "%.1f", None, False)
            row("%s, machine busy (share of both cores)" % load, load, "busy_share", "%.3f")
    if "large" in only:
        row("large, 1 MiB answers (Gbit/s)", "large", "gbit_s", "%.2f")
        row("large, proxy CPU (µs/answer)", "large", "cpu_us_per_req", "%.1f", None, False, False)
        row("large, of which user space (µs/answer)", "large", "user_us_per_req", "%.2f", None, False, False)
    if "mixed" in only:
        row("mixed (req/s, %d idle)" % mixed_idle(), "mixed", "rps", "%.0f", 1.00)
        row("mixed, same load without idle (req/s)", "mixed", "base_rps", "%.0f")
        row("mixed p99 (ms)", "mixed", "p99_ms", "%.2f", 1.00, higher=False)
        row("mixed, same load without idle: p99 (ms)", "mixed", "base_p99_ms", "%.2f")
        v = {p: median(runs, p, "mixed", "p99_vs_base") for p in proxies}
        print("| mixed p99 with/without idle | | %s | | ≤ %.2f× | %s |" % (
            " | ".join("%.2f×" % v[p] for p in proxies), MIXED_P99_TARGET,
            "yes" if v["roundhouse"] <= MIXED_P99_TARGET else "NO"))
        row("mixed, proxy CPU (µs/req)", "mixed", "cpu_us_per_req", "%.1f", None, False, False)
        row("mixed, context switches/req", "mixed", "ctx_per_req", "%.3f", None, False, False)
        row("mixed, waited for a CPU (µs/req)", "mixed", "rq_wait_us_per_req", "%.2f", None, False, False)
    if "idle" in only:
        v = {p: median(runs, p, "idle", "kib_per_conn") for p in proxies}
        print("| idle (KiB/conn) | | %s | | ≤ %.1f | %s |" % (
            " | ".join("%.2f" % v[p] for p in proxies), IDLE_TARGET_KIB,
            "yes" if v["roundhouse"] <= IDLE_TARGET_KIB else "NO"))
    spreads = [(p, load, r[p][load]["spread"]) for r in runs for p in proxies for load in WRK_LOADS
               if "spread" in r.get(p, {}).get(load, {})]
    if spreads:
        print("\nconnections accepted per worker thread, each run (keepalive: the 64; keepalive-1k: the 1000):")
        for p in proxies:
            for load in WRK_LOADS:
                got = [sp for q, l, sp in spreads if q == p and l == load]
                if got:
                    print("  %-10s %-12s %s" % (p, load, "  ".join(got)))
    if "syscalls" in only:
        print("\nsystem calls per keep-alive request (strace -c -f; the proxy slowed by strace):")
        for p in proxies:
            for r in runs:
                if "syscalls" in r.get(p, {}):
                    sc = r[p]["syscalls"]
                    print("  %-10s %.2f: %s" % (p, sc["total_per_req"], sc["by_call"]))
                    if "perf_ctx_per_req" in sc:
                        print("  %-10s without strace (perf stat): epoll_wait %.3f, context switches %.3f per request"
                              % ("", sc["perf_epoll_wait_per_req"], sc["perf_ctx_per_req"]))
                    if "close_total_per_conn" in sc:
                        print("  %-10s per Connection: close request (perf stat): %.2f: %s"
                              % ("", sc["close_total_per_conn"], sc["close_by_call"]))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--secs", type=int, default=6)
    ap.add_argument("--only", default=DEFAULT_LOADS)
    ap.add_argument("--proxies", default="direct,haproxy,nginx,roundhouse,baseline",
                    help="measure only these (the table needs haproxy and roundhouse)")
    ap.add_argument("--binary", help="roundhouse binary (default: build target/release/roundhouse)")
    ap.add_argument("--install", action="store_true", help="apt-get install missing tools")
    ap.add_argument("--json", help="write every run's raw figures here")
    ap.add_argument("--pinned", action="store_true",
                    help="pin both proxies' threads, one per CPU: haproxy with cpu-map, roundhouse "
                         "with pin_workers (the default leaves both unpinned)")
    ap.add_argument("--baseline", help="a second roundhouse binary (say, before a change) measured in the same "
                                       "runs as 'baseline', on ports 19103/19113, admin 19903")
    args = ap.parse_args()
    args.only = args.only.split(",")
    args.proxies = args.proxies.split(",")
    ensure_tools(args.install)
    raise_fd_limit()
    binary = args.binary
    if not binary:
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
        binary = os.path.join(ROOT, "target", "release", "roundhouse")
    runs = []
    for i in range(args.runs):
        print("run %d/%d" % (i + 1, args.runs), flush=True)
        runs.append(one_run(args, binary, i))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(runs, f, indent=1)
    report(runs, args.only)


if __name__ == "__main__":
    main()
