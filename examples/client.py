#!/usr/bin/env python
"""Query a Triton server that serves a vitdeploy classifier; print the top-5 classes per image.

    vitdeploy serve m4.onnx --http-port 8000 --grpc-port 8001
    python examples/client.py --url 127.0.0.1:8000 --images ./val_images
    python examples/client.py --protocol grpc --url 127.0.0.1:8001 --images cat.jpg dog.jpg

Works against `vitdeploy serve` and against a standalone tritonserver on a `vitdeploy triton-repo`
repository. Everything model-specific (model name, input/output names, resolution, batch limit)
is read from the server; images go through the same preprocessing as `vitdeploy validate`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SERVER_ID_PREFIX = "vitdeploy:"  # `vitdeploy serve` names its server after the model it serves


def _client(protocol: str, url: str):
    if protocol == "http":
        import tritonclient.http as tc
    else:
        import tritonclient.grpc as tc
    return tc, tc.InferenceServerClient(url)


def _pick_model(tc, client, protocol: str, wanted):
    if wanted:
        return wanted
    try:  # a standalone tritonserver lists its repository
        index = client.get_model_repository_index()
        if protocol == "grpc":
            index = [{"name": m.name, "state": m.state} for m in index.models]
        ready = [m["name"] for m in index if m.get("state") == "READY"]
        if len(ready) == 1:
            return ready[0]
        if len(ready) > 1:
            sys.exit(f"error: the server has several models ({', '.join(ready)}); pick one with --model")
    except Exception:  # PyTriton protects the repository API with a token
        pass
    meta = client.get_server_metadata()
    name = meta["name"] if protocol == "http" else meta.name
    if name.startswith(SERVER_ID_PREFIX):
        return name[len(SERVER_ID_PREFIX):]
    sys.exit("error: cannot tell which model to query; pass --model NAME")


def _model_io(client, protocol: str, model: str):
    cfg = client.get_model_config(model)
    if protocol == "grpc":
        from google.protobuf.json_format import MessageToDict

        cfg = MessageToDict(cfg.config, preserving_proto_field_name=True)
    inp, out = cfg["input"][0], cfg["output"][0]
    dims = [int(d) for d in inp["dims"]]
    max_batch = int(cfg.get("max_batch_size", 0))
    if max_batch == 0:  # fixed-batch graph: dims include the batch axis
        dims = dims[1:]
    if len(dims) != 3 or dims[0] != 3:
        sys.exit(f"error: {model} takes {inp['name']} with dims {inp['dims']}; this client expects images [3,H,W]")
    # preprocessing recorded by `vitdeploy triton-repo` (the export's metadata); H x W from the dims otherwise
    pre = {k[len("vitdeploy."):]: v.get("string_value") for k, v in cfg.get("parameters", {}).items()
           if k.startswith("vitdeploy.")}
    return inp["name"], out["name"], (dims[1], dims[2]), max_batch, inp.get("data_type", "TYPE_FP32"), pre


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default=None, help="host:port (default 127.0.0.1:8000 for http, :8001 for grpc)")
    p.add_argument("--protocol", choices=["http", "grpc"], default="http")
    p.add_argument("--images", nargs="+", required=True, help="image files or a directory of images")
    p.add_argument("--model", default=None, help="model name (default: the one the server serves)")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--labels", default=None, help="text file with one class name per line (optional)")
    p.add_argument("--mean", type=float, nargs=3, default=None, help="default: the model config's, else ImageNet")
    p.add_argument("--std", type=float, nargs=3, default=None, help="default: the model config's, else ImageNet")
    p.add_argument("--resize", choices=("crop", "keep-ratio", "stretch"), default=None,
                   help="default: the mode the export recorded (config parameter vitdeploy.resize), else crop")
    a = p.parse_args(argv)
    url = a.url or ("127.0.0.1:8000" if a.protocol == "http" else "127.0.0.1:8001")

    from tritonclient.utils import InferenceServerException

    from vitdeploy.errors import UserError
    from vitdeploy.models.preprocess import list_images, preprocess_images
    from vitdeploy.models.size import ImageSize

    tc, client = _client(a.protocol, url)
    try:
        if not client.is_server_ready():
            sys.exit(f"error: server at {url} is not ready")
        model = _pick_model(tc, client, a.protocol, a.model)
        in_name, out_name, hw, max_batch, dtype, pre = _model_io(client, a.protocol, model)
        img_size = ImageSize(*hw)
        try:
            paths = list_images(a.images[0]) if len(a.images) == 1 else [Path(x) for x in a.images]
            # the export's own preprocessing (resize mode, crop, interpolation, mean/std) when the config has it
            kw = {"resize": a.resize or pre.get("resize", "crop")}
            if "crop_pct" in pre:
                kw["crop_pct"] = float(pre["crop_pct"])
            if "interpolation" in pre:
                kw["interpolation"] = pre["interpolation"]
            mean = json.loads(pre["mean"]) if a.mean is None and "mean" in pre else (a.mean or IMAGENET_MEAN)
            std = json.loads(pre["std"]) if a.std is None and "std" in pre else (a.std or IMAGENET_STD)
            x = preprocess_images(paths, img_size, mean, std, **kw)
        except UserError as e:
            sys.exit(f"error: {e}")
        labels = Path(a.labels).read_text().splitlines() if a.labels else None
        np_dtype = np.float16 if dtype == "TYPE_FP16" else np.float32
        step = max_batch or 1
        logits = []
        for s in range(0, len(x), step):
            chunk = x[s:s + step].astype(np_dtype)
            inp = tc.InferInput(in_name, list(chunk.shape), "FP16" if np_dtype == np.float16 else "FP32")
            inp.set_data_from_numpy(chunk)
            res = client.infer(model, [inp], outputs=[tc.InferRequestedOutput(out_name)])
            logits.append(res.as_numpy(out_name).astype(np.float32))
    except InferenceServerException as e:
        sys.exit(f"error: server at {url}: {e}")
    finally:
        client.close()

    probs = _softmax(np.concatenate(logits))
    print(f"model {model} via {a.protocol}://{url}: {len(paths)} image(s) at {img_size.label()}")
    for path, pr in zip(paths, probs):
        top = np.argsort(-pr)[:a.top_k]
        cls = ", ".join(f"{labels[i] if labels and i < len(labels) else i}: {pr[i]:.3f}" for i in top)
        print(f"{path.name}: {cls}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
