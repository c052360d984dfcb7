"""The official SparseViT search space for any Swin depth and resolution (reference/models.md §2.4).

One gene per (regular, shifted) block pair holding a ratio in tenths (0..8); genes of one stage
are kept sorted, because later blocks reuse a prefix of the stage's kept windows. A stage's
choices drop the ratios whose keep count ``int(nW * (1 - r))`` is 0 at this resolution (the
rule of ``models/sparsity.py``), e.g. every r > 0 for a 7x7 stage that is a single window, and
keep one ratio (the smallest) per distinct keep count: at 224, stage 2 has 4 windows and 0.3,
0.4 and 0.5 all keep 2 of them, the same model. At 672 every ratio keeps a distinct count.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import numpy as np

from vitdeploy.errors import UserError
from vitdeploy.models.sparsity import (
    ALLOWED_RATIOS,
    PRESET_DEPTHS,
    PRESETS,
    keep_count,
    stage_windows,
    validate_ratios,
)

Genes = Tuple[int, ...]  # ratio tenths per block pair, stage by stage


@dataclass(frozen=True)
class SearchSpace:
    depths: Tuple[int, ...]
    img_size: object  # ImageSize (or an int: square)
    choices: Tuple[Tuple[int, ...], ...]  # allowed tenths per stage

    @classmethod
    def for_model(cls, depths: Sequence[int], img_size,
                  ratios: Sequence[float] = ALLOWED_RATIOS) -> "SearchSpace":
        """``ratios`` restricts the choices (tests, quick runs); default the official 0..0.8."""
        depths = tuple(int(d) for d in depths)
        bad = [r for r in ratios if not any(abs(float(r) - a) < 1e-6 for a in ALLOWED_RATIOS)]
        if bad:
            raise UserError(f"--ratios {bad[0]} is outside the SparseViT space; use values of 0, 0.1, ..., 0.8")
        if any(d % 2 for d in depths):
            raise UserError(f"depths {depths}: every stage needs whole (regular, shifted) block pairs")
        tenths = sorted({round(float(r) * 10) for r in ratios} | {0})
        choices = []
        for _, nw in stage_windows(img_size, len(depths)):
            seen, ch = set(), []
            for t in tenths:  # one ratio per distinct keep count: the smallest that gives it
                k = nw if t == 0 else keep_count(nw, ALLOWED_RATIOS[t])
                if k >= 1 and k not in seen:
                    seen.add(k)
                    ch.append(t)
            choices.append(tuple(ch))
        return cls(depths, img_size, tuple(choices))

    def alias(self, s: int, tenth: int) -> int:
        """The choice of stage ``s`` with the same keep count as ``tenth`` (the same model)."""
        nw = stage_windows(self.img_size, len(self.depths))[s][1]
        k = nw if tenth == 0 else keep_count(nw, ALLOWED_RATIOS[tenth])
        for t in self.choices[s]:
            if (nw if t == 0 else keep_count(nw, ALLOWED_RATIOS[t])) == k:
                return t
        raise UserError(f"ratio {tenth / 10} keeps {k} windows in stage {s}, outside this search space")

    # ------------------------------------------------------------------ structure
    @property
    def pairs(self) -> Tuple[int, ...]:
        return tuple(d // 2 for d in self.depths)

    @property
    def slices(self) -> List[slice]:
        out, start = [], 0
        for n in self.pairs:
            out.append(slice(start, start + n))
            start += n
        return out

    @property
    def n_genes(self) -> int:
        return sum(self.pairs)

    def size(self) -> int:
        """Number of distinct configs (multisets of each stage's choices)."""
        from math import comb

        total = 1
        for n, ch in zip(self.pairs, self.choices):
            total *= comb(len(ch) + n - 1, n)
        return total

    # ------------------------------------------------------------------ conversions
    def canonical(self, genes: Sequence[int]) -> Genes:
        out: List[int] = []
        for sl in self.slices:
            out.extend(sorted(int(g) for g in genes[sl]))
        return tuple(out)

    def contains(self, genes: Sequence[int]) -> bool:
        if len(genes) != self.n_genes or tuple(genes) != self.canonical(genes):
            return False
        return all(g in ch for sl, ch in zip(self.slices, self.choices) for g in genes[sl])

    def ratios(self, genes: Sequence[int]) -> List[List[float]]:
        """Genes -> the per-block ratio lists of a sparsity file."""
        return [[ALLOWED_RATIOS[g] for g in genes[sl] for _ in range(2)] for sl in self.slices]

    def stage_ratios(self, genes: Sequence[int], s: int) -> List[float]:
        return [ALLOWED_RATIOS[g] for g in genes[self.slices[s]] for _ in range(2)]

    def from_ratios(self, ratios, source: str = "config") -> Genes:
        cfg = validate_ratios(ratios, self.depths, source)
        cfg.validate_for(self.img_size)
        stage_of = [s for s, n in enumerate(self.pairs) for _ in range(n)]
        raw = [round(r * 10) for stage in cfg.ratios for r in stage[::2]]
        genes = self.canonical([self.alias(s, t) for s, t in zip(stage_of, raw)])
        if not self.contains(genes):
            raise UserError(f"sparsity {source}: outside this search space (choices per stage "
                            f"{[list(c) for c in self.choices]} tenths)")
        return genes

    def prefix(self, genes: Sequence[int], s: int) -> Genes:
        """The genes stage ``s``'s output depends on: stages 0..s."""
        return tuple(genes[: self.slices[s].stop])

    # ------------------------------------------------------------------ reference configs
    def dense(self) -> Genes:
        return (0,) * self.n_genes

    def sparsest(self) -> Genes:
        return tuple(max(ch) for n, ch in zip(self.pairs, self.choices) for _ in range(n))

    def uniform(self) -> Dict[str, Genes]:
        """'uniform r' for each r > 0 in the space; a stage that cannot prune that much (keep 0)
        takes its largest allowed ratio instead, so the family exists at every resolution."""
        tenths = sorted({t for ch in self.choices for t in ch if t > 0})
        out = {}
        for t in tenths:
            genes = tuple(max(c for c in ch if c <= t) for n, ch in zip(self.pairs, self.choices) for _ in range(n))
            out[f"uniform {t / 10:.1f}"] = genes
        return out

    def presets(self) -> Dict[str, Genes]:
        """The released Swin-T configs, where this space can express them."""
        if self.depths != PRESET_DEPTHS:
            return {}
        out = {}
        for name, ratios in PRESETS.items():
            try:
                out[name] = self.from_ratios([list(s) for s in ratios], name)
            except UserError:
                pass
        return out

    # ------------------------------------------------------------------ evolutionary operators
    def sample(self, rng: np.random.Generator) -> Genes:
        genes = [int(rng.choice(ch)) for n, ch in zip(self.pairs, self.choices) for _ in range(n)]
        return self.canonical(genes)

    def mutate(self, genes: Sequence[int], rng: np.random.Generator, prob: float) -> Genes:
        """Resample each gene with probability ``prob`` (then re-sort within stages, as the paper)."""
        out = list(genes)
        stage_of = [s for s, n in enumerate(self.pairs) for _ in range(n)]
        for i, s in enumerate(stage_of):
            if rng.random() < prob:
                out[i] = int(rng.choice(self.choices[s]))
        return self.canonical(out)

    def crossover(self, a: Sequence[int], b: Sequence[int], rng: np.random.Generator) -> Genes:
        pick = rng.random(self.n_genes) < 0.5
        return self.canonical([x if p else y for x, y, p in zip(a, b, pick)])

    def describe(self) -> str:
        return (f"depths {'-'.join(map(str, self.depths))} at {self.img_size}: {self.n_genes} genes, "
                f"{self.size():,} configs")
