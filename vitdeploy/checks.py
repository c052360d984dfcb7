"""Check an artifact against the reference outputs that travel with it (OUT.ref.npz), without torch.

Orchestration above the layers: open the .onnx or engine (artifact.py), find its reference beside
it or beside the ONNX an engine was built from, refuse a reference made for other weights, pick
the backend, run it on the stored inputs and let validation/parity.py give the verdict. Used by
`validate`, by `export` (its own ORT check) and by `build` on a fresh engine.
"""

from __future__ import annotations

import os
from typing import Callable, Optional

from vitdeploy.errors import CheckFailed, UserError


def parity_from_reference(artifact: os.PathLike, reference: Optional[os.PathLike] = None, *,
                          backend: Optional[str] = None, plugin_lib: Optional[str] = None,
                          progress: Callable[[str], None] = lambda msg: None):
    """Check an .onnx or engine against its OUT.ref.npz (given, or found beside the artifact or the ONNX
    an engine was built from), without torch. A ParityReport; None when no reference is given or found.

    UserError (exit 2) when the reference's provenance names other weights than the artifact's
    metadata (model, checkpoint sha256, sparsity, task, resolution)."""
    from vitdeploy.artifact import open_artifact
    from vitdeploy.engines.backends import default_backend, make_artifact_runner
    from vitdeploy.validation.parity import parity_class, run_reference_parity
    from vitdeploy.validation.reference_outputs import find_reference, load_reference, provenance_mismatches

    art = open_artifact(artifact)
    ref_path = reference or find_reference(art.path, art.source_onnx)
    if ref_path is None:
        return None
    ref = load_reference(ref_path)
    bad = provenance_mismatches(ref.provenance, art.metadata)
    if bad:
        raise UserError(f"{ref_path} was made for another export than {art.path} ({'; '.join(bad)}); "
                        "use the OUT.ref.npz written with this artifact")
    backend = backend or default_backend(art)
    progress(f"running {backend} on the {ref.batch} inputs stored in {ref_path}")
    runner = make_artifact_runner(backend, str(art.path), plugin_lib=plugin_lib)
    try:
        return run_reference_parity(ref, runner, precision=parity_class(art.metadata),
                                    task=art.metadata.get("task", "classify"))
    finally:
        runner.close()


def check_against_reference(artifact: os.PathLike, *, plugin_lib: Optional[str] = None,
                            progress: Callable[[str], None] = lambda msg: None):
    """For `build`: check a fresh engine against the OUT.ref.npz of the ONNX it was built from, when
    there is one. Prints the table through `progress`; CheckFailed (exit 1) when parity fails,
    UserError (exit 2) when the reference is for other weights; None when there is no reference or
    this host cannot run the engine (said through `progress`)."""
    from vitdeploy.artifact import open_artifact
    from vitdeploy.engines.manifest import check_host_can_run

    art = open_artifact(artifact)
    if art.kind == "engine":
        try:  # e.g. an RTX engine built on a CPU-only host: its parity is checked where it runs
            check_host_can_run(art.path, art.manifest)
        except UserError as e:
            progress(f"parity not checked on this host ({e}); run `vitdeploy validate {artifact}` where it runs")
            return None
    report = parity_from_reference(artifact, plugin_lib=plugin_lib, progress=progress)
    if report is None:
        return None
    progress(report.table())
    if not report.passed:
        raise CheckFailed(f"{artifact}: parity against the export's reference outputs failed (table above)")
    return report
