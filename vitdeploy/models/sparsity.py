"""SparseViT sparsity configs: parse, validate, and the exact keep-count rule.

A config is one list per stage of one pruning ratio per block (DESIGN §3), e.g. the released cfg1
``[[0.3, 0.3], [0, 0], [0.1, 0.1, 0.2, 0.2, 0.2, 0.2], [0, 0]]``. Rules, all from the official code
(reference/models.md §2.3-2.4):

* ratios come from the search space {0, 0.1, ..., 0.8};
* each (regular, shifted) block pair shares one ratio (the search encodes a pair as one gene);
* ratios are non-decreasing within a stage, because later blocks reuse a *prefix* of the stage's
  top-k window indices;
* a block keeps ``int(nW * (1 - r))`` windows, evaluated in Python float64 exactly as the
  reference does (so 0.8 and 0.3 can under-keep by one); a block that would keep 0 windows at the
  requested resolution is rejected.

Presets cfg1/cfg2/cfg3 are the released Swin-T (depths 2-2-6-2) configs. They are *not* extended
to Swin-S/B (depths 2-2-18-2): no such configs were released, and inventing one would pretend to
a searched latency/accuracy trade-off that does not exist. Swin-S/B take a float or a JSON file.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass

from vitdeploy.errors import UserError
from vitdeploy.models.size import as_size

ALLOWED_RATIOS = tuple(i / 10 for i in range(9))  # 0.0 .. 0.8, the search space

PRESETS: dict[str, list[list[float]]] = {
    "cfg1": [[0.3, 0.3], [0.0, 0.0], [0.1, 0.1, 0.2, 0.2, 0.2, 0.2], [0.0, 0.0]],
    "cfg2": [[0.6, 0.6], [0.0, 0.0], [0.2, 0.2, 0.4, 0.4, 0.5, 0.5], [0.0, 0.0]],
    "cfg3": [[0.7, 0.7], [0.0, 0.0], [0.2, 0.2, 0.4, 0.4, 0.5, 0.5], [0.0, 0.0]],
}
PRESET_DEPTHS = (2, 2, 6, 2)

WINDOW = 7
PATCH = 4


def keep_count(nW: int, r: float) -> int:
    """Windows kept by a block: the reference's exact expression ``int(nW * (1 - r))``."""
    return int(nW * (1 - r))


@dataclass(frozen=True)
class StageGeometry:
    """One Swin stage's window geometry, per axis (the single source for swin.py, the sparsity
    rules and the search). ``h``/``w``: token map; ``hp``/``wp``: padded to a multiple of the
    window; ``wh``/``ww``: window; ``sh``/``sw``: shift of shifted blocks; ``nwh``/``nww``: window
    grid. Along an axis where the map is no larger than the window, the window is the map and that
    axis does not shift (timm's per-axis clamp, DESIGN decision 5 extended per axis)."""
    stage: int
    h: int
    w: int
    hp: int
    wp: int
    wh: int
    ww: int
    sh: int
    sw: int
    nwh: int
    nww: int

    @property
    def n_windows(self) -> int:
        return self.nwh * self.nww

    @property
    def tokens(self) -> int:
        return self.wh * self.ww

    @property
    def padded(self) -> bool:
        return (self.hp, self.wp) != (self.h, self.w)

    @property
    def shifted(self) -> bool:
        return bool(self.sh or self.sw)


def stage_geometry(img_size, depths_len: int = 4, window: int = WINDOW) -> list[StageGeometry]:
    """Per stage geometry for an input ``img_size`` (int = square, or ImageSize)."""
    size = as_size(img_size)
    h, w = size.h // PATCH, size.w // PATCH
    out = []
    for s in range(depths_len):
        wh, ww = min(window, h), min(window, w)
        sh, sw = (window // 2 if h > window else 0), (window // 2 if w > window else 0)
        nwh, nww = math.ceil(h / wh), math.ceil(w / ww)
        out.append(StageGeometry(s, h, w, nwh * wh, nww * ww, wh, ww, sh, sw, nwh, nww))
        h, w = h // 2, w // 2
    return out


def stage_windows(img_size, depths_len: int = 4, window: int = WINDOW) -> list[tuple[int, int]]:
    """Per stage: (token map height, number of windows) -- ``stage_geometry`` condensed."""
    return [(g.h, g.n_windows) for g in stage_geometry(img_size, depths_len, window)]


@dataclass(frozen=True)
class SparsityConfig:
    ratios: list[list[float]]
    source: str = "config"

    @property
    def is_dense(self) -> bool:
        return all(r == 0 for stage in self.ratios for r in stage)

    def to_json(self) -> str:
        return json.dumps({"ratios": self.ratios}, separators=(",", ":"))

    def validate_for(self, img_size, window: int = WINDOW) -> None:
        """Reject blocks that would keep no window at this input resolution (padded window grid)."""
        size = as_size(img_size)
        for g, stage in zip(stage_geometry(size, len(self.ratios), window), self.ratios):
            nw = g.n_windows
            for j, r in enumerate(stage):
                if r > 0 and keep_count(nw, r) < 1:
                    raise UserError(
                        f"sparsity {self.source}: stage {g.stage} block {j} ratio {r} keeps "
                        f"int({nw}*(1-{r}))=0 of {nw} windows ({g.nwh}x{g.nww} grid of the padded "
                        f"{g.hp}x{g.wp} map) at --img-size {size.label()}; lower the ratio or use a "
                        f"larger image")


def _canonical_ratio(value, where: str, source: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"sparsity {source}: {where} is {value!r}, not a number; "
                        f"use one of 0, 0.1, ..., 0.8")
    v = float(value)
    tenth = round(v * 10) if math.isfinite(v) else -1
    if tenth == -1 or abs(v * 10 - tenth) > 1e-6 or not 0 <= tenth <= 8:
        raise UserError(f"sparsity {source}: {where} is {value!r}, outside the search space; "
                        f"use one of 0, 0.1, ..., 0.8")
    # The literal tenth (e.g. 0.3) so keep counts reproduce the reference bit-for-bit.
    return ALLOWED_RATIOS[tenth]


def validate_ratios(ratios, depths, source: str = "config") -> SparsityConfig:
    """Check structure and rules; return a config holding canonical float ratios."""
    depths = list(depths)
    if not isinstance(ratios, list) or not all(isinstance(s, list) for s in ratios):
        raise UserError(f"sparsity {source}: 'ratios' must be a list of per-stage lists of numbers, "
                        f'e.g. {{"ratios": [[0.3, 0.3], [0, 0], [0, 0, 0, 0, 0, 0], [0, 0]]}}')
    if len(ratios) != len(depths):
        raise UserError(f"sparsity {source}: {len(ratios)} stages given, the model has {len(depths)} "
                        f"(depths {'-'.join(map(str, depths))}); give one list per stage")
    out: list[list[float]] = []
    for s, (stage, depth) in enumerate(zip(ratios, depths)):
        if len(stage) != depth:
            raise UserError(f"sparsity {source}: stage {s} has {len(stage)} ratios, the model's stage {s} "
                            f"has {depth} blocks; give one ratio per block")
        vals = [_canonical_ratio(v, f"stage {s} block {j} ratio", source) for j, v in enumerate(stage)]
        for j in range(1, len(vals)):
            if vals[j] < vals[j - 1]:
                raise UserError(f"sparsity {source}: stage {s} block {j} ratio {vals[j]} is lower than "
                                f"block {j - 1}'s {vals[j - 1]}; ratios must be non-decreasing within a "
                                f"stage (later blocks reuse a prefix of the kept windows)")
        for j in range(0, len(vals) - 1, 2):
            if vals[j] != vals[j + 1]:
                raise UserError(f"sparsity {source}: stage {s} blocks {j} (regular) and {j + 1} (shifted) "
                                f"have ratios {vals[j]} and {vals[j + 1]}; each pair must share one ratio")
        out.append(vals)
    return SparsityConfig(out, source)


def parse_sparsity(spec, depths, img_size=None) -> SparsityConfig | None:
    """None | float | "0.3" | "cfg1".."cfg3" | path to ``{"ratios": [[...], ...]}`` -> config.

    With ``img_size`` the keep counts are checked too (no block may keep 0 windows).
    """
    if spec is None:
        return None
    depths = list(depths)
    cfg: SparsityConfig
    if isinstance(spec, SparsityConfig):  # already parsed (library callers): checked against these depths
        cfg = validate_ratios([list(st) for st in spec.ratios], depths, spec.source)
    elif isinstance(spec, (int, float)) and not isinstance(spec, bool):
        r = _canonical_ratio(spec, "uniform ratio", str(spec))
        cfg = SparsityConfig([[r] * d for d in depths], f"uniform {r}")
    elif isinstance(spec, (str, os.PathLike)):
        text = os.fspath(spec).strip()
        try:
            value = float(text)
        except ValueError:
            value = None
        if value is not None:
            return parse_sparsity(value, depths, img_size)
        if text.lower() in PRESETS:
            name = text.lower()
            if tuple(depths) != PRESET_DEPTHS:
                raise UserError(f"sparsity preset {name} is the released SparseViT config for swin_t "
                                f"(depths 2-2-6-2), not depths {'-'.join(map(str, depths))}; pass a float "
                                f"or a JSON file with one ratio per block instead")
            cfg = validate_ratios([list(s) for s in PRESETS[name]], depths, name)
        else:
            cfg = validate_ratios(_read_json(text), depths, text)
    else:
        raise UserError(f"sparsity: {spec!r} is not a float, a preset (cfg1|cfg2|cfg3) or a JSON file path")
    if img_size is not None:
        cfg.validate_for(img_size)
    return cfg


def _read_json(path: str):
    if not os.path.isfile(path):
        raise UserError(f"sparsity: {path!r} is not a float, a preset (cfg1|cfg2|cfg3) or an existing "
                        f"JSON file; check the path")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"sparsity {path}: cannot read file ({e}); check permissions/encoding") from None
    except json.JSONDecodeError as e:
        raise UserError(f"sparsity {path}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno}); "
                        f'expected {{"ratios": [[...], ...]}}') from None
    if not isinstance(data, dict) or "ratios" not in data:
        raise UserError(f'sparsity {path}: expected a JSON object with a "ratios" key, '
                        f'e.g. {{"ratios": [[0.3, 0.3], [0, 0], [0.1, 0.1, 0.2, 0.2, 0.2, 0.2], [0, 0]]}}')
    return data["ratios"]
