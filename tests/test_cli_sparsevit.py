"""SparseViT through the CLI, as a user runs it: pruned export with custom nodes, portable export,
re-validation from metadata alone, bench, and every bad input of issue 3 (exit 2, nothing written)."""

import json

import onnx
import pytest
import torch

from conftest import assert_user_error, run

# 224 px: stage 3 is a single window, so it must stay dense
RATIOS = {"ratios": [[0.5, 0.5], [0.3, 0.3], [0.2, 0.2, 0.4, 0.4, 0.5, 0.5], [0, 0]]}


@pytest.fixture(scope="module")
def cfg_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("cfg") / "sparsity.json"
    p.write_text(json.dumps(RATIOS))
    return p


@pytest.fixture(scope="module")
def pruned_export(tmp_path_factory, cfg_file):
    out = tmp_path_factory.mktemp("sv") / "sparsevit_t.onnx"
    res = run("export", "swin_t", "--img-size", 224, "--task", "backbone", "--sparsity", cfg_file, "-o", out)
    assert res.returncode == 0, res.stderr[-3000:]
    return out


def test_pruned_backbone_export_has_custom_nodes_and_passes_parity(pruned_export):
    proto = onnx.load(str(pruned_export))
    ops = {(n.domain, n.op_type) for n in proto.graph.node}
    assert ("vitdeploy", "WindowGather") in ops and ("vitdeploy", "WindowScatter") in ops
    for n in proto.graph.node:
        if n.domain == "vitdeploy":
            attrs = {a.name: a.s.decode() for a in n.attribute}
            assert attrs == {"plugin_namespace": "vitdeploy", "plugin_version": "1"}
    assert {(f.domain, f.name) for f in proto.functions} == {("vitdeploy", "WindowGather"),
                                                             ("vitdeploy", "WindowScatter")}
    assert [o.name for o in proto.graph.output] == [f"features.{i}" for i in range(4)]
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["vitdeploy.sparsity"]) == RATIOS
    report = json.loads(pruned_export.with_name("sparsevit_t.report.json").read_text())
    assert report["parity"]["passed"]
    assert all(o["max_rel_err"] <= 1e-4 for o in report["parity"]["outputs"])
    assert report["dense_macs"] > report["macs"] * 1.2  # pruning removed real work


def test_revalidate_from_metadata_and_bench(pruned_export, tmp_path):
    # exported without a checkpoint: validate rebuilds the same seeded weights and sparsity from metadata
    res = run("validate", pruned_export, "--batch", "2")
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.count(" ok") == 4 and "verdict: PASS" in res.stdout
    js = tmp_path / "b.json"
    res = run("bench", pruned_export, "--backend", "torch", "ort", "--batch", "1", "--threads", "2",
              "--iters", "2", "--warmup", "1", "--json", js)
    assert res.returncode == 0, res.stderr[-2000:]
    rows = json.loads(js.read_text())
    assert [r["backend"] for r in rows] == ["torch", "ort"] and rows[0]["sparsity"] == RATIOS


def test_portable_export_uses_standard_ops_only(tmp_path):
    out = tmp_path / "p.onnx"
    res = run("export", "swin_t", "--sparsity", "0.5", "--img-size", 448, "--portable", "-o", out)
    assert res.returncode == 0, res.stderr[-3000:]
    proto = onnx.load(str(out))
    assert not any(n.domain == "vitdeploy" for n in proto.graph.node) and not proto.functions
    assert {"TopK", "ScatterND"} <= {n.op_type for n in proto.graph.node}
    assert "PASS" in res.stdout


# ----------------------------------------------------------------------------- bad inputs

@pytest.mark.parametrize("spec,needle", [
    ("{not json", "json"),
    ({"ratios": [[0.35, 0.35], [0, 0], [0] * 6, [0, 0]]}, "0.35"),
    ({"ratios": [[0.3, 0.3], [0, 0], [0.4, 0.4, 0.2, 0.2, 0.2, 0.2], [0, 0]]}, "stage 2"),
    ({"ratios": [[0.3, 0.2], [0, 0], [0] * 6, [0, 0]]}, "stage 0"),
    ({"ratios": [[0.3, 0.3], [0, 0], [0] * 6]}, "stage"),
    ({"ratios": [[0.3, 0.3], [0, 0], [0] * 6, [0.5, 0.5]]}, "stage 3"),  # 0 windows kept at 224
    ("1.5", "1.5"),
])
def test_bad_sparsity_configs(tmp_path, spec, needle):
    outdir = tmp_path / "out"
    outdir.mkdir()
    if isinstance(spec, dict) or spec.startswith("{"):
        f = tmp_path / "cfg.json"
        f.write_text(spec if isinstance(spec, str) else json.dumps(spec))
        spec = f
    res = run("export", "swin_t", "--img-size", 224, "--sparsity", spec, "-o", outdir / "m.onnx")
    assert_user_error(res, needle)
    assert list(outdir.iterdir()) == []


def test_image_size_not_multiple_of_32(tmp_path):
    res = run("export", "swin_t", "--img-size", 230, "-o", tmp_path / "m.onnx")
    assert_user_error(res, "multiple of 32")
    assert not list(tmp_path.iterdir())


def test_swin_s_checkpoint_given_to_swin_t(tmp_path):
    from vitdeploy.models.swin import build_swin

    p = tmp_path / "swin_s.pth"
    torch.save({"state_dict": build_swin("swin_s").state_dict()}, p)
    res = run("export", "swin_t", "--checkpoint", p, "-o", tmp_path / "m.onnx", "--no-validate")
    assert_user_error(res, "swin_s")
    assert not (tmp_path / "m.onnx").exists()


def test_efficientvit_checkpoint_given_to_swin(tmp_path):
    from vitdeploy.models.efficientvit import build_efficientvit, to_official_state_dict

    p = tmp_path / "m0.pth"
    torch.save({"model": to_official_state_dict(build_efficientvit("efficientvit_m0"))}, p)
    res = run("export", "swin_t", "--checkpoint", p, "-o", tmp_path / "m.onnx", "--no-validate")
    assert_user_error(res, "efficientvit")
    assert not (tmp_path / "m.onnx").exists()
