"""Fidelity of a pruned Swin to its dense original on calibration images, in PyTorch.

Scores (higher is better, 1 = the dense model's outputs):
* backbone: mean over the four feature maps of the per-image cosine similarity to the dense map
  (relative L2 error reported beside it). Cosine is scale-free, so the large maps of stage 0
  do not drown the others, and detection/segmentation heads read exactly these maps.
* classify: ``exp(-KL(dense || pruned))`` of the softmax outputs, averaged over images (top-1
  agreement reported beside it). KL is continuous where top-1 agreement on a few images is not:
  8 images give agreement in steps of 1/8, too coarse to rank neighbouring configs.
* classify with labels: top-1 accuracy, ties broken by the KL score.

A stage's output depends only on the ratios of stages 0..s, so stage outputs are cached by that
gene prefix (LRU, bounded in bytes): a candidate that differs from an evaluated one only in
stage 2 recomputes stages 2 and 3.
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from vitdeploy.search.space import Genes, SearchSpace


@dataclass
class Fidelity:
    score: float  # the objective
    tiebreak: float = 0.0
    details: Dict[str, object] = field(default_factory=dict)

    def key(self) -> Tuple[float, float]:
        return (self.score, self.tiebreak)

    def to_dict(self) -> Dict[str, object]:
        return {"score": self.score, **self.details}


def stage_module(model, s: int, ratios: Sequence[float]):
    """Stage ``s`` of ``model`` with ``len(ratios)`` blocks (its first ones; all of them for a
    candidate, fewer for a latency-table module) at those ratios, with the model's weights.

    Built from SwinStage's public constructor (not by patching the dense stage), so any change to
    how a stage executes is picked up here as in an exported model."""
    from vitdeploy.models.swin import SwinStage

    layer = model.layers[s]
    dim_in = model.dims[s - 1] if s else model.dims[0]
    st = SwinStage(dim_in, model.dims[s], len(ratios), layer.blocks[0].attn.num_heads, layer.geom,
                   downsample=s > 0, ratios=list(ratios),
                   norm_order="sparsevit" if any(r > 0 for r in ratios) else layer.norm_order)
    src = layer.state_dict()
    depth = len(layer.blocks)

    def source(k: str) -> str:  # more blocks than the stage has (a MACs probe): repeat its blocks
        m = re.match(r"blocks\.(\d+)\.(.*)$", k)
        return f"blocks.{int(m.group(1)) % depth}.{m.group(2)}" if m else k

    st.load_state_dict({k: src[source(k)] for k in st.state_dict()})
    return st.eval()


def pruned_copy(model, ratios: List[List[float]]):
    """The whole model with per-block ``ratios`` and the model's weights (what gets exported)."""
    from vitdeploy.models.sparsity import SparsityConfig
    from vitdeploy.models.swin import SwinTransformer

    heads = [layer.blocks[0].attn.num_heads for layer in model.layers]
    m = SwinTransformer(model.dims[0], model.depths, heads, num_classes=model.num_classes,
                        img_size=model.img_size, task=model.task, sparsity=SparsityConfig(ratios, "search"),
                        variant=model.variant)
    m.load_state_dict(model.state_dict())
    return m.eval()


class FidelityEvaluator:
    """Scores genes of ``space`` for a dense ``model`` (SwinTransformer) on ``images`` [N,3,H,W]."""

    def __init__(self, model, space: SearchSpace, images: np.ndarray, labels: Optional[np.ndarray] = None,
                 cache_mb: float = 2048, chunk: int = 8):
        import torch

        self.torch = torch
        self.model = model.eval()
        self.space = space
        self.task = model.task
        self.labels = labels
        self.chunk = max(1, int(chunk))
        self.x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
        self.cache_bytes = int(cache_mb * 2**20)
        self._cache: "OrderedDict[Genes, object]" = OrderedDict()
        self._bytes = 0
        self._stage_scores: Dict[Genes, Tuple[float, float]] = {}
        self.stage_runs = 0  # stage forwards executed (cache misses), for tests and progress
        with torch.inference_mode():
            self._embed = self._chunked(self.model.patch_embed, self.x)
            self._dense_feats: List = []
            x = self._embed
            for s, layer in enumerate(self.model.layers):
                x = self._chunked(layer, x)
                if self.task == "backbone":
                    self._dense_feats.append(self._feature(s, x))
            if self.task == "classify":
                self._dense_logits = self._logits(x)

    # ------------------------------------------------------------------ pieces of the forward
    def _chunked(self, fn, x):
        return self.torch.cat([fn(x[i:i + self.chunk]) for i in range(0, x.shape[0], self.chunk)])

    def _feature(self, s: int, x):
        return getattr(self.model, f"norm{s}")(x).flatten(1)

    def _logits(self, x):  # the last stage's output -> the model's own norm and head
        return self.model.forward_head(self.model.norm(x))

    def _store(self, key: Genes, x) -> None:
        nbytes = x.numel() * x.element_size()
        if nbytes > self.cache_bytes:
            return
        self._cache[key] = x
        self._bytes += nbytes
        while self._bytes > self.cache_bytes:
            _, old = self._cache.popitem(last=False)
            self._bytes -= old.numel() * old.element_size()

    # ------------------------------------------------------------------ scoring
    def __call__(self, genes: Genes) -> Fidelity:
        torch = self.torch
        sp = self.space
        n = len(sp.depths)
        with torch.inference_mode():
            start, x = 0, self._embed
            for s in range(n - 1, -1, -1):
                key = sp.prefix(genes, s)
                if key in self._cache:
                    self._cache.move_to_end(key)
                    start, x = s + 1, self._cache[key]
                    break
            for s in range(start, n):
                key = sp.prefix(genes, s)
                ratios = sp.stage_ratios(genes, s)
                layer = self.model.layers[s] if not any(ratios) else stage_module(self.model, s, ratios)
                x = self._chunked(layer, x)
                self.stage_runs += 1
                if self.task == "backbone" and key not in self._stage_scores:
                    self._stage_scores[key] = self._compare_feature(s, x)
                if s < n - 1:
                    self._store(key, x)
            if self.task == "backbone":
                per_stage = [self._stage_scores[sp.prefix(genes, s)] for s in range(n)]
                cos = [c for c, _ in per_stage]
                rel = [r for _, r in per_stage]
                return Fidelity(float(np.mean(cos)), 0.0,
                                {"metric": "mean cosine of the 4 feature maps to dense",
                                 "cosine": float(np.mean(cos)), "cosine_per_stage": cos,
                                 "rel_l2": float(np.mean(rel)), "rel_l2_per_stage": rel})
            return self._classify_scores(self._logits(x))

    def _compare_feature(self, s: int, x) -> Tuple[float, float]:
        f = self._feature(s, x)
        d = self._dense_feats[s]
        cos = self.torch.nn.functional.cosine_similarity(f, d, dim=1)
        rel = (f - d).norm(dim=1) / d.norm(dim=1).clamp_min(1e-12)
        return float(cos.mean()), float(rel.mean())

    def _classify_scores(self, logits) -> Fidelity:
        F = self.torch.nn.functional
        dense = self._dense_logits
        logp_d, logp = F.log_softmax(dense, -1), F.log_softmax(logits, -1)
        kl = float((logp_d.exp() * (logp_d - logp)).sum(-1).mean())
        agree = float((logits.argmax(-1) == dense.argmax(-1)).float().mean())
        kl_score = math.exp(-max(kl, 0.0))
        details = {"top1_agreement": agree, "kl": kl, "kl_score": kl_score}
        if self.labels is not None:
            acc = float((logits.argmax(-1).numpy() == self.labels).mean())
            details.update(metric="top-1 accuracy on labelled images", accuracy=acc)
            return Fidelity(acc, kl_score, details)
        details["metric"] = "exp(-KL(dense || pruned)) of the class probabilities"
        return Fidelity(kl_score, agree, details)

    @property
    def cached_mb(self) -> float:
        return self._bytes / 2**20
