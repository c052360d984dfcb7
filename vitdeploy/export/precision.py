"""fp16 ONNX graphs (the parity thresholds for each precision live in vitdeploy.validation.parity).

Why the graph carries the precision: TensorRT 11 is strongly typed only (no FP16 builder flag;
DESIGN decision 6), so an fp16 engine is built from an fp16-typed ONNX. `to_fp16` produces that
graph: fp32 inputs/outputs by default, weights stored as float16, and the numerically fragile
parts kept in fp32 with explicit Cast nodes at the boundaries.

Why our own pass (on onnx-ir) and not a converter:
- onnxconverter-common's `float16.convert_float_to_float16` (what `polygraphy convert --fp-to-fp16`
  uses) knows nothing about model-local functions or custom domains, relies on shape inference
  leaving exact value_info behind (its best-known failure is stale types: "Type (tensor(float16))
  of output arg ... does not match expected type"), and its block list works on op types, while
  what must stay fp32 here is decided by graph structure (the chain that feeds TopK, the float math
  that ends in an integer index). We would compute a node block list ourselves anyway.
- NVIDIA ModelOpt AutoCast (the tool TensorRT 11's migration notes point to) is on the public
  index (nvidia-modelopt), but its exact pins on torch, onnx and onnxruntime conflict with the
  versions this package pins; it cannot be a required dependency here.
- The pass below is small because ONNX op schemas tell which input/output slots are
  type-polymorphic (and may become float16) and which are fixed to float32 (Resize scales and
  the like); unknown/custom-domain nodes (vitdeploy::WindowGather/WindowScatter) are treated as
  one polymorphic float type, which is exactly what their model-local functions are.

What stays fp32 (`keep` set):
- LayerNormalization / Group / Instance / RMS normalization, Softmax, LogSoftmax, TopK, and
  reductions whose fp16 accumulation overflows or loses order (ReduceL2, ReduceSumSquare,
  ReduceLogSumExp), Pow, Sqrt, Reciprocal, Log, Exp.
- A decomposed LayerNorm (ReduceMean -> Sub -> Pow -> ReduceMean -> Add -> Sqrt -> Div).
- SparseViT's importance score: every node that exclusively feeds TopK's data input, walking
  back through Abs/Reduce*/Pow/Sqrt/elementwise/reshape ops (stops at a tensor the main path
  also uses, e.g. the activation itself, which gets one Cast to fp32). TopK then ranks windows on
  fp32 scores, so near-ties are broken the way the fp32 model breaks them as often as possible.
- Float math that ends in integer index math (a float -> int Cast): the same exclusive walk back.

Everything else with a float16-capable schema runs in fp16. Initializers used only by fp16
slots are stored as float16 (values clipped to the finite fp16 range so a -1e9 mask does not
become -inf); an initializer wanted by both precisions gets an fp16 twin. Functions are not
touched: their bodies are type-polymorphic, so the call node's types rule.
"""

from __future__ import annotations

from typing import Dict, Iterable, List, Optional, Set

import numpy as np

from vitdeploy.errors import UserError

# Always fp32: normalizations, softmax and reductions whose fp16 accumulation is fragile.
FP32_OPS = frozenset({
    "LayerNormalization", "GroupNormalization", "InstanceNormalization", "RMSNormalization",
    "SimplifiedLayerNormalization", "SkipLayerNormalization", "LpNormalization",
    "Softmax", "LogSoftmax", "TopK",
    "ReduceL2", "ReduceSumSquare", "ReduceLogSumExp", "ReduceLogSum",
    "Pow", "Sqrt", "Reciprocal", "Log", "Exp",
})
# Ops an importance score / index computation is made of: the exclusive walk back from TopK or a
# float->int Cast goes through these and stops anywhere else.
_SCORE_OPS = frozenset({
    "Abs", "Neg", "ReduceMean", "ReduceL2", "ReduceL1", "ReduceSum", "ReduceSumSquare", "ReduceMax",
    "ReduceMin", "Pow", "Sqrt", "Mul", "Div", "Add", "Sub", "Reshape", "Transpose", "Flatten",
    "Squeeze", "Unsqueeze", "Slice", "Identity", "Cast", "Floor", "Ceil", "Round", "Clip", "Max", "Min",
    "Gather", "Concat", "Expand", "Range",
})
_LN_TAIL_OPS = frozenset({"Pow", "Mul", "ReduceMean", "Add", "Sqrt", "Div", "Reciprocal"})
_FP16_MAX = float(np.finfo(np.float16).max)


def _float_types():
    import onnx_ir as ir

    return {ir.DataType.FLOAT, ir.DataType.FLOAT16}


class _Schemas:
    """Which input/output slots of a node may be float16, from the ONNX op schemas."""

    def __init__(self, opset_imports: Dict[str, int]):
        self.opsets = opset_imports
        self.cache: Dict[tuple, object] = {}

    def get(self, node):
        import onnx.defs

        domain = node.domain or ""
        key = (domain, node.op_type)
        if key not in self.cache:
            version = self.opsets.get("ai.onnx" if domain == "" else domain, self.opsets.get(domain))
            schema = None
            if version is not None:
                try:
                    schema = onnx.defs.get_schema(node.op_type, version, domain)
                except Exception:  # unknown op / custom domain: treated as one polymorphic T
                    schema = None
            self.cache[key] = schema
        return self.cache[key]

    @staticmethod
    def _slot_types(schema, formal_list, index) -> Optional[Set[str]]:
        if not formal_list:
            return None
        formal = formal_list[min(index, len(formal_list) - 1)]
        for c in schema.type_constraints:
            if c.type_param_str == formal.type_str:
                return set(c.allowed_type_strs)
        return {formal.type_str}

    def allows_fp16(self, node, index: int, output: bool = False) -> bool:
        """Whether input (or output) slot `index` of `node` may hold float16."""
        schema = self.get(node)
        if schema is None:
            return True
        types = self._slot_types(schema, schema.outputs if output else schema.inputs, index)
        return types is None or "tensor(float16)" in types


def _is_float(value) -> bool:
    return value is not None and value.dtype in _float_types()


def _consumers(value):
    return [use.node for use in value.uses()]


def _exclusive_walk_back(start_nodes: Iterable, keep: Set, allowed_ops: frozenset) -> None:
    """Add to `keep` every producer whose float outputs are consumed only by kept nodes.

    Why exclusive: a tensor the main path also uses (the activation that feeds both the score
    and the window gather) must not be pulled into fp32; it gets one Cast on the score edge.
    """
    stack = list(start_nodes)
    visited = set(stack)
    while stack:
        node = stack.pop()
        for inp in node.inputs:
            if inp is None or not _is_float(inp):
                continue
            prod = inp.producer()
            if prod is None or prod in visited:
                continue
            if prod in keep:  # already fp32 (e.g. ReduceL2): walk on through it
                visited.add(prod)
                stack.append(prod)
                continue
            if prod.op_type not in allowed_ops:
                continue
            outs = [o for o in prod.outputs if _is_float(o)]
            if any(o.is_graph_output() for o in outs):
                continue
            if all(c in keep for o in outs for c in _consumers(o)):
                keep.add(prod)
                visited.add(prod)
                stack.append(prod)


def _find_keep(graph) -> Set:
    import onnx_ir as ir

    keep: Set = set()
    nodes = list(graph)
    for node in nodes:
        if node.op_type in FP32_OPS and node.domain in ("", "ai.onnx"):
            keep.add(node)
    # Decomposed LayerNorm: Sub(x, ReduceMean(x)) and its variance/normalize tail up to the Div.
    for node in nodes:
        if node.op_type != "Sub" or len(node.inputs) < 2:
            continue
        mean = node.inputs[1].producer() if node.inputs[1] is not None else None
        if mean is None or mean.op_type != "ReduceMean" or mean.inputs[0] is not node.inputs[0]:
            continue
        keep.update({node, mean})
        frontier, seen = [node], {node}
        for _ in range(6):
            nxt = []
            for n in frontier:
                for o in n.outputs:
                    for c in _consumers(o):
                        if c in seen or c.op_type not in _LN_TAIL_OPS:
                            continue
                        seen.add(c)
                        keep.add(c)
                        if c.op_type != "Div":  # the normalized x: affine after it can be fp16
                            nxt.append(c)
            frontier = nxt
    # The importance score feeding TopK, and float math ending in an integer index.
    topks = [n for n in nodes if n.op_type == "TopK"]
    _exclusive_walk_back(topks, keep, _SCORE_OPS)
    int_types = {ir.DataType.INT64, ir.DataType.INT32, ir.DataType.INT16, ir.DataType.INT8,
                 ir.DataType.UINT8, ir.DataType.UINT16, ir.DataType.UINT32, ir.DataType.UINT64}
    to_int = []
    for n in nodes:
        if n.op_type == "Cast" and _is_float(n.inputs[0]):
            to = n.attributes.get("to")
            if to is not None and ir.DataType(to.value) in int_types:
                keep.add(n)
                to_int.append(n)
    _exclusive_walk_back(to_int, keep, _SCORE_OPS)
    return keep


def _infer_types(model):
    """ONNX shape inference, plus the custom nodes' output types where inference leaves them out.

    Inference types a custom node through its model-local function, unless a schema for the op is
    registered in this process (the exporter registers one, without an inference function): then
    its outputs and everything downstream stay untyped. Custom nodes are one polymorphic T (their
    functions' contract), so an untyped output takes its first input's float type, and inference
    runs again for what follows; one round per custom node on a chain at most."""
    import onnx

    float_types = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16}
    for _ in range(1 + sum(n.domain not in ("", "ai.onnx") for n in model.graph.node)):
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=False)
        g = inferred.graph
        known = {vi.name: vi.type.tensor_type.elem_type for vi in [*g.value_info, *g.input, *g.output]
                 if vi.type.tensor_type.elem_type}
        known.update((t.name, t.data_type) for t in g.initializer)
        added = False
        for n in g.node:
            if n.domain in ("", "ai.onnx") or not n.input or known.get(n.input[0]) not in float_types:
                continue
            for o in n.output:
                if o and o not in known:
                    g.value_info.append(onnx.helper.make_tensor_value_info(o, known[n.input[0]], None))
                    known[o] = known[n.input[0]]
                    added = True
        if not added:
            return inferred
        model = inferred
    return inferred


def _load_ir(model):
    """ModelProto -> onnx_ir Model with inferred value types (what the pass reads)."""
    import onnx
    import onnx_ir as ir

    if not isinstance(model, onnx.ModelProto):
        raise UserError(f"to_fp16 expects an onnx.ModelProto, got {type(model).__name__}")
    try:
        inferred = _infer_types(model)
    except Exception as e:
        raise UserError(f"fp16 conversion: ONNX shape inference failed ({str(e).splitlines()[0]}); "
                        "export the model again with vitdeploy export")
    irm = ir.from_proto(inferred)
    for node in irm.graph:
        if any(a.type in (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS) for a in node.attributes.values()):
            raise UserError(f"fp16 conversion: node {node.name!r} ({node.op_type}) has a subgraph; "
                            "control flow is not supported, export with --precision fp32")
    return irm


class _Fp16Pass:
    """One conversion: decide each node's precision, plan the input types each node wants, store
    constants in the precision their consumers want, then insert the Casts the plan still needs."""

    def __init__(self, irm, keep: Set):
        import onnx_ir as ir

        self.ir = ir
        self.F32, self.F16 = ir.DataType.FLOAT, ir.DataType.FLOAT16
        self.graph = irm.graph
        self.schemas = _Schemas(dict(irm.opset_imports))
        self.keep = keep
        self.cast_cache: Dict[tuple, object] = {}
        self.counter = 0
        self.const_wants: Dict[object, Set] = {}  # constant-like value -> dtypes its consumers want
        self.plan: List[tuple] = []  # (node, input index, wanted dtype)
        self.twins: Dict[int, object] = {}  # fp32 initializer id -> its fp16 twin

    def unique(self, name: str) -> str:
        self.counter += 1
        return f"{name}__fp16conv{self.counter}"

    def node_precision(self, node):
        """F16/F32 for nodes with float outputs, None for nodes that only consume floats."""
        if node.op_type in ("Constant", "ConstantOfShape"):
            return None  # decided by consumers below
        float_outs = [i for i, o in enumerate(node.outputs) if _is_float(o)]
        if node.op_type == "Cast":
            if not float_outs:
                return None
            return self.F32 if node in self.keep else self.F16
        if node in self.keep:
            return self.F32
        if float_outs and not all(self.schemas.allows_fp16(node, i, output=True) for i in float_outs):
            return self.F32
        return self.F16

    def cast_value(self, value, dtype):
        ir, graph = self.ir, self.graph
        key = (id(value), dtype)
        if key in self.cast_cache:
            return self.cast_cache[key]
        out = ir.Value(name=self.unique(f"{value.name}_to_{'fp16' if dtype == self.F16 else 'fp32'}"),
                       shape=value.shape, type=ir.TensorType(dtype))
        cast = ir.node("Cast", [value], {"to": int(dtype)}, outputs=[out], name=self.unique(f"Cast_{value.name}"))
        producer = value.producer()
        if producer is not None and producer.graph is graph:
            graph.insert_after(producer, cast)
        else:
            graph.insert_before(graph.node(0), cast)
        self.cast_cache[key] = out
        return out

    def plan_types(self) -> None:
        """Set every float output's type and record which type each float input should have."""
        for node in list(self.graph):
            prec = self.node_precision(node)
            float_inputs = [(i, v) for i, v in enumerate(node.inputs) if _is_float(v)]
            if prec is None:
                if node.op_type in ("Constant", "ConstantOfShape"):
                    continue
                # Consumes floats only (Shape, Equal, Cast-to-int...): leave inputs alone unless
                # their types disagree, then compare in fp32.
                if len({v.dtype for _, v in float_inputs}) <= 1:
                    continue
                prec = self.F32
            for i, v in float_inputs:
                if node.op_type == "Cast" and i == 0:
                    continue  # Cast accepts any input type
                want = prec if self.schemas.allows_fp16(node, i) else self.F32
                self.plan.append((node, i, want))
                producer = v.producer()
                if v.is_initializer() or (producer is not None and producer.op_type in ("Constant", "ConstantOfShape")):
                    self.const_wants.setdefault(v, set()).add(want)
            for o in node.outputs:
                if _is_float(o):
                    o.dtype = prec
            if node.op_type == "Cast":
                node.attributes["to"] = self.ir.AttrInt64("to", int(prec))

    def store_constants(self) -> None:
        """Constants/initializers: fp16 when every consumer wants fp16; else kept fp32 with an fp16
        twin for the fp16 consumers (folded by every runtime, no Cast at run time)."""
        ir, F16 = self.ir, self.F16
        for v, wants in self.const_wants.items():
            if v.is_graph_input() or v.is_graph_output() or v.dtype != self.F32 or F16 not in wants:
                continue
            producer = v.producer()
            if v.is_initializer():
                arr = v.const_value.numpy()
            else:
                attr = producer.attributes.get("value")
                if attr is None:
                    if producer.op_type != "ConstantOfShape":
                        continue  # value_float(s) Constants: leave fp32, a Cast follows
                    arr = np.zeros([1], np.float32)
                else:
                    arr = attr.value.numpy()
            half = _to_half_array(arr)
            if wants == {F16}:
                if v.is_initializer():
                    v.const_value = ir.tensor(half, name=v.name)
                else:
                    producer.attributes["value"] = ir.AttrTensor("value", ir.tensor(half))
                v.dtype = F16
            elif v.is_initializer():
                twin = ir.Value(name=self.unique(v.name), shape=v.shape, type=ir.TensorType(F16))
                twin.const_value = ir.tensor(half, name=twin.name)
                self.graph.register_initializer(twin)
                self.twins[id(v)] = twin
            # Constant nodes wanted by both get a Cast in apply_plan (rare: tiny scalars).

    def apply_plan(self) -> None:
        for node, i, want in self.plan:
            v = node.inputs[i]
            if v.dtype == want:
                continue
            if want == self.F16 and id(v) in self.twins:
                node.replace_input_with(i, self.twins[id(v)])
            else:
                node.replace_input_with(i, self.cast_value(v, want))

    def cast_outputs(self, io_type) -> None:
        """Graph outputs take the I/O type through a final Cast where they differ."""
        ir, graph = self.ir, self.graph
        for idx, out in enumerate(list(graph.outputs)):
            if out.dtype in (self.F32, self.F16) and out.dtype != io_type:
                name = out.name
                out.name = self.unique(name)
                new = ir.Value(name=name, shape=out.shape, type=ir.TensorType(io_type))
                graph.append(ir.node("Cast", [out], {"to": int(io_type)}, outputs=[new],
                                     name=self.unique(f"Cast_{name}")))
                graph.outputs[idx] = new


def to_fp16(model, keep_io_types: bool = True, keep_ops: Iterable[str] = ()):
    """Return an fp16-typed copy of `model` (onnx.ModelProto) with fragile parts kept in fp32.

    keep_io_types: graph inputs/outputs stay float32 (Cast nodes inside the graph), so callers
    feed and read float32 exactly as with the fp32 graph.
    keep_ops: extra op types to keep in fp32.
    """
    import onnx

    irm = _load_ir(model)
    graph = irm.graph
    keep = _find_keep(graph)
    extra = set(keep_ops)
    if extra:
        keep.update(n for n in graph if n.op_type in extra)
    conv = _Fp16Pass(irm, keep)
    if not keep_io_types:
        for inp in graph.inputs:
            if inp.dtype == conv.F32:
                inp.dtype = conv.F16  # fp32 consumers get a Cast up through the plan
    conv.plan_types()
    conv.store_constants()
    conv.apply_plan()
    conv.cast_outputs(conv.F32 if keep_io_types else conv.F16)
    graph.sort()
    if "vitdeploy.precision" in irm.metadata_props:
        irm.metadata_props["vitdeploy.precision"] = "fp16"
    out_model = conv.ir.to_proto(irm)
    try:
        onnx.checker.check_model(out_model)
    except onnx.checker.ValidationError as e:  # a bug in this pass, not user input
        raise RuntimeError(f"fp16 conversion produced an invalid graph: {str(e).splitlines()[0]}") from e
    return out_model


def _to_half_array(arr) -> np.ndarray:
    arr = np.asarray(arr, dtype=np.float32)
    clipped = np.where(np.isfinite(arr), np.clip(arr, -_FP16_MAX, _FP16_MAX), arr)
    return clipped.astype(np.float16)
