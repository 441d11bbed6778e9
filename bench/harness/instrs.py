#!/usr/bin/env python3
"""instrs.py - user-space instructions per request, attache-proxy beside HAProxy and nginx, counted by callgrind.

    bench/harness/instrs.py [--targets haproxy,nginx,bare,realistic] [--n1 2000] [--n2 10000]

Targets: haproxy, nginx, attaché's variants (bare, realistic, traced) and hyper-floor, the least a proxy on our
stack does (bench/src/bin/hyper_floor.rs; `cargo build --release -p attache-bench --bin hyper-floor` into the
directory of --bin).

Timed CPU figures on a shared VM move by 10-70% between runs; an instruction count does not: valgrind counts the
instructions each proxy executes in user space, the same for the same binary and input whatever else the machine
does. Each target runs under `valgrind --tool=callgrind` twice per protocol, serving N1 and N2 requests from
h2load (HTTP/1.1 keep-alive over 4 connections, h2c over 1 connection with 16 streams); (Ir(N2) - Ir(N1)) /
(N2 - N1) removes start-up and shutdown. The peers run the configurations of proxybench.py (HAProxy nbthread 1,
nginx one worker with master_process off), against the same nginx backend; every proxy is pinned to core 1, as in
the benchmark's split layout (so attaché runs its one-core, current-thread runtime).

What it does not count: the kernel (syscalls, loopback TCP), about half of a proxy's CPU per request here (see
BENCHMARKS.md), and cache or branch behaviour. It is the repeatable half, for A/B of a change and for the ratio
against the peers' user-space work.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import proxybench as pb  # noqa: E402  (configs, backend, ports)

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
ATTACHE_VARIANTS = ("bare", "realistic", "traced")


def command(name, w, bin_):
    """The target's foreground command and its h1 / h2c ports."""
    if name == "hyper-floor":
        # The floor under attaché: hyper and tokio alone (bench/src/bin/hyper_floor.rs), built beside the sidecar.
        floor = os.path.join(os.path.dirname(bin_), "hyper-floor")
        upstream = f"{pb.HOST}:{pb.BACKEND_PORT} {pb.HOST}:{pb.BACKEND_H2_PORT}"
        return f"{floor} {pb.HOST}:18190 {pb.HOST}:18191 {upstream}", 18190, 18191
    if name in ATTACHE_VARIANTS:
        sh = os.path.join(ROOT, "bench", "harness", "attache.sh")
        upstream = f"{pb.HOST}:{pb.BACKEND_PORT} {pb.HOST}:{pb.BACKEND_H2_PORT}"
        return f"env ATTACHE_PROXY={bin_} {sh} {name} 18190 18191 {upstream} {w}", 18190, 18191
    targets = pb.builtin_targets(w, "x" * 64)
    cmd, port, h2_port, _ = targets[name]
    if name.startswith("nginx"):
        # One process, so valgrind follows the worker: no master, no daemon.
        cmd = cmd.replace("-g 'daemon off;'", "-g 'daemon off; master_process off;'")
    return cmd.format(workdir=w), port, h2_port


def count(name, proto, n, w, args):
    """Ir of one run of target `name` serving n requests over proto."""
    out = os.path.join(w, f"cg.{name}.{proto}.{n}")
    cmd, port, h2_port = command(name, w, args.bin)
    # attache.sh execs $ATTACHE_PROXY: wrap it; the peers are wrapped directly.
    if name in ATTACHE_VARIANTS:
        wrapper = os.path.join(w, "valgrind-attache.sh")
        with open(wrapper, "w") as f:
            f.write(f'#!/bin/sh\nexec valgrind --tool=callgrind --callgrind-out-file={out} {args.bin} "$@"\n')
        os.chmod(wrapper, 0o755)
        cmd = cmd.replace(f"ATTACHE_PROXY={args.bin}", f"ATTACHE_PROXY={wrapper}")
    else:
        cmd = f"valgrind --tool=callgrind --callgrind-out-file={out} {cmd}"
    log = open(out + ".log", "w")
    p = subprocess.Popen(["taskset", "-c", "1", "sh", "-c", "exec " + cmd], stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                         cwd=w)
    try:
        target = port if proto == "h1" else h2_port
        if not pb.wait_port(target, 60):
            raise RuntimeError(f"{name} did not listen on {target}; see {out}.log")
        url = pb.url(target)
        # One request first, so lazily built state (upstream connections) is in both runs alike.
        h2load(proto, url, 16)
        h2load(proto, url, n)
    finally:
        for pid in pb.proc_tree(p.pid):
            try:
                os.kill(pid, 15)
            except ProcessLookupError:
                pass
        p.wait(60)
        log.close()
    return total_ir(out)


def h2load(proto, url, n):
    flags = ["--h1", "-c4", "-m1"] if proto == "h1" else ["-c1", "-m16"]
    r = subprocess.run(["h2load", "-n", str(n)] + flags + [url], capture_output=True, text=True, timeout=600)
    done = re.search(r"(\d+) succeeded", r.stdout)
    if r.returncode != 0 or not done or int(done.group(1)) != n:
        raise RuntimeError(f"h2load {proto} {url}: {r.stdout[-400:]} {r.stderr[-400:]}")


def total_ir(out):
    """Summed Ir over the callgrind output files of the run (one per process/thread)."""
    total, found = 0, False
    d = os.path.dirname(out)
    for f in os.listdir(d):
        if f.startswith(os.path.basename(out)) and not f.endswith(".log"):
            with open(os.path.join(d, f)) as fh:
                for line in fh:
                    if line.startswith("summary:") or line.startswith("totals:"):
                        total += int(line.split()[1])
                        found = True
                        break
    if not found:
        raise RuntimeError(f"no callgrind totals for {out}")
    return total


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--targets", default="haproxy,nginx,bare,realistic")
    ap.add_argument("--n1", type=int, default=2000)
    ap.add_argument("--n2", type=int, default=10000)
    ap.add_argument("--bin", default=os.environ.get("ATTACHE_PROXY",
                                                    os.path.join(ROOT, "target", "release", "attache-proxy")))
    args = ap.parse_args()
    args.bin = os.path.abspath(args.bin)
    for tool in ("valgrind", "h2load", "nginx", "haproxy"):
        if not shutil.which(tool):
            sys.exit(f"{tool} not found: run bench/harness/run.sh setup")
    w = tempfile.mkdtemp(prefix="attache-instrs.")
    for sub in ("cb", "pt", "ft", "ut", "st"):
        os.makedirs(os.path.join(w, sub))
    with open(os.path.join(w, "backend.conf"), "w") as f:
        f.write(pb.NGINX_BACKEND.format(w=w, h=pb.HOST, p=pb.BACKEND_PORT, p2=pb.BACKEND_H2_PORT, body="x" * 64))
    backend = subprocess.Popen(["nginx", "-p", w, "-g", "daemon off;", "-c", os.path.join(w, "backend.conf")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        if not pb.wait_port(pb.BACKEND_PORT):
            sys.exit("backend did not start")
        rows = {}
        for name in args.targets.split(","):
            for proto in ("h1", "h2c"):
                a, b = count(name, proto, args.n1, w, args), count(name, proto, args.n2, w, args)
                rows[(name, proto)] = (b - a) / (args.n2 - args.n1)
                print(f"  {name} {proto}: {rows[(name, proto)]:,.0f} instructions/request", file=sys.stderr)
        base = {p: rows.get(("haproxy", p)) for p in ("h1", "h2c")}
        print(f"user-space instructions per request (callgrind; N1={args.n1}, N2={args.n2}; "
              f"h1: h2load --h1 -c4, h2c: -c1 -m16)\n")
        print("| target | proto | instructions / request | × HAProxy |")
        print("|---|---|---|---|")
        for (name, proto), v in rows.items():
            ratio = f"{v / base[proto]:.2f}" if base[proto] else "-"
            print(f"| {name} | {proto} | {v:,.0f} | {ratio} |")
    finally:
        backend.terminate()
        backend.wait(10)
        time.sleep(0.2)
        if not os.environ.get("KEEP"):
            shutil.rmtree(w, ignore_errors=True)


if __name__ == "__main__":
    main()
