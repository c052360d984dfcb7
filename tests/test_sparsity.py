"""Sparsity configs: presets, keep-count rule (exactly the reference's float64 expression), validation."""

from __future__ import annotations

import json

import pytest

from vitdeploy.errors import UserError
from vitdeploy.models.sparsity import (
    PRESETS,
    SparsityConfig,
    keep_count,
    parse_sparsity,
    stage_windows,
    validate_ratios,
)

T = [2, 2, 6, 2]
S = [2, 2, 18, 2]


def _json(tmp_path, obj, name="s.json"):
    p = tmp_path / name
    p.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return str(p)


def test_cfg1_keep_counts_at_672_match_the_release():
    cfg = parse_sparsity("cfg1", T, img_size=672)
    assert [nw for _, nw in stage_windows(672)] == [576, 144, 36, 9]
    assert [keep_count(576, r) for r in cfg.ratios[0]] == [403, 403]
    assert cfg.ratios[1] == [0, 0] and cfg.ratios[3] == [0, 0]  # dense blocks: no gather/scatter
    assert [keep_count(36, r) for r in cfg.ratios[2]] == [32, 32, 28, 28, 28, 28]


@pytest.mark.parametrize("name,stage0", [("cfg2", 230), ("cfg3", 172)])
def test_other_presets_stage0_keep_counts(name, stage0):
    assert [keep_count(576, r) for r in parse_sparsity(name, T, img_size=672).ratios[0]] == [stage0, stage0]


def test_keep_count_reproduces_float64_floor_artefacts():
    assert keep_count(5, 0.8) == 0  # 5 * 0.19999999999999996 -> 0, as in the reference
    assert keep_count(10, 0.8) == 1
    for nw in (1, 4, 9, 16, 36, 144, 576):
        for r in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8):
            assert keep_count(nw, r) == int(nw * (1 - r))


def test_uniform_float_and_float_string_and_noise():
    a = parse_sparsity(0.3, T)
    b = parse_sparsity("0.3", T)
    c = parse_sparsity(0.30000000000000004, T)
    assert a.ratios == b.ratios == c.ratios == [[0.3] * d for d in T]
    assert c.ratios[0][0] == 0.3  # canonical literal, so keep counts match the reference bit-for-bit
    assert parse_sparsity(0, T).is_dense and not a.is_dense
    assert parse_sparsity(None, T) is None


def test_json_file_and_to_json_round_trip(tmp_path):
    cfg = parse_sparsity(_json(tmp_path, {"ratios": PRESETS["cfg2"]}), T, img_size=672)
    assert cfg.ratios == PRESETS["cfg2"]
    again = parse_sparsity(_json(tmp_path, cfg.to_json(), "again.json"), T)
    assert again.ratios == cfg.ratios
    assert json.loads(cfg.to_json()) == {"ratios": PRESETS["cfg2"]}


def test_presets_rejected_for_swin_s_b():
    with pytest.raises(UserError, match=r"cfg1 .*swin_t.*2-2-18-2"):
        parse_sparsity("cfg1", S)
    assert parse_sparsity(0.2, S).ratios[2] == [0.2] * 18


@pytest.mark.parametrize("ratios,match", [
    ([[0.3, 0.3], [0, 0], [0] * 6], r"3 stages given.*4"),
    ([[0.3, 0.3], [0, 0], [0] * 5, [0, 0]], r"stage 2 has 5 ratios.*6 blocks"),
    ([[0.3, 0.3], [0, 0], [0] * 6, [0, 0.9]], r"stage 3 block 1 ratio is 0\.9"),
    ([[0.3, 0.3], [0, 0], [0] * 6, [0.85, 0.85]], r"stage 3 block 0 ratio is 0\.85"),
    ([[-0.1, -0.1], [0, 0], [0] * 6, [0, 0]], r"stage 0 block 0 ratio is -0\.1"),
    ([[0.3, 0.3], [0, "a"], [0] * 6, [0, 0]], r"stage 1 block 1 ratio is 'a', not a number"),
    ([[0.3, 0.3], [0, 0], [0.2, 0.2, 0.1, 0.1, 0.1, 0.1], [0, 0]], r"stage 2 block 2 ratio 0\.1 is lower"),
    ([[0.3, 0.3], [0, 0], [0.1, 0.2, 0.2, 0.2, 0.2, 0.2], [0, 0]], r"stage 2 blocks 0 \(regular\) and 1"),
    ([[0.3, 0.3], [0, 0], [0] * 6, 0], r"list of per-stage lists"),
])
def test_validation_errors_name_stage_and_block(tmp_path, ratios, match):
    with pytest.raises(UserError, match=match):
        parse_sparsity(_json(tmp_path, {"ratios": ratios}), T)
    with pytest.raises(UserError, match=match):
        validate_ratios(ratios, T)


def test_keep_count_zero_at_resolution():
    ratios = [[0, 0], [0, 0], [0] * 6, [0.1, 0.1]]
    with pytest.raises(UserError, match=r"stage 3 block 0 ratio 0\.1 keeps int\(1\*\(1-0\.1\)\)=0 of 1 windows"):
        validate_ratios(ratios, T).validate_for(224)
    validate_ratios(ratios, T).validate_for(672)  # 9 windows -> keeps 8
    with pytest.raises(UserError, match=r"stage 3 block 0 .*=0 of 1 windows .* at --img-size 224x224"):
        parse_sparsity(0.1, T, img_size=224)


def test_file_errors(tmp_path):
    with pytest.raises(UserError, match=r"not valid JSON .*line 1"):
        parse_sparsity(_json(tmp_path, "{ratios: ["), T)
    with pytest.raises(UserError, match=r'"ratios" key'):
        parse_sparsity(_json(tmp_path, {"r": []}), T)
    with pytest.raises(UserError, match=r"not a float, a preset .*existing JSON file"):
        parse_sparsity(str(tmp_path / "missing.json"), T)
    d = tmp_path / "adir.json"
    d.mkdir()
    with pytest.raises(UserError, match=r"existing JSON file"):
        parse_sparsity(str(d), T)
    with pytest.raises(UserError, match=r"cannot read|encoding|not valid JSON"):
        parse_sparsity(_json(tmp_path, "", "empty.json"), T)
    (tmp_path / "bin.json").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(UserError):
        parse_sparsity(str(tmp_path / "bin.json"), T)


@pytest.mark.parametrize("spec", [1.0, "0.9", "nan", "-0.2", True, [0.1]])
def test_bad_uniform_specs(spec):
    with pytest.raises(UserError):
        parse_sparsity(spec, T)


def test_config_is_value_like():
    assert SparsityConfig([[0.1]]) == SparsityConfig([[0.1]])
    assert SparsityConfig([[0.0, 0.0]]).is_dense
