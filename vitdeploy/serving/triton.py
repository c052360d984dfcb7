"""`vitdeploy serve`: a real Triton Inference Server (through PyTriton) in front of our Runner.

We do not write a server: Triton does the HTTP/gRPC protocols, request validation (shape, dtype,
batch limit), dynamic batching, instance scheduling and Prometheus metrics. PyTriton starts the
tritonserver binary it ships and forwards each (batched) request to a Python callable in this
process, which runs the same Runner that `validate` and `bench` use, so outputs over the wire
equal the direct Runner's outputs.

The command line is `vitdeploy serve` (cli.py); `--ready-json` prints one `READY {json}` line
when the model answers, for scripts and tests that start a server and wait for it. `--backend
torch` gets the PyTorch original through a `torch_model` callback from the caller, so serving
never imports the jobs layer.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import sysconfig
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Set

import numpy as np

from vitdeploy.errors import CheckFailed, UserError
from vitdeploy.serving.repository import ArtifactInfo, default_preferred, describe_artifact, write_triton_repo

__all__ = ["serve", "write_triton_repo", "ServerInfo", "ensure_libpython_visible", "describe_ready"]

DEFAULT_QUEUE_DELAY_US = 500
SERVER_ID_PREFIX = "vitdeploy:"
LOG = logging.getLogger("vitdeploy.serving")


@dataclass
class ServerInfo:
    model_name: str
    http_url: str
    grpc_url: str
    metrics_url: str
    backend: str
    max_batch: int
    instances: int
    dynamic_batching: bool
    inputs: List[dict]
    outputs: List[dict]
    server_pids: List[int]

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def ensure_libpython_visible(env: Optional[Dict[str, str]] = None) -> str:
    """Put this interpreter's libpython directory first on LD_LIBRARY_PATH.

    PyTriton's Python-backend stub links `libpython3.X.so.1.0` dynamically. Without help the loader
    takes the first one on the default path: on a machine with a pyenv/conda interpreter and a
    distribution Python of the same minor version, that is the *distribution's* library, whose C
    core does not match our stdlib (the stub dies with e.g. "'_thread.RLock' object has no
    attribute '_recursion_count'"). tritonserver inherits our environment, so setting it here,
    before PyTriton spawns the server, is enough. Returns the directory (or "" if not needed).
    """
    env = os.environ if env is None else env
    if not sysconfig.get_config_var("Py_ENABLE_SHARED"):
        raise UserError(f"{sys.executable} is a statically linked Python; PyTriton's backend stub needs "
                        "libpython as a shared library (pyenv: PYTHON_CONFIGURE_OPTS=--enable-shared "
                        "pyenv install ...; or use a distribution/conda Python)")
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    ldlib = sysconfig.get_config_var("LDLIBRARY") or ""
    if not libdir or not (Path(libdir) / ldlib).exists():
        return ""
    parts = [p for p in env.get("LD_LIBRARY_PATH", "").split(":") if p]
    if not parts or os.path.realpath(parts[0]) != os.path.realpath(libdir):
        parts = [libdir] + [p for p in parts if os.path.realpath(p) != os.path.realpath(libdir)]
        env["LD_LIBRARY_PATH"] = ":".join(parts)
    return libdir


def _check_port(host: str, port: int, what: str) -> None:
    if not (0 < port < 65536):
        raise UserError(f"--{what}-port {port} is not a valid TCP port")
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        # SO_REUSEADDR as tritonserver does: only a socket that is really listening makes this fail
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise UserError(f"{what} port {host}:{port} is not available ({e.strerror}); "
                            f"pick another with --{what}-port or stop what is using it")


def _make_runner(info: ArtifactInfo, backend: str, threads: Optional[int], plugin_lib: Optional[str],
                 torch_model=None):
    from vitdeploy.engines.backends import make_artifact_runner
    from vitdeploy.engines.runners import TorchRunner

    if backend == "torch":
        return TorchRunner(torch_model, input_name=info.inputs[0].name,
                           output_names=[o.name for o in info.outputs],
                           input_shape=info.inputs[0].shape, threads=threads, name="torch")
    if info.kind == "engine" and backend != "trt":
        raise UserError(f"{info.path} is a TensorRT engine: serve it with --backend trt")
    return make_artifact_runner(backend, str(info.path), threads, plugin_lib)


def _infer_fn(runner, info: ArtifactInfo):
    """The callable PyTriton runs for one model instance: a (dynamically) batched request in,
    the Runner's outputs out. Triton already rejected wrong names/shapes/dtypes/batch sizes."""
    from pytriton.decorators import batch

    in_names = [t.name for t in info.inputs]
    outs = [(t.name, np.dtype(t.dtype)) for t in info.outputs]
    fixed = info.fixed_batch

    @batch
    def infer(**inputs):
        feeds = {n: np.ascontiguousarray(inputs[n], dtype=np.dtype(t.dtype))
                 for n, t in zip(in_names, info.inputs)}
        n = feeds[in_names[0]].shape[0]
        if fixed is None or n == fixed:
            res = runner.infer(feeds)
        else:
            # a graph exported with a fixed batch: run it chunk by chunk (zero-padding the last one)
            parts = []
            for s in range(0, n, fixed):
                chunk = {k: v[s:s + fixed] for k, v in feeds.items()}
                m = chunk[in_names[0]].shape[0]
                if m < fixed:
                    chunk = {k: np.concatenate([v, np.zeros((fixed - m,) + v.shape[1:], v.dtype)])
                             for k, v in chunk.items()}
                parts.append({k: v[:m] for k, v in runner.infer(chunk).items()})
            res = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        return {name: np.ascontiguousarray(res[name], dtype=dt) for name, dt in outs}

    return infer


def _server_children(known: Sequence[int] = ()) -> List["psutil.Process"]:  # noqa: F821
    import psutil

    try:
        kids = psutil.Process().children(recursive=True)
    except psutil.Error:
        return []
    out = []
    for p in kids:
        if p.pid in known:
            continue
        try:
            # multiprocessing's resource tracker belongs to this interpreter, not to the server: it
            # exits with us and must not be waited for here
            if "multiprocessing.resource_tracker" in " ".join(p.cmdline()):
                continue
        except psutil.Error:
            continue
        out.append(p)
    return out


def _reap(procs, timeout: float = 15.0) -> List[int]:
    """Wait for PyTriton's processes to exit; kill what is still there. Returns pids we had to kill."""
    import psutil

    procs = [p for p in procs if p.is_running()]
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    killed = []
    for p in alive:
        try:
            p.kill()
            killed.append(p.pid)
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=5)
    return killed


def serve(artifact, *, backend: str = "ort", host: str = "127.0.0.1", http_port: int = 8000,
          grpc_port: int = 8001, metrics_port: int = 8002, max_batch: int = 16,
          max_queue_delay_us: int = DEFAULT_QUEUE_DELAY_US, preferred_batch_sizes: Optional[Sequence[int]] = None,
          dynamic_batching: bool = True, instances: int = 1, model_name: Optional[str] = None,
          plugin_lib: Optional[str] = None, threads: Optional[int] = None,
          torch_model: Optional[Callable[[ArtifactInfo, Callable[[str], None]], object]] = None,
          ready_callback: Optional[Callable[[ServerInfo], None]] = None,
          stop_event: Optional[threading.Event] = None, verbose: bool = False,
          startup_timeout_s: float = 120.0, progress: Optional[Callable[[str], None]] = None) -> ServerInfo:
    """Serve `artifact` until SIGINT/SIGTERM (or `stop_event`), then shut Triton down cleanly.

    Blocks. `ready_callback(ServerInfo)` runs once the model answers on every endpoint. On return
    no tritonserver / backend-stub process started here is left running. `torch_model(info, say)`
    returns the PyTorch original for `backend="torch"` (the CLI rebuilds it from the metadata).
    """
    info = describe_artifact(artifact, model_name)
    _check_request(info, backend=backend, max_batch=max_batch, instances=instances,
                   max_queue_delay_us=max_queue_delay_us, torch_model=torch_model)
    ports = {"http": http_port, "grpc": grpc_port, "metrics": metrics_port}
    _check_ports(host, ports)
    preferred = _preferred_sizes(info, max_batch, preferred_batch_sizes)
    _prepare_pytriton(verbose)
    say = progress or _warnings_only
    runners = _make_runners(info, backend, instances, threads, plugin_lib, torch_model, say)
    # The server's own log goes to a file we own (TritonConfig.log_file), read back for error
    # messages; --verbose leaves it on PyTriton's stdout instead.
    log_dir = tempfile.TemporaryDirectory(prefix="vitdeploy-triton-")
    log_path = None if verbose else Path(log_dir.name) / "tritonserver.log"
    stop = stop_event or threading.Event()
    previous = _stop_on_signals(stop)
    running = _Running(log_path, known_pids={p.pid for p in _server_children()})
    server_info = None
    try:
        make_triton = partial(_bound_triton, _triton_config(info, host, ports, verbose, log_path), info, runners,
                              max_batch, preferred if dynamic_batching else None, max_queue_delay_us)
        _start_triton(running, make_triton, f"{host} (http {http_port}, grpc {grpc_port}, metrics {metrics_port})",
                      startup_timeout_s, stop, say)
        server_info = ServerInfo(
            model_name=info.name, http_url=f"{_fmt_host(host)}:{http_port}", grpc_url=f"{_fmt_host(host)}:{grpc_port}",
            metrics_url=f"http://{_fmt_host(host)}:{metrics_port}/metrics", backend=backend, max_batch=max_batch,
            instances=instances, dynamic_batching=dynamic_batching,
            inputs=[{"name": t.name, "shape": t.shape, "dtype": t.dtype} for t in info.inputs],
            outputs=[{"name": t.name, "shape": t.shape, "dtype": t.dtype} for t in info.outputs],
            server_pids=[p.pid for p in _server_children(running.known_pids)])
        if ready_callback is not None and not stop.is_set():
            ready_callback(server_info)
        _wait_until_stopped(running, stop)
    finally:
        _shutdown(running, say)
        for r in runners:
            r.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        log_dir.cleanup()
    return server_info


# ----------------------------------------------------------------------------- serve's steps

def _check_request(info: ArtifactInfo, *, backend: str, max_batch: int, instances: int, max_queue_delay_us: int,
                   torch_model) -> None:
    """Every argument check that needs neither PyTriton nor the network (UserError, exit 2)."""
    info.check_max_batch(max_batch)
    if instances < 1:
        raise UserError(f"--instances must be >= 1, got {instances}")
    if max_queue_delay_us < 0:
        raise UserError(f"--max-queue-delay-us must be >= 0, got {max_queue_delay_us}")
    if backend not in ("ort", "ort-cuda", "trt", "torch"):
        raise UserError(f"--backend {backend!r}: choose one of ort, ort-cuda, trt, torch")
    if backend == "torch" and torch_model is None:
        raise UserError("--backend torch needs the PyTorch original: serve() was called without torch_model")


def _check_ports(host: str, ports: Dict[str, int]) -> None:
    """The three ports differ and each is free on `host` (UserError naming the busy one)."""
    if len(set(ports.values())) != 3:
        raise UserError(f"HTTP, gRPC and metrics ports must differ (got {ports})")
    for what, port in ports.items():
        _check_port(host, port, what)


def _preferred_sizes(info: ArtifactInfo, max_batch: int, preferred_batch_sizes: Optional[Sequence[int]]) -> List[int]:
    """The batch sizes the dynamic batcher waits for: the given ones (checked), or the artifact's defaults."""
    preferred = sorted(set(int(p) for p in preferred_batch_sizes)) if preferred_batch_sizes else \
        default_preferred(info, max_batch)
    if any(p < 1 or p > max_batch for p in preferred):
        raise UserError(f"preferred batch sizes {preferred} must lie in 1..{max_batch} (--max-batch)")
    return preferred


def _prepare_pytriton(verbose: bool) -> None:
    """PyTriton importable (UserError with the install hint), its chatter quiet, libpython findable."""
    from vitdeploy import optional

    optional.pytriton()
    if not verbose:
        for name in ("pytriton", "sh"):
            logging.getLogger(name).setLevel(logging.WARNING)
    ensure_libpython_visible()


def _warnings_only(msg: str) -> None:
    """serve()'s default progress: silent, except warnings, which become Python warnings."""
    if msg.startswith("warning: "):
        warnings.warn(msg[len("warning: "):], stacklevel=4)


def _make_runners(info: ArtifactInfo, backend: str, instances: int, threads: Optional[int],
                  plugin_lib: Optional[str], torch_model, say: Callable[[str], None]) -> list:
    """One Runner per model instance; CPU instances share the cores instead of oversubscribing them."""
    if threads is None and backend in ("ort", "torch") and instances > 1:
        threads = max(1, (os.cpu_count() or 1) // instances)
    say(f"loading {info.path.name} on {backend} ({instances} instance(s))")
    original = torch_model(info, say) if backend == "torch" else None
    return [_make_runner(info, backend, threads, plugin_lib, original) for _ in range(instances)]


def _stop_on_signals(stop: threading.Event) -> Dict[int, object]:
    """SIGINT/SIGTERM set `stop` (main thread only); returns the handlers to put back."""
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda *_: stop.set())
    return previous


def _triton_config(info: ArtifactInfo, host: str, ports: Dict[str, int], verbose: bool, log_path: Optional[Path]):
    from pytriton.triton import TritonConfig

    # server id = "vitdeploy:<model>": the server metadata (unrestricted, unlike PyTriton's token-protected
    # repository index) then tells a client which model to call
    return TritonConfig(id=f"{SERVER_ID_PREFIX}{info.name}", http_address=host, http_port=ports["http"],
                        grpc_address=host, grpc_port=ports["grpc"],
                        metrics_address=host, metrics_port=ports["metrics"], exit_timeout_secs=10,
                        log_verbose=1 if verbose else 0, log_file=log_path)


def _bound_triton(cfg, info: ArtifactInfo, runners: list, max_batch: int, preferred: Optional[List[int]],
                  max_queue_delay_us: int):
    """A Triton (not started) with our model bound: one infer callable per runner. `preferred` None:
    no dynamic batching."""
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.triton import Triton

    batcher = DynamicBatcher(max_queue_delay_microseconds=max_queue_delay_us,
                             preferred_batch_size=preferred) if preferred is not None else None
    triton = Triton(config=cfg)
    triton.bind(
        model_name=info.name,
        infer_func=[_infer_fn(r, info) for r in runners],
        inputs=[Tensor(name=t.name, dtype=np.dtype(t.dtype), shape=tuple(t.dims)) for t in info.inputs],
        outputs=[Tensor(name=t.name, dtype=np.dtype(t.dtype), shape=tuple(t.dims)) for t in info.outputs],
        config=ModelConfig(batching=True, max_batch_size=max_batch, batcher=batcher),
        strict=True,
    )
    return triton


@dataclass
class _Running:
    """What serve() started, for the steps after it: the Triton and its owner thread (None until
    started), the server log, and the pids that existed before (not ours to reap)."""
    log_path: Optional[Path]
    known_pids: Set[int]
    triton: object = None
    owner: Optional["_ServerOwner"] = None


def _start_triton(running: _Running, make_triton: Callable[[], object], where: str, timeout_s: float,
                  stop: threading.Event, say: Callable[[str], None]) -> None:
    """Start the server, again after a missed PyTriton handshake (at most STARTUP_ATTEMPTS times)."""
    for attempt in range(1, STARTUP_ATTEMPTS + 1):
        running.triton = make_triton()
        say(f"starting Triton Inference Server on {where}")
        running.owner = _ServerOwner(running.triton, running.log_path, running.known_pids)
        try:
            running.owner.start(timeout_s, stop)
            return
        except CheckFailed as e:
            # PyTriton's model stub gives its handshake with our process a fixed 1 s
            # (pytriton.proxy.communication.get_config_from_handshake_server); several instances
            # starting on a busy machine can miss it. That is transient: start again.
            if attempt == STARTUP_ATTEMPTS or "handshake" not in str(e):
                raise
            say(f"model instance handshake timed out (PyTriton allows 1 s); restarting the server "
                f"(attempt {attempt + 1} of {STARTUP_ATTEMPTS})")
            running.triton.stop()
            running.owner.close()
            _reap(_server_children(running.known_pids))
            running.triton = running.owner = None


def _wait_until_stopped(running: _Running, stop: threading.Event) -> None:
    """Block until `stop` is set; CheckFailed with the log's last lines if the server dies first."""
    while not stop.wait(0.5):
        if not running.triton.is_alive():
            raise CheckFailed("Triton Inference Server exited unexpectedly; last log lines:\n"
                              + _log_tail(running.log_path))


def _shutdown(running: _Running, say: Callable[[str], None]) -> None:
    """Stop Triton and its owner thread, then reap (and kill, saying so) any server process left."""
    if running.triton is not None:
        say("stopping Triton")
        running.triton.stop()
    if running.owner is not None:
        running.owner.close()
    killed = _reap(_server_children(running.known_pids))
    if killed:
        LOG.warning("killed %d server process(es) that did not exit on their own: %s", len(killed), killed)


def _fmt_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _log_tail(log_path: Optional[Path], n: int = 8) -> str:
    """The server's error lines, shortened, plus a diagnosis for the failure we know how to explain."""
    if log_path is None:
        return "(the server log is above: --verbose)"
    try:
        text = log_path.read_text(errors="replace")
    except OSError:
        return "(no server log)"
    lines = [ln for ln in text.splitlines() if ln[:1] == "E"] or text.splitlines()
    out = "\n".join(ln[:400] + (" ..." if len(ln) > 400 else "") for ln in lines[-n:])
    if "_recursion_count" in text or "libpython" in text:
        out += ("\nhint: the Python backend stub loaded another libpython than this interpreter's "
                f"({sysconfig.get_config_var('LIBDIR')}); put that directory first on LD_LIBRARY_PATH")
    return out


STARTUP_ATTEMPTS = 3


class _ServerOwner:
    """Starts Triton in a thread that lives as long as the server does.

    PyTriton spawns tritonserver with PR_SET_PDEATHSIG, which the kernel ties to the *thread* that
    forked it: a thread that started the server and returned would take the server down with it.
    The thread also bounds start-up: PyTriton's own wait is minutes long, and a server that cannot
    start should fail in seconds with its log rather than hang the CLI.
    """

    def __init__(self, triton, log_path: Optional[Path], known_pids: Sequence[int]):
        self.triton = triton
        self.log_path = log_path
        self.known_pids = set(known_pids)
        self.started = threading.Event()
        self.release = threading.Event()
        self.error: Optional[BaseException] = None
        self.thread = threading.Thread(target=self._main, name="vitdeploy-triton-owner", daemon=True)

    def _main(self):
        try:
            self.triton.run()
        except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
            self.error = e
        finally:
            self.started.set()
        self.release.wait()

    def _tritonserver_alive(self) -> Optional[bool]:
        """None until a tritonserver child appeared, then whether one is still running."""
        procs = []
        for p in _server_children(self.known_pids):
            try:
                if "tritonserver" in p.name():
                    procs.append(p)
            except Exception:
                continue
        if procs:
            self.seen = True
            return any(p.is_running() for p in procs)
        return False if getattr(self, "seen", False) else None

    def start(self, timeout_s: float, stop: threading.Event) -> None:
        self.thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.started.wait(0.2):
            if stop.is_set():
                return
            if self._tritonserver_alive() is False:
                raise CheckFailed("tritonserver exited during start-up; last log lines:\n" + _log_tail(self.log_path))
            if time.monotonic() > deadline:
                raise CheckFailed(f"Triton did not become ready within {timeout_s:.0f}s; last log lines:\n"
                                  + _log_tail(self.log_path))
        if self.error is not None:
            e = self.error
            first = (str(e).splitlines() or [""])[0][:400]
            raise CheckFailed(f"Triton failed to start: {type(e).__name__}: {first}\n{_log_tail(self.log_path)}")

    def close(self) -> None:
        self.release.set()
        self.thread.join(timeout=5)


def describe_ready(si: ServerInfo) -> str:
    return (f"serving {si.model_name} ({si.backend}, max batch {si.max_batch}, {si.instances} instance(s), "
            f"dynamic batching {'on' if si.dynamic_batching else 'off'}): http {si.http_url}  "
            f"grpc {si.grpc_url}  metrics {si.metrics_url}  (Ctrl+C to stop)")
