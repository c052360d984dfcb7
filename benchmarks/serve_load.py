#!/usr/bin/env python
"""Bounded load test of `vitdeploy serve` on loopback, beside the direct Runner.

N concurrent clients (one tritonclient each, in threads of this process) send single-image
requests for T seconds to a real Triton server (`vitdeploy serve --ready-json`, a separate
process) - once with dynamic batching, once without - and the same model is timed directly on
the Runner at batch 1 and at the max batch. Prints a Markdown table and writes JSON.

    python benchmarks/serve_load.py                       # EfficientViT-M0 export, 8 clients, 10 s
    python benchmarks/serve_load.py m4.onnx --clients 16 --duration 20 --protocol http

Client and server share the machine: on a small CPU box the clients' own work is part of what is
measured, so compare rows of one run, not runs across machines.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
MAX_CLIENTS = 64
MAX_DURATION_S = 120


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def default_artifact(workdir: Path) -> Path:
    out = workdir / "efficientvit_m0.onnx"
    print("exporting efficientvit_m0 (random weights) ...", file=sys.stderr, flush=True)
    subprocess.run([sys.executable, "-m", "vitdeploy.cli", "-q", "export", "efficientvit_m0", "-o", str(out)],
                   check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    return out


def percentiles(lat_s):
    if not lat_s:
        return {"p50_ms": None, "p90_ms": None, "p99_ms": None, "mean_ms": None}
    a = np.asarray(lat_s) * 1e3
    return {"p50_ms": float(np.percentile(a, 50)), "p90_ms": float(np.percentile(a, 90)),
            "p99_ms": float(np.percentile(a, 99)), "mean_ms": float(a.mean())}


def direct_runner(artifact: Path, x1: np.ndarray, max_batch: int, duration: float, threads):
    """Sequential Runner calls: the no-server reference at batch 1 and at the max batch."""
    from vitdeploy.engines.backends import make_artifact_runner

    rows = []
    runner = make_artifact_runner("ort", str(artifact), threads)
    name = runner.inputs[0].name
    for b in (1, max_batch):
        x = np.repeat(x1, b, axis=0)
        for _ in range(3):
            runner.infer({name: x})
        lat = []
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < duration:
            t = time.perf_counter()
            runner.infer({name: x})
            lat.append(time.perf_counter() - t)
        wall = time.perf_counter() - t0
        rows.append({"config": f"direct Runner (ort), batch {b}", "clients": 1, "requests": len(lat), "errors": 0,
                     "mean_batch": float(b),
                     "images_per_s": len(lat) * b / wall, **percentiles(lat)})
    runner.close()
    return rows


class Server:
    def __init__(self, artifact: Path, max_batch: int, delay_us: int, dynamic: bool, threads, instances: int):
        self.http, self.grpc, self.metrics = free_ports(3)
        cmd = [sys.executable, "-m", "vitdeploy.cli", "serve", "--ready-json", str(artifact),
               "--http-port", str(self.http),
               "--grpc-port", str(self.grpc), "--metrics-port", str(self.metrics), "--max-batch", str(max_batch),
               "--max-queue-delay-us", str(delay_us), "--instances", str(instances)]
        if not dynamic:
            cmd.append("--no-dynamic-batching")
        if threads:
            cmd += ["--threads", str(threads)]
        self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True)
        self.info, self.log = None, []
        deadline = time.monotonic() + 120
        for line in self.proc.stdout:
            self.log.append(line)
            if line.startswith("READY "):
                self.info = json.loads(line[6:])
                break
            if time.monotonic() > deadline:
                break
        if self.info is None:
            self.stop()
            raise SystemExit("server did not start:\n" + "".join(self.log[-20:]))
        threading.Thread(target=lambda: [self.log.append(x) for x in self.proc.stdout], daemon=True).start()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        return self.proc.returncode


def load(server: Server, protocol: str, clients: int, duration: float, x1: np.ndarray):
    if protocol == "http":
        import tritonclient.http as tc

        url = f"127.0.0.1:{server.http}"
    else:
        import tritonclient.grpc as tc

        url = f"127.0.0.1:{server.grpc}"
    model = server.info["model_name"]
    in_name = server.info["inputs"][0]["name"]
    out_name = server.info["outputs"][0]["name"]
    lat = [[] for _ in range(clients)]
    errors = [0] * clients
    messages = []
    start = threading.Barrier(clients + 1)
    t_begin = [0.0]

    def worker(i):
        c = tc.InferenceServerClient(url)
        inp = tc.InferInput(in_name, list(x1.shape), "FP32")
        inp.set_data_from_numpy(x1)
        outs = [tc.InferRequestedOutput(out_name)]
        start.wait()
        while True:
            now = time.perf_counter()
            if now - t_begin[0] >= duration:
                break
            try:
                c.infer(model, [inp], outputs=outs)
                lat[i].append(time.perf_counter() - now)
            except Exception as e:  # counted, not fatal: the point is to see them
                errors[i] += 1
                if len(messages) < 5:
                    messages.append(str(e)[:200])
        c.close()

    ths = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(clients)]
    for t in ths:
        t.start()
    t_begin[0] = time.perf_counter()
    start.wait()
    for t in ths:
        t.join(duration + 60)
    all_lat = [v for vs in lat for v in vs]
    return {"requests": len(all_lat), "errors": sum(errors), "images_per_s": len(all_lat) / duration,
            "error_messages": messages, **percentiles(all_lat)}


def counters(server: Server):
    """(images inferred, model executions) from the server's Prometheus metrics."""
    import urllib.request

    text = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics}/metrics", timeout=10).read().decode()

    def total(name):
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{"))

    return total("nv_inference_count"), total("nv_inference_exec_count")


def table(rows):
    head = "| configuration | clients | requests | errors | images/s | p50 ms | p90 ms | p99 ms | mean batch |"
    lines = [head, "|" + "---|" * 9]
    f = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    for r in rows:
        mb = r.get("mean_batch")
        lines.append(f"| {r['config']} | {r['clients']} | {r['requests']} | {r['errors']} | {r['images_per_s']:.1f} | "
                     f"{f(r['p50_ms'])} | {f(r['p90_ms'])} | {f(r['p99_ms'])} | {'-' if mb is None else f'{mb:.2f}'} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    p.add_argument("artifact", nargs="?", help=".onnx to serve (default: export efficientvit_m0)")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds per configuration")
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--protocol", choices=["grpc", "http"], default="grpc")
    p.add_argument("--max-batch", type=int, default=16)
    p.add_argument("--max-queue-delay-us", type=int, default=2000)
    p.add_argument("--instances", type=int, default=1)
    p.add_argument("--threads", type=int, default=None, help="ORT threads (server and direct Runner alike)")
    p.add_argument("--json", default=str(REPO / "benchmarks" / "results" / "serve_load.json"))
    a = p.parse_args(argv)
    if not (1 <= a.clients <= MAX_CLIENTS) or not (0 < a.duration <= MAX_DURATION_S):
        p.error(f"--clients must be 1..{MAX_CLIENTS} and --duration 0..{MAX_DURATION_S} s (a bounded test)")

    from vitdeploy.serving.repository import describe_artifact

    with tempfile.TemporaryDirectory() as tmp:
        artifact = Path(a.artifact) if a.artifact else default_artifact(Path(tmp))
        info = describe_artifact(artifact)
        shape = [1] + [int(d) for d in info.inputs[0].dims]
        x1 = np.random.default_rng(0).standard_normal(shape).astype(np.float32)

        rows = direct_runner(artifact, x1, a.max_batch, min(a.duration, 5.0), a.threads)
        for dynamic in (True, False):
            srv = Server(artifact, a.max_batch, a.max_queue_delay_us, dynamic, a.threads, a.instances)
            try:
                load(srv, a.protocol, a.clients, a.warmup, x1)  # warm-up, not measured
                n0, e0 = counters(srv)
                res = load(srv, a.protocol, a.clients, a.duration, x1)
                n1, e1 = counters(srv)
            finally:
                rc = srv.stop()
            label = (f"Triton {a.protocol}, dynamic batching (max {a.max_batch}, {a.max_queue_delay_us} us)"
                     if dynamic else f"Triton {a.protocol}, no dynamic batching")
            # mean batch the model actually ran = images inferred / executions (server's own counters)
            res["mean_batch"] = (n1 - n0) / (e1 - e0) if e1 > e0 else None
            rows.append({"config": label, "clients": a.clients, **res, "server_exit_code": rc})
        result = {
            "artifact": str(artifact), "model": info.metadata.get("model", info.name),
            "input_shape": shape, "protocol": a.protocol, "clients": a.clients, "duration_s": a.duration,
            "warmup_s": a.warmup, "max_batch": a.max_batch, "max_queue_delay_us": a.max_queue_delay_us,
            "instances": a.instances, "threads": a.threads, "machine": platform.node(),
            "cpu_count": os.cpu_count(), "rows": rows,
        }
    print(table(rows))
    out = Path(a.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmpf = out.with_name(out.name + ".tmp")
    tmpf.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmpf, out)
    print(f"\nwrote {out}")
    errors = sum(r["errors"] for r in rows)
    if errors:
        print(f"{errors} request(s) failed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
