"""Compare runners on the same inputs; task-aware metrics and a verdict that says what failed.

Per output: max abs error, max relative error (max abs error / max |reference|), cosine
similarity; for classifiers also top-1 and top-5 agreement. Thresholds depend on precision and
are printed with the verdict (Polygraphy's lesson: a bare "FAILED" at 1e-5 helps nobody).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional

import numpy as np

from vitdeploy.export.precision import THRESHOLDS


@dataclass
class OutputParity:
    name: str
    shape: List[int]
    max_abs_err: float
    max_rel_err: float
    cosine: float
    ref_max_abs: float
    top1_agreement: Optional[float] = None
    top5_agreement: Optional[float] = None
    failures: List[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures


@dataclass
class ParityReport:
    reference: str
    candidate: str
    precision: str
    thresholds: Dict[str, float]
    batch: int
    inputs: str
    outputs: List[OutputParity]

    @property
    def passed(self) -> bool:
        return all(o.passed for o in self.outputs)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["passed"] = self.passed
        return d

    def table(self) -> str:
        rows = [f"parity {self.candidate} vs {self.reference} ({self.precision}, {self.inputs}, batch {self.batch}); "
                f"thresholds: rel<={self.thresholds['max_rel_err']:g} cos>={self.thresholds['min_cosine']:g}"
                + (f" top1>={self.thresholds['min_top1']:.0%}" if any(o.top1_agreement is not None
                                                                     for o in self.outputs) else "")]
        for o in self.outputs:
            top = (f"  top1 {o.top1_agreement:.1%}  top5 {o.top5_agreement:.1%}"
                   if o.top1_agreement is not None else "")
            rows.append(f"  {o.name:<11} max_abs {o.max_abs_err:.3e}  max_rel {o.max_rel_err:.3e}  "
                        f"cos {o.cosine:.7f}{top}  {'ok' if o.passed else 'FAIL: ' + '; '.join(o.failures)}")
        rows.append("verdict: " + ("PASS" if self.passed else "FAIL"))
        return "\n".join(rows)


def _topk(a: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-a, axis=-1, kind="stable")[..., :k]


def compare_arrays(name: str, ref: np.ndarray, cand: np.ndarray, thresholds: Dict[str, float],
                   classify: bool) -> OutputParity:
    ref = np.asarray(ref, dtype=np.float64)
    cand = np.asarray(cand, dtype=np.float64)
    if ref.shape != cand.shape:
        return OutputParity(name, list(cand.shape), float("inf"), float("inf"), 0.0, 0.0,
                            failures=[f"shape {cand.shape} != reference {ref.shape}"])
    diff = np.abs(ref - cand)
    max_abs = float(diff.max()) if diff.size else 0.0
    scale = float(np.abs(ref).max()) if ref.size else 0.0
    max_rel = max_abs / scale if scale > 0 else max_abs
    denom = np.linalg.norm(ref) * np.linalg.norm(cand)
    cosine = float((ref.ravel() @ cand.ravel()) / denom) if denom > 0 else float(max_abs == 0)
    out = OutputParity(name, list(ref.shape), max_abs, max_rel, cosine, scale)
    if not np.all(np.isfinite(cand)):
        out.failures.append("non-finite values")
    if max_rel > thresholds["max_rel_err"]:
        out.failures.append(f"max_rel {max_rel:.2e} > {thresholds['max_rel_err']:g}")
    if cosine < thresholds["min_cosine"]:
        out.failures.append(f"cosine {cosine:.6f} < {thresholds['min_cosine']:g}")
    if classify and ref.ndim == 2:
        out.top1_agreement = float(np.mean(ref.argmax(-1) == cand.argmax(-1)))
        k = min(5, ref.shape[-1])
        a, b = _topk(ref, k), _topk(cand, k)
        out.top5_agreement = float(np.mean([len(set(x) & set(y)) / k for x, y in zip(a, b)]))
        if out.top1_agreement < thresholds["min_top1"]:
            out.failures.append(f"top1 {out.top1_agreement:.1%} < {thresholds['min_top1']:.0%}")
        if out.top5_agreement < thresholds.get("min_top5", 0.0):
            out.failures.append(f"top5 {out.top5_agreement:.1%} < {thresholds['min_top5']:.0%}")
    return out


def compare_outputs(ref: Dict[str, np.ndarray], cand: Dict[str, np.ndarray], *, reference: str,
                    candidate: str, precision: str = "fp32", task: str = "classify", batch: int = 0,
                    inputs: str = "random") -> ParityReport:
    th = dict(THRESHOLDS[precision])
    outs = []
    for name, r in ref.items():
        if name not in cand:
            outs.append(OutputParity(name, list(np.shape(r)), float("inf"), float("inf"), 0.0, 0.0,
                                     failures=[f"candidate has no output {name!r} (has {sorted(cand)})"]))
            continue
        outs.append(compare_arrays(name, r, cand[name], th, classify=(task == "classify")))
    return ParityReport(reference, candidate, precision, th, batch, inputs, outs)


def run_parity(ref_runner, cand_runner, images: np.ndarray, *, precision: str = "fp32",
               task: str = "classify", inputs: str = "random", chunk: int = 8) -> ParityReport:
    """Run both runners on the same images (in chunks, to bound memory) and compare."""
    ref_out: Dict[str, List[np.ndarray]] = {}
    cand_out: Dict[str, List[np.ndarray]] = {}
    in_ref = ref_runner.inputs[0].name
    in_cand = cand_runner.inputs[0].name
    for i in range(0, len(images), chunk):
        x = images[i:i + chunk]
        for store, runner, nm in ((ref_out, ref_runner, in_ref), (cand_out, cand_runner, in_cand)):
            for k, v in runner.infer({nm: x}).items():
                store.setdefault(k, []).append(v)
    ref = {k: np.concatenate(v) for k, v in ref_out.items()}
    cand = {k: np.concatenate(v) for k, v in cand_out.items()}
    return compare_outputs(ref, cand, reference=ref_runner.name, candidate=cand_runner.name,
                           precision=precision, task=task, batch=len(images), inputs=inputs)
