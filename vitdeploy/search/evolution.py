"""SparseViT's evolutionary search (reference/models.md §2.6), with a cheap constraint.

Why not NSGA-II (Optuna/pymoo): the constraint here is a predicted latency (or exact MACs) that
costs microseconds, the objective a PyTorch forward that costs seconds, and we want one config
under a budget, not a spread over the whole front. The paper's single-objective search with
rejection sampling spends every expensive evaluation on a feasible config, and every evaluated
config is kept, so the latency-fidelity front falls out of the history anyway.

Per generation: parents = the top ``parents`` of the population by fidelity (kept: elitism, so
the best never regresses); half of the remaining slots are mutations of a random parent (each gene
resampled with probability ``mutation_prob``), the rest crossovers of two random parents (each
gene from either); genes re-sorted within a stage; a child is redrawn until it is feasible and not
yet evaluated (rejection sampling, bounded tries). The first population is the seeds (uniform
ratios, presets) that are feasible, filled with feasible random samples.

Everything random comes from one ``numpy.random.Generator`` whose state is saved at the start of
each generation, so ``--seed`` reproduces a run and ``--resume`` continues it exactly (evaluated
configs are looked up, not recomputed).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from vitdeploy.search.fidelity import Fidelity
from vitdeploy.search.space import Genes, SearchSpace


@dataclass
class Candidate:
    genes: Genes
    predicted_ms: float
    macs: int
    fidelity: Fidelity
    origin: str
    generation: int
    measured_ms: Optional[float] = None

    def key(self):
        return self.fidelity.key()

    def to_dict(self, space: SearchSpace) -> Dict[str, object]:
        return {"genes": list(self.genes), "ratios": space.ratios(self.genes), "origin": self.origin,
                "generation": self.generation, "predicted_ms": self.predicted_ms, "macs": self.macs,
                "measured_ms": self.measured_ms, "fidelity": self.fidelity.score,
                "tiebreak": self.fidelity.tiebreak, "fidelity_details": self.fidelity.details}

    @classmethod
    def from_dict(cls, d: Dict[str, object]) -> "Candidate":
        return cls(tuple(d["genes"]), d["predicted_ms"], d["macs"],
                   Fidelity(d["fidelity"], d.get("tiebreak", 0.0), d.get("fidelity_details", {})),
                   d["origin"], d["generation"], d.get("measured_ms"))


@dataclass
class Evolution:
    space: SearchSpace
    feasible: Callable[[Genes], bool]
    score: Callable[[Genes], Candidate]  # evaluates one config (origin/generation set by us)
    seed: int = 0
    population_size: int = 100
    parents: int = 25
    mutation_prob: float = 0.1
    max_tries: int = 200
    history: Dict[Genes, Candidate] = field(default_factory=dict)
    population: List[Genes] = field(default_factory=list)
    generation: int = 0
    rng_state: Optional[dict] = None
    interrupted: bool = False

    def __post_init__(self):
        self.rng = np.random.default_rng(self.seed)
        if self.rng_state is not None:
            self.rng.bit_generator.state = self.rng_state
        self.parents = max(1, min(self.parents, self.population_size))

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, genes: Genes, origin: str) -> Candidate:
        c = self.history.get(genes)
        if c is None:
            c = self.score(genes)
            c.origin, c.generation = origin, self.generation
            self.history[genes] = c
        return c

    def best_feasible(self) -> Optional[Candidate]:
        ok = [c for c in self.history.values() if self.feasible(c.genes)]
        return max(ok, key=lambda c: (c.key(), -c.predicted_ms)) if ok else None

    def _draw(self, make: Callable[[], Genes], taken: set) -> Optional[Genes]:
        fallback = None
        for _ in range(self.max_tries):
            g = make()
            if not self.feasible(g):
                continue
            if g not in self.history and g not in taken:
                return g
            fallback = fallback or (g if g not in taken else None)
        return fallback

    # ------------------------------------------------------------------ generations
    def initial(self, seeds: Dict[str, Genes]) -> List[tuple]:
        pop: List[tuple] = []
        taken: set = set()
        for name, g in seeds.items():
            if self.feasible(g) and g not in taken:
                pop.append((g, f"seed: {name}"))
                taken.add(g)
        while len(pop) < self.population_size:
            g = self._draw(lambda: self.space.sample(self.rng), taken)
            if g is None:
                break
            pop.append((g, "random"))
            taken.add(g)
        return pop

    def children(self) -> List[tuple]:
        ranked = sorted(self.population, key=lambda g: self.history[g].key(), reverse=True)
        parents = ranked[: self.parents]
        out = [(g, "parent") for g in parents]
        taken = set(parents)
        n_mut = (self.population_size - len(parents)) // 2
        n_cross = self.population_size - len(parents) - n_mut

        def mutation():
            return self.space.mutate(parents[self.rng.integers(len(parents))], self.rng, self.mutation_prob)

        def crossover():
            a, b = self.rng.integers(len(parents), size=2)
            return self.space.crossover(parents[a], parents[b], self.rng)

        for make, n, label in ((mutation, n_mut, "mutation"), (crossover, n_cross, "crossover")):
            for _ in range(n):
                g = self._draw(make, taken)
                if g is not None:
                    out.append((g, label))
                    taken.add(g)
        return out

    def run(self, seeds: Dict[str, Genes], generations: int, time_limit: Optional[float] = None,
            progress: Callable[[str], None] = lambda m: None,
            checkpoint: Callable[["Evolution"], None] = lambda e: None) -> None:
        """Generation ``self.generation`` .. ``generations`` (0 = the initial population).
        Ctrl-C or the time limit stop it between evaluations; the history keeps what was done."""
        t0 = time.perf_counter()
        try:
            while self.generation <= generations:
                self.rng_state = self.rng.bit_generator.state  # a resume replays this generation
                checkpoint(self)
                todo = self.initial(seeds) if self.generation == 0 else self.children()
                if not todo:
                    progress("search: no feasible config left to try")
                    break
                new = 0
                for g, origin in todo:
                    if time_limit is not None and time.perf_counter() - t0 > time_limit:
                        progress(f"search: time limit {time_limit:.0f}s reached in generation {self.generation}")
                        return
                    new += g not in self.history
                    self.evaluate(g, origin)
                self.population = [g for g, _ in todo]
                best = self.best_feasible()
                progress(f"generation {self.generation}/{generations}: {new} new, {len(self.history)} evaluated; "
                         f"best {best.fidelity.score:.5f} at {best.predicted_ms:.2f} ms predicted "
                         f"{self.space.ratios(best.genes)}" if best else
                         f"generation {self.generation}/{generations}: no feasible config yet")
                self.generation += 1
            self.rng_state = self.rng.bit_generator.state
        except KeyboardInterrupt:
            self.interrupted = True
            progress("search: interrupted; verifying the best configs found so far "
                     "(Ctrl-C again to stop now, OUT.search.json keeps the state for --resume)")

    # ------------------------------------------------------------------ persistence
    def restore(self, saved: Dict[str, object]) -> None:
        """Continue the run saved in ``saved`` (an OUT.search.json: ``state()`` and the candidates):
        evaluated configs are looked up, not recomputed, and the generator replays the generation
        that was under way. Measured latencies are dropped: a new verification times its own."""
        st = saved["state"]
        self.history = {}
        for d in saved["candidates"]:
            c = Candidate.from_dict(d)
            c.measured_ms = None
            self.history[c.genes] = c
        self.population = [tuple(g) for g in st["population"]]
        self.generation = st["generation"]
        if st.get("rng_state"):
            self.rng_state = st["rng_state"]
            self.rng.bit_generator.state = st["rng_state"]

    def state(self) -> Dict[str, object]:
        return {"generation": self.generation, "population": [list(g) for g in self.population],
                "rng_state": self.rng_state, "seed": self.seed, "population_size": self.population_size,
                "parents": self.parents, "mutation_prob": self.mutation_prob}


def pareto_front(points: Sequence[tuple]) -> List[int]:
    """Indices of (latency, fidelity) points no other point beats on both (lower, higher)."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -np.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front
