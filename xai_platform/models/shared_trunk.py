"""The randomisation test's second model reuses the trained model's trunk, exactly.

The model-parameter randomisation test (:func:`~xai_platform.evaluation.metrics.randomization_test`)
explains the input again with a copy of the model whose top layers are re-initialised. For LIME
and SHAP that second run costs as many model evaluations as the first (on DenseNet-121 at 224 px,
1,456 of the comparison page's 3,274), yet everything below the re-initialised layers computes
the same numbers: the same seed draws the same coalitions, so the same batches go in.

:func:`share_trunk` finds that trunk in the two exported ONNX graphs (the nodes that depend on no
re-initialised weight: a comparison of the graphs' initializers, no layer names needed), and then

* the trained model's ONNX Runtime session also returns the **frontier**, the trunk's tensors the
  re-initialised layers read, and keeps them per input row in an :class:`ActivationCache` (keyed
  by a hash of the row; per batch when a frontier tensor is not one row per input);
* the randomised model looks each row up there, runs only its **head** graph (extracted from its
  own exported graph) on the rows it finds, and its whole graph on the others. Rows, not
  batches: SHAP's default partition estimator chooses its next coalitions from the model's
  outputs, so the randomised model's run shares about half of its coalitions with the trained
  model's, in other batches.

Both paths run the same operators on the same numbers; before it is used, the split is checked on
the fast path's example planes (the head on the trunk's frontier against the randomised model's
whole graph, the trained graph with its extra outputs against the plain one). It is set up only
when the trunk is most of the cost (the head takes at most :data:`MAX_HEAD_SHARE` of a full
forward pass on those planes): on a small network the hashing and copying would cost more than
the trunk saves. Either way ``forward_path.reason`` of the randomised model says what happened.

A network that runs without an ONNX graph (the fast path off, or its export failed) can still
split itself (:func:`share_eager_trunk`): the Whisper read-out keeps each row's encoder pass up
to its last layer in the same kind of cache, and its copy runs only the last layer and the
read-out on the rows it finds. On the fast path its graphs are split like any other's.

Under the opt-in bf16 path (:mod:`.reduced_precision`) the trained model's batches run on OpenVINO
in bfloat16; there its compiled graph returns the frontier too (``add_outputs``), the head still
runs in float32 on ONNX Runtime, and the check is the bf16 path's own: probabilities within
:data:`~.reduced_precision.TOLERANCE` of the exact graphs' and no example decision changed. A
batch not in the cache runs the randomised model's own bf16 graph.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import first_line
from ..files import array_key
from .formats.onnx import OnnxHandle, session
from .reduced_precision import (PRECISION, TOLERANCE, OpenVinoHandle, compile_cpu,
                                decision_changes)

if TYPE_CHECKING:
    from .handle import ModelHandle

CACHE_ENV = "XAI_TRUNK_CACHE_MB"
DEFAULT_CACHE_MB = 512
"""The frontier kept per model (LIME's 1,000 evaluations of DenseNet-121 at 224 px hold about
220 MB); the oldest batches go first."""
MAX_HEAD_SHARE = 0.5
"""The trunk is shared only when a head pass takes at most this share of a whole forward pass."""
PARITY = 1e-6
"""Largest difference of raw outputs (logits) the split may make on the example planes."""


batch_key = array_key
"""A key for one network input batch: its shape, dtype and a 128-bit hash of its bytes."""


def row_keys(net_input: np.ndarray) -> list[bytes]:
    """:func:`batch_key` of each row of a network input batch, alone."""
    return [batch_key(row) for row in np.ascontiguousarray(net_input)]


class ActivationCache:
    """Frontier tensors per key (a row's or a batch's), least recently used first out, at most
    ``max_bytes``. :meth:`put_batch` and :meth:`get_batch` store and find a batch's frontier by
    row when every frontier tensor has one row per input."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = int(max_bytes)
        self.bytes = 0
        self.hits = self.misses = 0
        self.per_row: bool | None = None  # decided by the first batch stored
        self._items: OrderedDict[bytes, list[np.ndarray]] = OrderedDict()
        self._lock = threading.Lock()

    def put_batch(self, net_input: np.ndarray, tensors: list[np.ndarray]) -> None:
        """Keep the frontier ``tensors`` of the batch ``net_input``: a copy of each row's
        slices under the row's key, or the whole batch under its key."""
        n = len(net_input)
        if self.per_row is None:
            self.per_row = all(t.ndim >= 1 and t.shape[0] == n for t in tensors)
        if not self.per_row:
            self.put(batch_key(net_input), list(tensors))
            return
        for i, key in enumerate(row_keys(net_input)):
            self.put(key, [np.array(t[i]) for t in tensors])

    def get_batch(self, net_input: np.ndarray) -> tuple[list[np.ndarray] | None, np.ndarray]:
        """(the frontier of the rows of ``net_input`` found, stacked, or None; the indices of
        those rows)."""
        if not self.per_row:
            found = self.get(batch_key(net_input))
            return found, np.arange(len(net_input) if found is not None else 0)
        rows = [self.get(key) for key in row_keys(net_input)]
        hit = np.array([i for i, r in enumerate(rows) if r is not None], dtype=np.int64)
        if not len(hit):
            return None, hit
        return [np.stack([rows[i][j] for i in hit]) for j in range(len(rows[hit[0]]))], hit

    def put(self, key: bytes, tensors: list[np.ndarray]) -> None:
        size = sum(t.nbytes for t in tensors)
        if size > self.max_bytes:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self.bytes -= sum(t.nbytes for t in old)
            self._items[key] = tensors
            self.bytes += size
            while self.bytes > self.max_bytes:
                _, dropped = self._items.popitem(last=False)
                self.bytes -= sum(t.nbytes for t in dropped)

    def get(self, key: bytes) -> list[np.ndarray] | None:
        with self._lock:
            found = self._items.get(key)
            if found is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return found

    def __len__(self) -> int:
        return len(self._items)


def default_cache_bytes() -> int:
    try:
        return int(float(os.environ.get(CACHE_ENV, DEFAULT_CACHE_MB)) * 2 ** 20)
    except ValueError:
        return DEFAULT_CACHE_MB * 2 ** 20


# --- the split -------------------------------------------------------------------------------

class _Graph:
    """What :func:`split` needs of one graph: its weights by name (initializers, ``Constant``
    nodes and ``Identity`` copies of either, which the exporter makes of repeated weights) and
    its other nodes by the name of their first output (the exporter names those after the
    modules, the same in both exports; weight names are numbered and may differ)."""

    def __init__(self, model: Any) -> None:
        from onnx import numpy_helper

        g = model.graph
        self.values: dict[str, np.ndarray] = {t.name: numpy_helper.to_array(t)
                                              for t in g.initializer}
        self.nodes: dict[str, Any] = {}
        self.order: list[str] = []
        self.makers: dict[str, Any] = {}  # weight name -> the node that makes it
        for node in g.node:
            if node.op_type == "Constant" and len(node.output) == 1:
                attr = next((a for a in node.attribute if a.name == "value"), None)
                if attr is not None:
                    self.values[node.output[0]] = numpy_helper.to_array(attr.t)
                    self.makers[node.output[0]] = node
                    continue
            if node.op_type == "Identity" and node.input[0] in self.values:
                self.values[node.output[0]] = self.values[node.input[0]]
                self.makers[node.output[0]] = node
                continue
            self.nodes[node.output[0]] = node
            self.order.append(node.output[0])


def _attributes(node: Any) -> list[bytes]:
    return [a.SerializeToString(deterministic=True) for a in node.attribute]


def split(trained: Any, randomized: Any) -> tuple[list[str], list[str]]:
    """(frontier tensor names, the head's nodes by first output name) of two exports of the same
    network (``onnx.ModelProto``) whose weights differ in some layers. The head is every node
    that reads, directly or not, a weight that differs; the frontier is what the head reads
    from the rest, the trunk. Raises ValueError when the graphs are not the same network,
    nothing differs, or the head starts at the input (nothing to share)."""
    a, b = _Graph(trained), _Graph(randomized)
    if a.order != b.order or [o.name for o in trained.graph.output] != \
            [o.name for o in randomized.graph.output]:
        raise ValueError("the two graphs are not the same network")
    inputs = {i.name for i in trained.graph.input} - set(a.values)
    tainted: set[str] = set()
    head: list[str] = []
    needed: list[str] = []
    for key in a.order:
        na, nb = a.nodes[key], b.nodes[key]
        if (na.op_type != nb.op_type or list(na.output) != list(nb.output)
                or len(na.input) != len(nb.input) or _attributes(na) != _attributes(nb)):
            raise ValueError(f"node {key} differs between the graphs")
        changed = False
        for ia, ib in zip(na.input, nb.input):
            if ia in a.values or ib in b.values:
                if ia not in a.values or ib not in b.values:
                    raise ValueError(f"node {key} reads a weight in one graph only")
                wa, wb = a.values[ia], b.values[ib]
                changed |= wa.shape != wb.shape or not np.array_equal(wa, wb)
            elif ia != ib:
                raise ValueError(f"node {key} reads different tensors in the two graphs")
            else:
                changed |= ia in tainted
        if changed:
            tainted.update(na.output)
            head.append(key)
            needed += [i for i in na.input
                       if i and i not in a.values and i not in tainted and i not in needed]
    if not any(o.name in tainted for o in trained.graph.output):
        raise ValueError("re-initialising the layers changed no output")
    if any(name in inputs for name in needed):
        raise ValueError("a re-initialised layer reads the network input: no trunk to share")
    return needed, head


def _with_outputs(model: Any, names: list[str]) -> Any:
    """A copy of ``model`` that also outputs ``names`` (float32 tensors)."""
    import onnx

    out = onnx.ModelProto()
    out.CopyFrom(model)
    for name in names:
        out.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT,
                                                                   None))
    return out


def _head(model: Any, names: list[str], nodes: list[str]) -> Any:
    """The graph of ``model``'s head ``nodes`` (by first output name) with the frontier
    ``names`` as inputs and ``model``'s first output, carrying the weights those nodes read."""
    import onnx

    g, parsed = model.graph, _Graph(model)
    picked = [parsed.nodes[k] for k in nodes]
    read = {i for n in picked for i in n.input}
    makers = [parsed.makers[i] for i in sorted(read) if i in parsed.makers]
    read |= {i for n in makers for i in n.input}
    graph = onnx.helper.make_graph(
        makers + picked, f"{g.name}-head",
        [onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in names],
        [g.output[0]], initializer=[t for t in g.initializer if t.name in read])
    head = onnx.helper.make_model(graph, opset_imports=list(model.opset_import))
    head.ir_version = model.ir_version
    return head


class RecordingTwin(OnnxHandle):
    """The trained model's ONNX Runtime twin that also keeps each batch's frontier."""

    def __init__(self, twin: OnnxHandle, session: Any, cache: ActivationCache) -> None:
        super().__init__(twin.spec, session, default_batch_size=twin.default_batch_size,
                         calibration=twin.calibration)
        self.cache = cache

    def _run(self, net_input: np.ndarray) -> np.ndarray:
        outputs = self.session.run(None, {self.input_name: net_input})
        self.cache.put_batch(net_input, outputs[1:])
        return outputs[0]


class RecordingOpenVino(OpenVinoHandle):
    """The trained model's bf16 twin, compiled with the frontier as extra outputs
    (:func:`~.reduced_precision.compile_cpu`'s ``extra_outputs``), keeping it per batch."""

    def __init__(self, twin: OpenVinoHandle, compiled: Any, n_frontier: int,
                 cache: ActivationCache) -> None:
        super().__init__(twin.spec, compiled, default_batch_size=twin.default_batch_size,
                         calibration=twin.calibration)
        self.n_frontier, self.cache = n_frontier, cache

    def _run(self, net_input: np.ndarray) -> np.ndarray:
        outputs = self._request.infer({0: net_input})
        self.cache.put_batch(net_input,
                             [np.array(outputs[i]) for i in range(1, self.n_frontier + 1)])
        return np.array(outputs[0])


class HeadTwin(OnnxHandle):
    """The randomised model's twin: its head on the rows whose frontier is cached, its whole
    graph on the others (on ``fallback``, a handle of the same graph, when given: its bf16
    twin)."""

    def __init__(self, twin: OnnxHandle, head: Any, names: list[str],
                 cache: ActivationCache, fallback: Any = None) -> None:
        super().__init__(twin.spec, twin.session, default_batch_size=twin.default_batch_size,
                         calibration=twin.calibration)
        self.head, self.names, self.cache, self.fallback = head, names, cache, fallback
        self.evaluations_from_cache = 0

    def _whole(self, net_input: np.ndarray) -> np.ndarray:
        if self.fallback is not None:
            return self.fallback._run(net_input)
        return self.session.run(None, {self.input_name: net_input})[0]

    def _run(self, net_input: np.ndarray) -> np.ndarray:
        found, hit = self.cache.get_batch(net_input)
        if found is None:
            return self._whole(net_input)
        from_head = self.head.run(None, dict(zip(self.names, found)))[0]
        self.evaluations_from_cache += len(hit)
        if len(hit) == len(net_input):
            return from_head
        miss = np.setdiff1d(np.arange(len(net_input)), hit)
        out = np.empty((len(net_input), *from_head.shape[1:]), from_head.dtype)
        out[hit], out[miss] = from_head, self._whole(np.ascontiguousarray(net_input[miss]))
        return out


def _best_seconds(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def share_trunk(trained: ModelHandle, randomized: ModelHandle, *,
                max_bytes: int | None = None, max_head_share: float | None = None) -> str:
    """Let ``randomized`` (``trained.randomized(...)``) reuse ``trained``'s trunk (module
    docstring) when its head takes at most ``max_head_share`` (default
    :data:`MAX_HEAD_SHARE`) of a forward pass. Both must have exact ONNX Runtime twins; the
    trained model's forward batches run on its twin in float32 or on OpenVINO in bf16. Returns
    what was done, or why not, and appends it to ``randomized.forward_path.reason``; never
    raises."""
    from .fast_forward import parity, parity_planes

    def note(text: str) -> str:
        randomized.forward_path = randomized.forward_path.with_reason(text)
        return text

    if not trained.forward_path.fast and _splits_itself(trained):
        return share_eager_trunk(trained, randomized, max_bytes=max_bytes)
    try:
        trained._forward_engine()
        if not isinstance(trained._exact, OnnxHandle):  # e.g. a Keras model on OpenVINO: do
            # not convert the copy now, it may only ever be asked for gradients
            return note("trunk not shared: both models must have exact ONNX Runtime graphs")
        randomized._forward_engine()  # attach (lazy)
        a, b = trained._exact, randomized._exact
        if isinstance(trained._fast, (RecordingTwin, RecordingOpenVino)):
            return note("trunk not shared: the trained model already shares it with another copy")
        bf16 = (isinstance(trained._fast, OpenVinoHandle)
                and trained.forward_path.precision == PRECISION)
        if not (isinstance(a, OnnxHandle) and isinstance(b, OnnxHandle)
                and (bf16 or (trained._fast is a and randomized._fast is b))):
            return note("trunk not shared: both models must have exact ONNX Runtime graphs")
        import onnx

        files = [trained.forward_path.onnx_file, randomized.forward_path.onnx_file]
        if not all(files):
            return note("trunk not shared: no exported graph")
        ma, mb = (onnx.load(str(Path(f))) for f in files)
        names, head_nodes = split(ma, mb)
        threads = trained.forward_path.threads or 1
        cache = ActivationCache(max_bytes or default_cache_bytes())
        head = session(_head(mb, names, head_nodes).SerializeToString(), n_threads=threads)
        planes = parity_planes(trained)
        net_input = a.network_input(planes)
        if bf16:
            recording = RecordingOpenVino(
                trained._fast, compile_cpu(files[0], threads=threads, precision=PRECISION,
                                           extra_outputs=names), len(names), cache)
            twin = HeadTwin(b, head, names, cache,
                            fallback=None if randomized._fast is b else randomized._fast)
            # the bf16 path's own check, on the head's way (which the first call caches)
            ref_a, ref_b = a._outputs_batch(planes), b._outputs_batch(planes)
            got_a, got_b = recording._outputs_batch(planes), twin._outputs_batch(planes)
            worst = max(parity(ref_a, got_a)[0], parity(ref_b, got_b)[0])
            changed = (decision_changes(trained, ref_a[0], got_a[0])
                       + decision_changes(randomized, ref_b[0], got_b[0]))
            if twin.evaluations_from_cache != len(planes) or worst > TOLERANCE or changed:
                return note(f"trunk not shared: in bf16 the split moves probabilities by up to "
                            f"{worst:.1e} (bound {TOLERANCE:.0e}) and changes {changed} "
                            "example decisions")
            twin.evaluations_from_cache = 0
            frontier, _ = cache.get_batch(net_input)
        else:
            recording = RecordingTwin(
                a, session(_with_outputs(ma, names).SerializeToString(), n_threads=threads),
                cache)
            twin = HeadTwin(b, head, names, cache)
            outputs = recording.session.run(None, {recording.input_name: net_input})
            full_a = a.session.run(None, {a.input_name: net_input})[0]
            full_b = b.session.run(None, {b.input_name: net_input})[0]
            frontier = outputs[1:]
            from_head = head.run(None, dict(zip(names, frontier)))[0]
            diff = max(float(np.max(np.abs(outputs[0] - full_a))),
                       float(np.max(np.abs(from_head - full_b))))
            if not diff <= PARITY:
                return note(f"trunk not shared: the split changes the logits by {diff:.1e}")
        t_full = _best_seconds(lambda: b.session.run(None, {b.input_name: net_input}))
        t_head = _best_seconds(lambda: head.run(None, dict(zip(names, frontier))))
        share = t_head / max(t_full, 1e-9)
        if share > (MAX_HEAD_SHARE if max_head_share is None else max_head_share):
            return note(f"trunk not shared: the head takes {share:.0%} of a forward pass, too "
                        "much to gain")
        with trained.lock:
            trained._fast = recording
            if not bf16:
                trained._exact = recording
        with randomized.lock:
            randomized._fast = twin
            if not bf16:
                randomized._exact = twin
        n = len(_Graph(ma).order)
        return note(f"shares the trained model's trunk ({n - len(head_nodes)} of {n} graph "
                    f"nodes; the head takes {share:.1%} of a forward pass; {len(names)} "
                    f"frontier tensors" + ("; the trunk in bf16, the head in float32)" if bf16
                                           else ")"))
    except Exception as exc:  # noqa: BLE001 - an unusual graph must not break the test
        return note(f"trunk not shared: {first_line(exc)[:200]}")


def can_share(handle: ModelHandle) -> bool:
    """Whether :func:`share_trunk` can try for ``handle``: its forward batches run on the fast
    path, or its network can split itself (:func:`share_eager_trunk`)."""
    return handle.forward_path.fast or _splits_itself(handle)


def _splits_itself(handle: ModelHandle) -> bool:
    return hasattr(getattr(handle, "native", None), "share_frontier")


def share_eager_trunk(trained: ModelHandle, randomized: ModelHandle, *,
                      max_bytes: int | None = None) -> str:
    """The same for a PyTorch network that runs eagerly (no ONNX graph) and can split itself:
    one with ``share_frontier(role, cache)`` and ``above_frontier(name)``, such as
    :class:`~.architectures.whisper_nets.WhisperReadout` (its encoder up to the last layer is
    the trunk). Shared only when every parameter and buffer the copy re-initialised acts above
    the split, and the copy's outputs on the example planes are the same to :data:`PARITY`
    through the cache as without it. Returns what was done, or why not, and appends it to
    ``randomized.forward_path.reason``; never raises."""
    from .fast_forward import parity_planes

    def note(text: str) -> str:
        randomized.forward_path = randomized.forward_path.with_reason(text)
        return text

    a, b = getattr(trained, "native", None), getattr(randomized, "native", None)

    def unshare() -> None:
        for net in (a, b):
            if hasattr(net, "share_frontier"):
                net.share_frontier(None)

    try:
        if not (_splits_itself(trained) and type(a) is type(b)):
            return note("trunk not shared: the network cannot split itself and has no ONNX "
                        "graph")
        import torch

        mine = dict([*b.named_parameters(), *b.named_buffers()])
        changed = [name for name, t in [*a.named_parameters(), *a.named_buffers()]
                   if name not in mine or not torch.equal(t, mine[name])]
        below = [name for name in changed if not a.above_frontier(name)]
        if below:
            return note(f"trunk not shared: the copy re-initialises {below[0]}, below the split")
        planes = parity_planes(trained)
        expected = randomized.raw_outputs(planes)
        cache = ActivationCache(max_bytes or default_cache_bytes())
        a.share_frontier("record", cache)
        b.share_frontier("lookup", cache)
        trained.raw_outputs(planes)
        hits = cache.hits
        got = randomized.raw_outputs(planes)
        diff = float(np.max(np.abs(got - expected)))
        if cache.hits - hits != len(planes) or not diff <= PARITY:
            unshare()
            return note(f"trunk not shared: through the cache the copy's logits move by "
                        f"{diff:.1e}")
        return note(f"shares the trained model's trunk (the encoder below its last layer; "
                    f"{len(changed)} re-initialised tensors above it)")
    except Exception as exc:  # noqa: BLE001 - an unusual network must not break the test
        unshare()
        return note(f"trunk not shared: {first_line(exc)[:200]}")
