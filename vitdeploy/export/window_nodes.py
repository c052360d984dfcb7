"""ONNX side of the window ops: custom nodes + model-local function bodies (DESIGN decisions 3, 4).

Custom form (default): each ``torch.ops.vitdeploy.window_{gather,scatter}`` call becomes one node
``vitdeploy::WindowGather`` / ``vitdeploy::WindowScatter`` carrying ``plugin_namespace="vitdeploy"``
and ``plugin_version="1"`` -- TensorRT 10.7-10.14 prefers a registered plugin over a local
function, 10.15+/11.x does so for nodes with this attribute -- and the model carries a FunctionProto
of the same (domain, name) whose body uses standard ops, so ONNX Runtime (and TensorRT without the
plugin) inline it. ``torch.onnx.export`` inlines any function it
is handed, so the bodies are attached afterwards, in ``finalize``.

Portable form (``--portable``): the exporter emits the same bodies in place (no custom domain at
all); one body definition (``_gather_body`` / ``_scatter_body``) serves both forms.

Bodies flatten windows to rows ``[B*nW, N*C]`` and move whole rows with ``Gather`` / ``ScatterND``
on row indices ``b*nW + idx`` -- not ``GatherElements`` with an index expanded to the data's size,
which would materialise an index tensor as large as the data. Only in-range indices (all the
model's TopK produces) are in the bodies' domain; see ``vitdeploy.plugins.reference``.

Usage (the exporter)::

    prog = torch.onnx.export(model, (x,), dynamo=True, ..., **export_hooks(portable))
    proto = finalize(prog.model_proto, portable)
"""

from __future__ import annotations

import onnx
from onnx import helper

DOMAIN = "vitdeploy"
DOMAIN_VERSION = 1
GATHER = "WindowGather"
SCATTER = "WindowScatter"
PLUGIN_NAMESPACE = "vitdeploy"
PLUGIN_VERSION = "1"
PLUGIN_ATTRS = ("plugin_namespace", "plugin_version")
_FLOAT_TYPES = ["tensor(float)", "tensor(float16)", "tensor(bfloat16)"]


def _register_schemas() -> None:
    """onnxscript needs an op's arity to record a custom-domain node during export."""
    OpSchema = onnx.defs.OpSchema
    attrs = [OpSchema.Attribute(a, OpSchema.AttrType.STRING, "TensorRT plugin matching") for a in PLUGIN_ATTRS]
    T = ("T", _FLOAT_TYPES, "window data")
    idx = OpSchema.FormalParameter("idx", "tensor(int64)")
    specs = {
        GATHER: [OpSchema.FormalParameter("x", "T"), idx],
        SCATTER: [OpSchema.FormalParameter("base", "T"), idx, OpSchema.FormalParameter("src", "T")],
    }
    for name, inputs in specs.items():
        if onnx.defs.has(name, DOMAIN):
            continue
        onnx.defs.register_schema(OpSchema(
            name, DOMAIN, DOMAIN_VERSION, inputs=inputs, outputs=[OpSchema.FormalParameter("y", "T")],
            type_constraints=[T], attributes=attrs))


def _translations(portable: bool):
    import torch

    import vitdeploy.models.window_ops  # noqa: F401  (defines torch.ops.vitdeploy.*)

    if portable:
        tb = _TraceBuilder()
        return {torch.ops.vitdeploy.window_gather.default: lambda x, idx: _gather_body(tb, x, idx),
                torch.ops.vitdeploy.window_scatter.default:
                    lambda base, idx, src: _scatter_body(tb, base, idx, src)}

    from onnxscript.values import Opset

    _register_schemas()
    op = Opset(DOMAIN, DOMAIN_VERSION)

    def gather(x, idx):
        return op.WindowGather(x, idx, plugin_namespace=PLUGIN_NAMESPACE, plugin_version=PLUGIN_VERSION)

    def scatter(base, idx, src):
        return op.WindowScatter(base, idx, src, plugin_namespace=PLUGIN_NAMESPACE,
                                plugin_version=PLUGIN_VERSION)

    return {torch.ops.vitdeploy.window_gather.default: gather,
            torch.ops.vitdeploy.window_scatter.default: scatter}


def export_hooks(portable: bool) -> dict:
    """Extra kwargs for ``torch.onnx.export(..., dynamo=True)``.

    Custom form: opaque ``vitdeploy::`` nodes (``finalize`` attaches their bodies). Portable: the
    same bodies emitted in place as standard ops, so the exporter's optimizer folds their shape
    arithmetic against the static dims.
    """
    return {"custom_translation_table": _translations(portable)}


# ------------------------------------------------------------------------------- function bodies
# Written once against a tiny builder interface, emitted either as FunctionProto nodes or traced
# by the exporter (portable form), so the two forms cannot drift apart.

# Every name inside a function body starts with this: TensorRT 10.7's local-function importer let an
# outer tensor of the same name ("x", "reshape_3", ...) capture a body's tensor (fixed in 10.8).
BODY_PREFIX = "vitdeploy_"


class _ProtoBuilder:
    def __init__(self):
        self.nodes: list[onnx.NodeProto] = []

    def __call__(self, op_type: str, *inputs: str, **attrs) -> str:
        out = f"{BODY_PREFIX}{op_type.lower()}_{len(self.nodes)}"
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], **attrs))
        return out

    def const(self, values, scalar: bool = False) -> str:
        return self("Constant", value_int=values[0]) if scalar else self("Constant", value_ints=list(values))


class _TraceBuilder:
    def __call__(self, op_type: str, *inputs, **attrs):
        from onnxscript import opset18

        return getattr(opset18, op_type)(*inputs, **attrs)

    def const(self, values, scalar: bool = False):
        from onnxscript import opset18

        return opset18.Constant(value_int=values[0]) if scalar else opset18.Constant(value_ints=list(values))


def _rows(g, data, idx):
    """Row indices [B, K] = idx + b*nW into data [B, nW, ...] flattened to [B*nW, ...]."""
    shape = g("Shape", data)
    zero = g.const([0], scalar=True)
    B = g("Gather", shape, zero, axis=0)
    nW = g("Gather", shape, g.const([1], scalar=True), axis=0)
    offsets = g("Range", zero, g("Mul", B, nW), nW)  # [B]: 0, nW, 2nW, ...
    return g("Add", idx, g("Unsqueeze", offsets, g.const([1])))


def _to_rows(g, t):
    """[B, W, N, C] -> [B*W, N*C]. Not ``Flatten``: onnxscript 0.7.2's optimizer rewrites two
    Flattens of one tensor into Reshapes whose shape initializers collide, leaving a dangling input."""
    nc = g("Mul", g("Shape", t, start=2, end=3), g("Shape", t, start=3, end=4))
    return g("Reshape", t, g("Concat", g.const([-1]), nc, axis=0))


def _gather_body(g, x, idx):
    x_rows = _to_rows(g, x)  # [B*nW, N*C]
    rows = g("Reshape", _rows(g, x, idx), g.const([-1]))  # [B*K]
    y_rows = g("Gather", x_rows, rows, axis=0)  # [B*K, N*C]: whole rows, no expanded index
    out_shape = g("Concat", g("Shape", idx), g("Shape", x, start=2), axis=0)  # [B, K, N, C]
    return g("Reshape", y_rows, out_shape)


def _scatter_body(g, base, idx, src):
    base_rows = _to_rows(g, base)  # [B*nW, N*C]
    rows = g("Reshape", _rows(g, base, idx), g.const([-1, 1]))  # [B*K, 1]
    src_rows = _to_rows(g, src)  # [B*K, N*C]
    # No `reduction` attribute: some parsers reject it even when it says 'none'.
    y_rows = g("ScatterND", base_rows, rows, src_rows)
    return g("Reshape", y_rows, g("Shape", base))


def _function(name: str, inputs: list[str], body, opset: int) -> onnx.FunctionProto:
    g = _ProtoBuilder()
    params = [BODY_PREFIX + i for i in inputs]
    out = body(g, *params)
    g.nodes.append(helper.make_node("Identity", [out], [BODY_PREFIX + "y"]))
    return helper.make_function(DOMAIN, name, params, [BODY_PREFIX + "y"], g.nodes,
                                [helper.make_opsetid("", opset)], attributes=list(PLUGIN_ATTRS))


def gather_function(opset: int) -> onnx.FunctionProto:
    """``vitdeploy::WindowGather`` body at the model's default opset (the checker requires equal)."""
    return _function(GATHER, ["x", "idx"], _gather_body, opset)


def scatter_function(opset: int) -> onnx.FunctionProto:
    return _function(SCATTER, ["base", "idx", "src"], _scatter_body, opset)


def _default_opset(proto: onnx.ModelProto) -> int:
    for o in proto.opset_import:
        if o.domain in ("", "ai.onnx"):
            return o.version
    raise ValueError("model has no default-domain opset import")


def finalize(model_proto: onnx.ModelProto, portable: bool) -> onnx.ModelProto:
    """Attach the function bodies to the custom nodes (custom form); check the portable form.

    Returns a new proto. A model without window ops (dense Swin, EfficientViT) comes back unchanged.
    """
    proto = onnx.ModelProto()
    proto.CopyFrom(model_proto)
    has_custom = any(n.domain == DOMAIN for n in proto.graph.node)
    if portable:
        if has_custom:
            raise ValueError("portable finalize got vitdeploy nodes: export with export_hooks(portable=True)")
        return proto
    if not has_custom:
        return proto
    opset = _default_opset(proto)
    # The exporter inlines any function it is handed; ours are attached now (replacing stale ones).
    kept = [f for f in proto.functions if f.domain != DOMAIN]
    del proto.functions[:]
    proto.functions.extend(kept + [gather_function(opset), scatter_function(opset)])
    if not any(o.domain == DOMAIN for o in proto.opset_import):
        proto.opset_import.append(helper.make_opsetid(DOMAIN, DOMAIN_VERSION))
    return proto


def inline_functions(model_proto: onnx.ModelProto) -> onnx.ModelProto:
    """The model with the window ops' local functions inlined (standard ops only), every node named uniquely.

    What TensorRT's parser gets when the plugin is not used: a body node keeps an empty or shared name
    inside its function, and a parser that inlines by itself names each copy alike in all call sites
    ("A node named ... already exists" from TensorRT's importer, which also ignores function overloads),
    so we inline here and name every inlined node after its call site and first output, both unique.
    Raises ValueError when a vitdeploy node has no body.
    """
    from onnx.inliner import inline_local_functions

    inlined = inline_local_functions(model_proto)
    left = [n.name or n.op_type for n in inlined.graph.node if n.domain == DOMAIN]
    if left:
        raise ValueError(f"vitdeploy nodes without a function body: {', '.join(left[:3])}")
    del inlined.functions[:]
    kept = [o for o in inlined.opset_import if o.domain != DOMAIN]
    del inlined.opset_import[:]
    inlined.opset_import.extend(kept)
    original = {n.name for n in model_proto.graph.node if n.name}
    used = set()
    for node in inlined.graph.node:
        name = node.name
        if not name or name in used or (name not in original and not name.startswith(BODY_PREFIX)):
            base = f"{BODY_PREFIX}inlined/{node.output[0] if node.output else node.op_type}"
            name, k = base, 1
            while name in used:
                name, k = f"{base}_{k}", k + 1
            node.name = name
        used.add(node.name)
    return inlined
