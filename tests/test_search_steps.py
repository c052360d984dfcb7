"""The steps of `vitdeploy search` on their own: the budget type, the references timed beside the
choice, and the verification's acceptance rule (a measurement close to the budget is re-timed,
not accepted).

The verification test drives `verify` with a timing source that returns scripted latencies: it
checks the decision rule on numbers chosen to sit on each side of the margin, which real timing
cannot place on purpose. Real end-to-end timing of the same function is covered by
tests/test_search.py (a small search on ONNX Runtime)."""

from __future__ import annotations

import pytest

from vitdeploy.errors import UserError
from vitdeploy.search.evolution import Candidate
from vitdeploy.search.fidelity import Fidelity
from vitdeploy.search.latency import Backend, LatencyTable, StageEntry
from vitdeploy.search.run import MIN_MARGIN, Budget, front_table, references_to_time, verify
from vitdeploy.search.space import SearchSpace


def test_budget_knows_its_kind():
    b = Budget.from_args(budget=0.7)
    assert (b.kind, b.flag, b.of_dense, b.on_macs, b.unit) == ("budget", "--budget", True, False, "ms")
    assert b.limit(200.0, 1e9) == pytest.approx(140.0)
    ms = Budget.from_args(budget_ms=5e6)  # a huge ms budget is still ms (no deciding by magnitude)
    assert ms.limit(200.0, 1e9) == 5e6 and ms.fmt(5e6).endswith(" ms") and not ms.on_macs
    m = Budget.from_args(macs_budget=0.5)
    assert m.on_macs and m.limit(200.0, 4e9) == 2e9 and m.fmt(2e9) == "2.00 G MACs"
    assert Budget.from_args(budget=0.5).to_dict() == {"kind": "budget", "value": 0.5}
    for kw, match in (({}, "exactly one"), ({"budget": 0.5, "budget_ms": 3.0}, "exactly one"),
                      ({"budget": 1.5}, "above 1"), ({"macs_budget": 0.0}, "must be > 0"),
                      ({"budget_ms": float("nan")}, "must be > 0")):
        with pytest.raises(UserError, match=match):
            Budget.from_args(**kw)


SPACE = SearchSpace.for_model((2, 2, 2, 2), 224, (0, 0.3, 0.7))


def _table(per_gene_ms=30.0, dense_ms=100.0):
    """A latency table linear in the genes: each stage pruned at 0.7 saves per_gene_ms."""
    stages = [StageEntry(pairs=1, nW=16, A={t: 25.0 - per_gene_ms * t / 7 for t in ch}) for ch in SPACE.choices]
    t = LatencyTable(SPACE, {}, stages)
    t.dense_ms, t.overhead_ms = dense_ms, dense_ms - t.predict_stages(SPACE.dense())
    return t


class ScriptedTiming:
    """EndToEnd's interface with latencies from a script: {genes: [ms per call]}; dense 100 ms with
    rounds spread ``spread``."""

    def __init__(self, script, spread=0.0):
        self.space, self.script, self.calls = SPACE, {g: list(v) for g, v in script.items()}, []
        self.backend = Backend("ort")
        self.spread = spread

    def time(self, genes_list, rounds=3):
        self.calls.append(list(genes_list))
        out = [100.0 if g == SPACE.dense() else self.script[g].pop(0) for g in genes_list]
        self.backend.last_rounds = [[t, t * (1 + self.spread)] for t in out]
        return out


def _history(table, scores):
    return {g: Candidate(g, table.predict(g), 0, Fidelity(f), "test", 0) for g, f in scores.items()}


def test_close_call_is_retimed_not_accepted():
    table = _table()
    a, b = (3, 3, 0, 0), (7, 7, 0, 0)  # a: best fidelity, measured just under the budget; b: well under
    hist = _history(table, {SPACE.dense(): 1.0, a: 0.9, b: 0.5})
    bud = Budget.from_args(budget=0.8)
    # a at 0.79 of dense: inside the 2 % margin -> re-timed; second time 0.81: over -> rejected
    timing = ScriptedTiming({a: [79.0, 81.0], b: [60.0]})
    ver = verify(hist, table, bud, bud.limit(table.dense_ms, 0), timing, {}, top_k=2)
    assert ver.chosen.genes == b
    assert timing.calls[1] == [SPACE.dense(), a]  # the second round re-timed only the close call (and dense)
    assert ver.measured[a] == 81.0  # held to its worst measurement
    # the same close call measured under the budget twice is accepted
    timing = ScriptedTiming({a: [79.0, 79.5], b: [60.0]})
    ver = verify(_history(table, {SPACE.dense(): 1.0, a: 0.9, b: 0.5}), table, bud, 80.0, timing, {}, top_k=2)
    assert ver.chosen.genes == a and len(timing.calls) == 2
    # far enough under the budget: accepted on one measurement, no second round
    timing = ScriptedTiming({a: [80.0 * (1 - MIN_MARGIN) - 0.5], b: [60.0]})
    ver = verify(_history(table, {SPACE.dense(): 1.0, a: 0.9, b: 0.5}), table, bud, 80.0, timing, {}, top_k=2)
    assert ver.chosen.genes == a and len(timing.calls) == 1


def test_a_round_times_the_best_of_close_calls_and_new_picks():
    table = _table()
    a, b, c, d = (3, 3, 0, 0), (7, 0, 0, 0), (0, 7, 0, 0), (3, 3, 3, 0)
    hist = _history(table, {SPACE.dense(): 1.0, a: 0.9, c: 0.85, b: 0.8, d: 0.7})
    bud = Budget.from_args(budget=0.8)
    # round 1 (top 2 = a, c): both close calls; round 2: a and c re-timed (best 2 of a, c, b, d), b waits
    timing = ScriptedTiming({a: [79.0, 79.5], c: [79.0, 79.2], b: [60.0]})
    ver = verify(hist, table, bud, 80.0, timing, {}, top_k=2)
    assert timing.calls == [[SPACE.dense(), a, c], [SPACE.dense(), a, c]]
    assert ver.chosen.genes == a and b not in ver.samples


def test_margin_follows_the_rounds_spread():
    table = _table()
    a = (3, 3, 0, 0)
    bud = Budget.from_args(budget=0.8)
    timing = ScriptedTiming({a: [76.0, 76.0]}, spread=0.1)  # 5 % under, but dense's rounds spread 10 %
    ver = verify(_history(table, {SPACE.dense(): 1.0, a: 0.9}), table, bud, 80.0, timing, {}, top_k=1)
    assert ver.chosen.genes == a and len(timing.calls) == 2 and len(ver.samples[a]) == 2


def test_references_timed_are_the_ones_the_report_compares():
    table = _table()
    refs = {**SPACE.uniform(), "cfg1": (3, 0, 0, 0), "cfg9": (7, 7, 7, 0)}
    cost = table.predict
    limit = cost(SPACE.uniform()["uniform 0.3"]) * 1.02
    got = references_to_time(refs, cost, limit)
    assert got[0] == SPACE.uniform()["uniform 0.3"]  # the least pruned uniform within the budget
    assert SPACE.uniform()["uniform 0.7"] in got and refs["cfg1"] not in got  # cfg1: predicted over 1.1x
    assert all(cost(g) <= 1.1 * limit for g in got)


def test_front_table_names_the_budget_unit():
    table = _table()
    g = (3, 3, 0, 0)
    hist = _history(table, {g: 0.9})
    hist[g].measured_ms = 70.0
    txt = front_table(hist, {}, g, SPACE, 5e5, Budget.from_args(macs_budget=0.5))
    assert txt.endswith("budget 0.00 G MACs") and "over budget" not in txt
    txt = front_table(hist, {}, g, SPACE, 2e6, Budget.from_args(budget_ms=2e6))
    assert txt.endswith("2000000.00 ms")
