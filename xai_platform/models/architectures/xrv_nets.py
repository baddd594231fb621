"""TorchXRayVision's chest X-ray classifiers (DenseNet-121 at 224 px, ResNet-50 at 512 px).

Cohen et al., "TorchXRayVision: A library of chest X-ray datasets and models", MIDL 2022
(arXiv:2111.00595). The networks are the library's own classes, built with ``weights=None``;
the weights are the library's released files, read from its cache folder
(``~/.torchxrayvision/models_data/``).

What the library's table (``xrv.models.model_urls``) says about a released model is used as is:

* **Outputs.** A released model has 18 outputs in the order of ``datasets.default_pathologies``;
  an output the model was never trained on has the label ``''`` and the operating point NaN
  (the library's ``op_norm`` then returns a constant 0.5 for it). Such outputs are dropped: the
  network returns only the *used* outputs, in the library's order, and the config's ``labels``
  must be exactly their names (checked when the network is built).
* **Operating points.** ``op_threshs`` are applied in ``forward`` exactly as the library does
  (sigmoid, then :func:`torchxrayvision.models.op_norm`), so every output is a probability in
  [0, 1] whose decision point is 0.5 (``output: multilabel``).
* **Input.** One channel, [0, 1] mapped to [-1024, 1024] (``normalize: xrv``), at the model's
  ``input_resolution``.

Loading the released files safely. The DenseNet files are *whole pickled models* saved with
PyTorch < 1.6 (the library loads them with ``weights_only=False``). Their legacy format records
every module class as a persistent id, which ``torch.load(weights_only=True)`` refuses whatever
is allow-listed. :func:`read_release` reads them with a restricted unpickler instead: module
classes become :class:`_ModuleState` stand-ins that keep only tensors, the few tensor-rebuilding
functions are allowed, and any other global is refused. The ``fetch`` command below writes the
result as a plain state_dict (``<name>.state_dict.pt``) that the platform's loader accepts::

    python -m xai_platform.models.architectures.xrv_nets fetch densenet121-res224-all

The ResNet-50 file already is a plain state_dict and is used as downloaded.
"""

from __future__ import annotations

import argparse
import collections
import math
import pickle
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
import torchxrayvision as xrv
from torch import nn
from torchvision.models.resnet import Bottleneck, ResNet

from ...errors import ConfigError, ModelUnavailableError, first_line

CONVERTED_SUFFIX = ".state_dict.pt"
# Architecture -> the released weights it loads by default (``arch_args.weights`` overrides).
DEFAULT_RELEASE = {"xrv_densenet121": "densenet121-res224-all",
                   "xrv_resnet50": "resnet50-res512-all"}


@dataclass(frozen=True)
class Release:
    """One entry of TorchXRayVision's weights table.

    labels: the 18 output names, '' for an output the model was not trained on.
    thresholds: the 18 operating points, NaN where there is none.
    """

    key: str
    url: str
    labels: tuple[str, ...]
    thresholds: tuple[float, ...]
    resolution: int

    @property
    def filename(self) -> str:
        """The file name the library downloads to (the last part of the URL)."""
        return self.url.rsplit("/", 1)[-1]

    @property
    def whole_model(self) -> bool:
        """DenseNet files pickle the whole model; ResNet files are a state_dict."""
        return self.key.startswith("densenet")

    @property
    def used(self) -> tuple[int, ...]:
        """Indices of the outputs with a name and an operating point."""
        return tuple(i for i, (name, t) in enumerate(zip(self.labels, self.thresholds))
                     if name and math.isfinite(t))

    @property
    def used_labels(self) -> tuple[str, ...]:
        return tuple(self.labels[i] for i in self.used)

    def cache_dir(self) -> Path:
        return Path(xrv.utils.get_cache_dir()).expanduser()

    def download_path(self, cache_dir: Path | None = None) -> Path:
        """Where the library keeps the downloaded file."""
        return (cache_dir or self.cache_dir()) / self.filename

    def weights_path(self, cache_dir: Path | None = None) -> Path:
        """The file the platform loads: the converted state_dict, or the download itself."""
        path = self.download_path(cache_dir)
        if self.whole_model:
            return path.with_name(path.name.removesuffix(".pt") + CONVERTED_SUFFIX)
        return path


def release(key: str) -> Release:
    """The library's table entry for ``key`` (e.g. ``densenet121-res224-all``)."""
    table = xrv.models.model_urls
    if key not in table or "-res" not in key:
        known = ", ".join(k for k in table if "-res" in k)
        raise ConfigError(f"'{key}' is not a TorchXRayVision release.", key="arch_args.weights",
                          fix=f"use one of: {known}.")
    entry = table[key]
    return Release(key=key, url=entry["weights_url"], labels=tuple(entry["labels"]),
                   thresholds=tuple(float(t) for t in entry["op_threshs"]),
                   resolution=int(entry.get("input_resolution", 224)))


def _release_for(spec: Any) -> Release:
    """The release a config entry uses, after checking its labels and input against it."""
    rel = release(str(dict(spec.arch_args).get("weights", DEFAULT_RELEASE[spec.architecture])))
    where = f"{spec.source} (model '{spec.id}')"
    if tuple(spec.labels) != rel.used_labels:
        raise ConfigError(
            f"labels do not match the outputs of TorchXRayVision's '{rel.key}' (outputs named '' "
            "or without an operating point are dropped).", source=where, key="labels",
            fix=f"write labels: [{', '.join(rel.used_labels)}].")
    if spec.output != "multilabel":
        raise ConfigError("TorchXRayVision models give independent per-pathology probabilities.",
                          source=where, key="output", fix="set output: multilabel.")
    expected = {"size": (rel.resolution, rel.resolution), "channels": 1, "normalize": "xrv"}
    for key, value in expected.items():
        if getattr(spec.input, key) != value:
            shown = value[0] if key == "size" else value
            raise ConfigError(f"'{rel.key}' takes {key} {shown}.", source=where,
                              key=f"input.{key}", fix=f"set input.{key}: {shown}.")
    return rel


def _set_operating_points(net: nn.Module, rel: Release) -> None:
    """Register the library's thresholds and the used outputs as buffers that are not part of
    the state_dict (they come from the library's table, not from the weights file)."""
    net.register_buffer("op_threshs", torch.tensor(rel.thresholds, dtype=torch.float32),
                        persistent=False)
    net.register_buffer("outputs", torch.tensor(rel.used, dtype=torch.long), persistent=False)


class XRVDenseNet(xrv.models.DenseNet):
    """The library's DenseNet-121 returning its used outputs, operating points applied.

    (N, 1, 224, 224) in [-1024, 1024] -> (N, K) float in [0, 1], 0.5 = the operating point.
    Grad-CAM: ``features.norm5`` or ``features.denseblock4`` (its ``features2`` applies an
    in-place ReLU after ``features``; the platform's hooks hand it a copy).
    """

    def __init__(self, rel: Release) -> None:
        super().__init__(weights=None, num_classes=len(rel.labels), in_channels=1,
                         **xrv.models.get_densenet_params("densenet121"))
        _set_operating_points(self, rel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x)[:, self.outputs]


class XRVResNet50(ResNet):
    """The library's ResNet-50 (torchvision's, one-channel stem) returning its used outputs,
    operating points applied, as the library's ``ResNet.forward`` does. The state_dict keys are
    torchvision's (``conv1.weight``, ...), as in the released file. Grad-CAM: ``layer4``."""

    def __init__(self, rel: Release) -> None:
        super().__init__(Bottleneck, [3, 4, 6, 3], num_classes=len(rel.labels))
        self.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
        _set_operating_points(self, rel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.sigmoid(super().forward(x))
        return xrv.models.op_norm(out, self.op_threshs)[:, self.outputs]


def build_xrv_densenet121(spec) -> nn.Module:
    return XRVDenseNet(_release_for(spec))


def build_xrv_resnet50(spec) -> nn.Module:
    return XRVResNet50(_release_for(spec))


# --------------------------------------------------------------------------------------------
# Reading the released files without running code from them


class _ModuleState(dict):
    """Stands in for every pickled ``nn.Module`` while a released file is read.

    Unpickling builds it empty and hands it the module's ``__dict__``; it keeps the parameters
    and persistent buffers, and its children's under ``child.`` prefixes, so the top-level
    object becomes a flat state_dict and no module object from the file is ever created.
    """

    dump_patches = False  # read by torch's legacy loader when the saved source differs

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple):  # (__dict__, slots)
            state = state[0]
        if not isinstance(state, dict):
            return
        skip = set(state.get("_non_persistent_buffers_set") or ())
        tensors = list((state.get("_parameters") or {}).items())
        tensors += [(k, v) for k, v in (state.get("_buffers") or {}).items() if k not in skip]
        for name, value in tensors:
            if isinstance(value, torch.Tensor):
                self[name] = value.detach()
        for child, sub in (state.get("_modules") or {}).items():
            if isinstance(sub, _ModuleState):
                self.update({f"{child}.{k}": v for k, v in sub.items()})


def _no_backend() -> None:
    """Old PyTorch pickled each module's THNN backend as a call to this; it is nothing now."""
    return None


_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("torch._utils", "_rebuild_tensor"): torch._utils._rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): torch._utils._rebuild_parameter_with_state,
    ("torch.nn.backends.thnn", "_get_thnn_function_backend"): _no_backend,
}
_MODULE_PREFIXES = ("torchxrayvision.", "torch.nn.modules.")


def _pickle_module(prefixes: tuple[str, ...]) -> SimpleNamespace:
    """What torch.load needs of a ``pickle_module``: an unpickler that resolves only the globals
    a weights file needs, and any class of a module named by ``prefixes`` as a
    :class:`_ModuleState`."""

    class ReleaseUnpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            module = {"__builtin__": "builtins"}.get(module, module)  # protocol-2 names
            if (module, name) in _ALLOWED:
                return _ALLOWED[(module, name)]
            if module.startswith(prefixes):
                return _ModuleState  # a class, or anything else named there: only ever a dict
            raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed in a "
                                         "weights file")

    return SimpleNamespace(Unpickler=ReleaseUnpickler,
                           load=lambda fh, **kw: ReleaseUnpickler(fh, **kw).load(),
                           __name__="release_unpickler")


def read_release(path: Path, *, module_prefixes: tuple[str, ...] = _MODULE_PREFIXES
                 ) -> dict[str, torch.Tensor]:
    """A released TorchXRayVision file (whole pickled model or state_dict) as a flat state_dict.

    Module classes (of the modules named by ``module_prefixes``: the library's and
    torch.nn's; another pickled whole model names its own) are replaced by
    :class:`_ModuleState`; only ``OrderedDict``, ``set`` and
    PyTorch's tensor-rebuilding functions may be called, so a file that pickles code raises
    :class:`ModelUnavailableError` before anything runs. The library's thresholds come from its
    table, so an ``op_threshs`` tensor in the file is dropped.
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():
            # The stand-in's source differs from the pickled class's: that is the point.
            warnings.simplefilter("ignore", torch.serialization.SourceChangeWarning)
            obj = torch.load(path, map_location="cpu", weights_only=False,
                             pickle_module=_pickle_module(tuple(module_prefixes)))
    except FileNotFoundError:
        raise ModelUnavailableError(f"weights file {path} not found.") from None
    except Exception as exc:  # UnpicklingError, a truncated file, a foreign format
        first = first_line(exc)
        raise ModelUnavailableError(f"{path} is not a TorchXRayVision weights file that can be "
                                    f"read safely: {first[:200]}") from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or \
            not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelUnavailableError(f"{path} holds no model weights.")
    return {k.removeprefix("module."): v for k, v in obj.items() if k != "op_threshs"}


def convert_release(src: Path, dst: Path) -> Path:
    """Write the weights of a released file as a plain float32 state_dict (loads with
    ``torch.load(weights_only=True)``)."""
    state = read_release(src)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".partial")
    torch.save({k: v.contiguous() for k, v in state.items()}, tmp)
    tmp.replace(dst)
    return dst


Progress = Callable[[float, str], None]


def download(url: str, dst: Path, *, progress: Progress | None = None,
             timeout: float = 30.0) -> Path:
    """Stream ``url`` into ``dst`` (through ``dst.partial``, renamed when complete), reporting
    the fraction done; raises :class:`ModelUnavailableError` saying that this needs internet."""
    import urllib.error
    import urllib.request

    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".partial")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0)
            done = 0
            while block := response.read(1 << 20):
                out.write(block)
                done += len(block)
                if progress is not None:
                    progress(done / total if total else 0.0,
                             f"downloaded {done / 1e6:.1f}"
                             + (f" of {total / 1e6:.1f} MB" if total else " MB"))
        if total and done != total:
            raise OSError(f"got {done} of {total} bytes")
    except (OSError, urllib.error.URLError, ValueError) as exc:
        tmp.unlink(missing_ok=True)
        reason = getattr(exc, "reason", None) or exc
        raise ModelUnavailableError(
            f"downloading {url} failed ({first_line(reason)[:120]}). Fetching weights needs "
            f"internet access; without it, copy {dst.name} from that address into "
            f"{dst.parent}/ and fetch again (the file is then only converted).") from None
    tmp.replace(dst)
    return dst


def fetch(key: str, *, cache_dir: Path | None = None, download_missing: bool = True,
          progress: Progress | None = None) -> Path:
    """Make ``key``'s weights loadable: download the released file into the library's cache
    when it is not there, then convert a whole-model file (read safely, see
    :func:`read_release`). Returns the path the config's ``weights:`` names. ``progress``
    receives (fraction, what) while downloading and converting."""
    rel = release(key)
    src = rel.download_path(cache_dir)
    if not src.is_file():
        if not download_missing:
            raise ModelUnavailableError(f"{src} not found; download {rel.url} into {src.parent}.")
        download(rel.url, src, progress=progress)
    if progress is not None:
        progress(1.0, "converting to a plain state_dict")
    dst = rel.weights_path(cache_dir)
    if rel.whole_model:
        convert_release(src, dst)
    else:
        torch.load(dst, map_location="cpu", weights_only=True)  # a state_dict: check it reads
    return dst


def fetch_for_entry(spec: Any, *, progress: Progress | None = None) -> Path:
    """Fetch the weights a config entry of this module's architectures names (its
    ``arch_args.weights`` release, into the folder of its ``weights:`` path)."""
    key = (spec.arch_args or {}).get("weights") or DEFAULT_RELEASE[spec.architecture]
    cache_dir = Path(spec.weights).expanduser().parent if spec.weights is not None else None
    out = fetch(key, cache_dir=cache_dir, progress=progress)
    if spec.weights is not None and out != Path(spec.weights).expanduser():
        raise ModelUnavailableError(f"fetched {out}, but the entry's weights: names "
                                    f"{spec.weights}; point weights: at {out}.")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m xai_platform.models.architectures.xrv_nets",
        description="Download (where there is internet) and convert TorchXRayVision's released "
                    "weights so that the platform loads them with weights_only=True.")
    sub = parser.add_subparsers(dest="command", required=True)
    get = sub.add_parser("fetch", help="download into the library's cache and convert")
    get.add_argument("key", help="e.g. densenet121-res224-all, resnet50-res512-all")
    get.add_argument("--cache-dir", type=Path, default=None,
                     help="default: the library's cache, ~/.torchxrayvision/models_data/")
    get.add_argument("--no-download", action="store_true",
                     help="only convert a file already in the cache folder")
    conv = sub.add_parser("convert", help="convert one released file to a plain state_dict")
    conv.add_argument("src", type=Path)
    conv.add_argument("dst", type=Path)
    sub.add_parser("list", help="the releases, their files and where they go")
    args = parser.parse_args(argv)
    try:
        if args.command == "list":
            for key in xrv.models.model_urls:
                if "-res" in key:
                    rel = release(key)
                    print(f"{key}: {rel.url}\n    -> {rel.weights_path()} "
                          f"({len(rel.used)} outputs)")
            return 0
        if args.command == "convert":
            out = convert_release(args.src, args.dst)
        else:
            out = fetch(args.key, cache_dir=args.cache_dir, download_missing=not args.no_download)
    except (ModelUnavailableError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"ready: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
