"""Everything that needs a GPU, in one command: `make gpu-check OUT=dir` (issue 10).

1. tier 2: `pytest -m "gpu and not tensorrt"` (the CUDA kernels against the NumPy oracle);
2. benchmarks/window_ops_gpu.py: kernel bandwidth as a share of a device copy, per shape and dtype;
3. tier 3: `pytest -m tensorrt`, only where `import tensorrt` works (a lent GPU machine has torch, nvcc
   and a GPU, but usually no TensorRT: then tier 3 is reported as not run, with the reason);
4. RTX engines: whether this GPU runs them, in one line (on H100/H200: no, RTX has no sm_90 target).

Writes DIR/gpu_check.json and DIR/gpu_check.md (test counts, the bandwidth table and its verdict),
plus each step's junit XML / JSON / log. Budget: 8 minutes on one H200 (the steps' timeouts add up
to that). Exit 0 when every step that ran passed and the bandwidth target was met, 1 when something
failed, 2 with one line on stderr when this machine has no usable GPU.

    python benchmarks/gpu_check.py --out DIR
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BUDGET_S = 480  # 8 minutes on one H200
STEP_TIMEOUT_S = {"tier2": 240, "bandwidth": 150}  # tier 3 gets what is left of the budget


def _preflight() -> str | None:
    """Why this machine cannot run the GPU checks, or None."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from window_ops_gpu import gpu_missing

    from vitdeploy.plugins.build import find_nvcc

    why = gpu_missing()
    if why:
        return why
    if importlib.util.find_spec("pytest") is None:
        return f"pytest is not installed for {sys.executable}: pip install -e '.[test]'"
    if find_nvcc() is None:
        return "nvcc (CUDA toolkit) not found: the kernels are compiled here (put nvcc on PATH or set CUDA_HOME)"
    return None


def _tensorrt_missing() -> str | None:
    if importlib.util.find_spec("tensorrt") is None:
        return "TensorRT is not installed (import tensorrt fails)"
    proc = subprocess.run([sys.executable, "-c", "import tensorrt"], capture_output=True, text=True)
    return None if proc.returncode == 0 else f"import tensorrt fails: {proc.stderr.strip().splitlines()[-1:]}"


def _rtx_engines(out: Path, capability: str, timeout: float) -> dict:
    """Can this GPU run TensorRT-for-RTX engines? Where tensorrt_rtx is installed, the answer comes from
    `vitdeploy validate` of a real engine (IRuntime.get_engine_validity); otherwise from the compute
    capability (RTX has no 9.x target: H100/H200 run enterprise TensorRT engines only)."""
    if importlib.util.find_spec("tensorrt_rtx") is None:
        why = (f"compute capability {capability}: TensorRT for RTX has no sm_90 target (H100/H200 need enterprise "
               "TensorRT)" if capability.startswith("9.") else "tensorrt_rtx is not installed")
        return {"not_run": why, "ok": True}
    cli = [sys.executable, "-m", "vitdeploy.cli", "--quiet"]
    onnx, engine = out / "rtx_m0.onnx", out / "rtx_m0.engine"
    steps = [[*cli, "export", "efficientvit_m0", "-o", str(onnx), "--no-validate"],
             [*cli, "build", str(onnx), "-o", str(engine), "--tensorrt", "rtx"],
             [*cli, "validate", str(engine)]]
    t0 = time.monotonic()
    for cmd in steps:
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
        except subprocess.TimeoutExpired:
            return {"failed": f"{cmd[4]} took over {timeout:.0f} s", "ok": False}
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["?"])[-1]
            # exit 2 from validate is the host check's one line (e.g. the engine's targets exclude this GPU)
            return {"not_run" if proc.returncode == 2 else "failed": last, "rc": proc.returncode,
                    "ok": proc.returncode == 2, "seconds": round(time.monotonic() - t0, 1)}
    return {"ok": True, "validated": True, "seconds": round(time.monotonic() - t0, 1)}


def _run(cmd, log: Path, timeout: float) -> dict:
    t0 = time.monotonic()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    with open(log, "w") as f:
        try:
            rc = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, env=env, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    return {"rc": rc, "seconds": round(time.monotonic() - t0, 1), "log": str(log)}


def _pytest(marker: str, name: str, out: Path, timeout: float, paths=("tests",)) -> dict:
    xml = out / f"{name}.xml"
    res = _run([sys.executable, "-m", "pytest", "-q", "-m", marker, *paths, f"--junitxml={xml}",
                "-p", "no:cacheprovider"], out / f"{name}.log", timeout)
    res["marker"] = marker
    if xml.is_file():
        suite = ET.parse(xml).getroot()
        suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
        counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
        counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
        res.update(counts)
    res["ok"] = res["rc"] in (0, 5) and res.get("failures", 1) == 0 and res.get("errors", 1) == 0  # 5: none selected
    return res


def _bandwidth(out: Path, timeout: float) -> dict:
    path = out / "window_ops_gpu.json"
    # L2 flushed before every timed call: the copy and the kernels are then compared at DRAM bandwidth
    # instead of at whatever part of each operand the 50 MB L2 happens to hold.
    res = _run([sys.executable, str(ROOT / "benchmarks" / "window_ops_gpu.py"), "--iters", "100", "--flush-l2",
                "--json", str(path)], out / "window_ops_gpu.log", timeout)
    if res["rc"] == 0 and path.is_file():
        data = json.loads(path.read_text())
        res.update({k: data[k] for k in ("device", "capability", "iters", "flush_l2", "target", "rows")})
        res["json"] = str(path)
    res["ok"] = res["rc"] == 0 and res.get("target", {}).get("met", False)
    return res


def _markdown(summary: dict) -> str:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from window_ops_gpu import format_table

    lines = [f"# vitdeploy gpu-check: {'PASS' if summary['ok'] else 'FAIL'}", "",
             f"{summary.get('device', '?')}, {summary['seconds']:.0f} s", "",
             "| step | result | passed | failed | errors | skipped | seconds |", "|---|---|---:|---:|---:|---:|---:|"]
    for name in ("tier2", "tier3"):
        s = summary["steps"][name]
        if "not_run" in s:
            lines.append(f"| {name} | not run: {s['not_run']} | | | | | |")
        else:
            lines.append(f"| {name} (`-m {s['marker']}`) | {'ok' if s['ok'] else 'FAILED'} (rc {s['rc']}) | "
                         f"{s.get('passed', '?')} | {s.get('failures', '?')} | {s.get('errors', '?')} | "
                         f"{s.get('skipped', '?')} | {s['seconds']} |")
    rtx = summary["steps"].get("rtx_engines", {"not_run": "not checked"})
    lines.append(f"| RTX engine | {'validated' if rtx.get('validated') else rtx.get('not_run') or rtx.get('failed')} "
                 f"| | | | | {rtx.get('seconds', '')} |")
    bw = summary["steps"]["bandwidth"]
    lines += ["", "## Kernel bandwidth (benchmarks/window_ops_gpu.py)", ""]
    if "rows" in bw:
        lines.append(format_table(bw))
    else:
        lines.append(f"did not finish (rc {bw['rc']}); see {bw['log']}")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="directory for gpu_check.json, gpu_check.md and the logs")
    args = p.parse_args(argv)
    why = _preflight()
    if why:
        print(f"gpu-check: {why}", file=sys.stderr)
        return 2
    import torch

    from vitdeploy.fileio import atomic_write_bytes, atomic_write_json

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    props = torch.cuda.get_device_properties(0)
    t0 = time.monotonic()
    steps = {"tier2": _pytest("gpu and not tensorrt", "tier2", out, STEP_TIMEOUT_S["tier2"]),
             "bandwidth": _bandwidth(out, STEP_TIMEOUT_S["bandwidth"])}
    trt_missing = _tensorrt_missing()
    steps["tier3"] = ({"not_run": trt_missing, "ok": True} if trt_missing
                      else _pytest("tensorrt", "tier3", out, max(60.0, BUDGET_S - (time.monotonic() - t0))))
    steps["rtx_engines"] = _rtx_engines(out, f"{props.major}.{props.minor}", 300)
    summary = {"device": props.name, "capability": f"{props.major}.{props.minor}", "torch": torch.__version__,
               "seconds": round(time.monotonic() - t0, 1), "steps": steps,
               "ok": all(s["ok"] for s in steps.values())}
    md = _markdown(summary)
    steps["bandwidth"].pop("rows", None)  # in window_ops_gpu.json
    atomic_write_json(out / "gpu_check.json", summary)
    atomic_write_bytes(out / "gpu_check.md", md.encode())
    print(md)
    print(f"wrote {out / 'gpu_check.json'} and {out / 'gpu_check.md'}")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
