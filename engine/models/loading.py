"""What every model family's loader does the same way: pick the device, read the folder's
JSON files, open its safetensors weights and check them against the model the config
describes. Every failure is one ModelError naming the file or tensor, with a hint that fits
where the folder came from (a Hub download is downloaded again; a folder the user made is
theirs to copy or save again).

Weights come from safetensors only: a folder holding only `pytorch_model.bin` (a pickle) is
refused, never unpickled. torch and safetensors are imported where tensors are read, so
reading a config (which family is this folder?) stays cheap.
"""

from __future__ import annotations

import ctypes
import json
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.errors import ModelError

if TYPE_CHECKING:
    import torch
    from torch import nn

Shape = tuple[int, ...]
SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
PICKLES = ("pytorch_model.bin", "pytorch_model.bin.index.json")
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers (malloc.h)
# After a load: blocks up to glibc's own ceiling for its moving threshold come from the heap,
# and the heap's top is given back only past twice that.
_STEADY_MMAP_THRESHOLD = 32 * 2**20
_STEADY_TRIM_THRESHOLD = 64 * 2**20


def from_hub_cache(folder: Path) -> bool:
    """Whether `folder` is a snapshot in the Hugging Face cache (models--org--name/...)."""
    return any(part.startswith("models--") for part in folder.resolve().parts)


def damaged_hint(folder: Path) -> str:
    """What to do about a folder whose files are missing or damaged."""
    if from_hub_cache(folder):
        return "Download the model again (`livecap models`)."
    return (
        f"The files in {folder} are damaged or incomplete: copy or save the model into "
        "that folder again."
    )


def mismatch_hint(folder: Path) -> str:
    """What to do about weights that do not fit their config.json."""
    return f"The weights do not match config.json. {damaged_hint(folder)}"


def read_json(path: Path, missing_ok: bool = False) -> dict[str, Any]:
    """A JSON object from `path` ({} for a missing file where `missing_ok`)."""
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        if missing_ok:
            return {}
        raise ModelError(f"{path} is missing.", damaged_hint(path.parent)) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{path} is not valid JSON ({exc}).", damaged_hint(path.parent)) from None
    except OSError as exc:
        raise ModelError(f"{path} cannot be read ({exc}).", damaged_hint(path.parent)) from None
    if not isinstance(values, dict):
        raise ModelError(
            f"{path} holds a JSON {type(values).__name__}, not the object of settings it should.",
            damaged_hint(path.parent),
        )
    return values


def read_config(folder: Path) -> dict[str, Any]:
    return read_json(folder / "config.json")


def open_tokenizer(path: Path) -> Any:
    """A `tokenizers.Tokenizer` from a tokenizer.json file."""
    from tokenizers import Tokenizer

    if not path.exists():
        raise ModelError(f"{path.parent} has no {path.name}.", damaged_hint(path.parent))
    try:
        return Tokenizer.from_file(str(path))
    except Exception as exc:  # the tokenizers library raises plain Exceptions
        raise ModelError(
            f"{path} is not a readable tokenizer ({exc}).", damaged_hint(path.parent)
        ) from None


def require_counts(values: Mapping[str, Any], names: tuple[str, ...], path: Path) -> None:
    """Each of `names` present in `values` must be a whole number ≥ 1 (a layer count of -1
    would otherwise build no layers and leave their weights unread)."""
    for name in names:
        value = values.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ModelError(
                f"{path}: '{name}' is {value!r}; it must be a whole number of at least 1.",
                mismatch_hint(path.parent),
            )


def resolve_device(wanted: str) -> torch.device:
    """`auto`: the CUDA GPU if there is one, else the CPU."""
    import torch

    if wanted == "cuda" and not torch.cuda.is_available():
        raise ModelError("CUDA was asked for but no CUDA GPU is available.", "Use --device cpu.")
    if wanted == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(wanted)


@contextmanager
def returning_freed_blocks() -> Iterator[None]:
    """While loading, have the C library give freed blocks of 1 MiB and more back to the system
    at once. glibc's threshold for that otherwise rises to the largest block freed so far (up
    to 32 MiB), and a loader that converts matrices one by one frees a temporary copy of each:
    those copies then stay in its heap, unused (the 1B Kyutai model in int8: 0.15x its weights
    of peak memory). Afterwards the threshold is set high: a step's temporaries of a few MiB
    (a batch's convolution windows) would otherwise be fresh pages at every call, whose page
    faults cost more than the arithmetic on them. Elsewhere (no `mallopt`) nothing changes.
    Also a decorator: a family's loader is wrapped in it."""
    _mallopt(_M_MMAP_THRESHOLD, 2**20)
    try:
        yield
    finally:
        _mallopt(_M_MMAP_THRESHOLD, _STEADY_MMAP_THRESHOLD)
        _mallopt(_M_TRIM_THRESHOLD, _STEADY_TRIM_THRESHOLD)


def _mallopt(parameter: int, value: int) -> None:
    try:
        ctypes.CDLL(None).mallopt(parameter, value)
    except (OSError, AttributeError, TypeError):
        pass


def build(factory: Callable[[], Any], folder: Path) -> Any:
    """The model `factory` builds from config.json, on the meta device (no memory); a config
    it cannot be built from is a ModelError."""
    import torch

    try:
        with torch.device("meta"):
            return factory()
    except (KeyError, TypeError, ValueError, RuntimeError, ZeroDivisionError) as exc:
        raise ModelError(
            f"{folder / 'config.json'} describes a model that cannot be built ({exc}).",
            mismatch_hint(folder),
        ) from None


class Checkpoint:
    """Tensor names and shapes of a folder's safetensors weights (one file or shards); reads
    one tensor at a time, opening its file only for that read."""

    def __init__(self, folder: Path) -> None:
        from safetensors import SafetensorError, safe_open

        self.folder = folder
        self.files: dict[str, Path] = {}
        self.shapes: dict[str, Shape] = {}
        for path in _weight_files(folder):
            try:
                with safe_open(path, framework="pt") as f:
                    for name in f.keys():
                        self.files[name] = path
                        self.shapes[name] = tuple(f.get_slice(name).get_shape())
            except (SafetensorError, OSError) as exc:
                raise ModelError(
                    f"{path} is not a readable safetensors file ({exc}).", damaged_hint(folder)
                ) from None

    def read(self, name: str, rows: slice | None = None) -> torch.Tensor:
        from safetensors import safe_open

        with safe_open(self.files[name], framework="pt") as f:
            return f.get_tensor(name) if rows is None else f.get_slice(name)[rows]

    def tensors(self) -> dict[str, torch.Tensor]:
        """Every tensor, read at once (for families that rename and fuse whole sets)."""
        return {name: self.read(name) for name in self.shapes}

    def check(self, expected: Mapping[str, Shape], skipped: Callable[[str], bool]) -> None:
        """Every `expected` tensor present with its shape, and nothing else but what
        `skipped` allows (a tensor nothing reads means the config does not fit the weights)."""
        for name, shape in expected.items():
            if name not in self.shapes:
                self.fail(f"tensor '{name}' is missing from the checkpoint")
            self.check_shape(name, self.shapes[name], shape)
        for name in self.shapes:
            if name not in expected and not skipped(name):
                self.unexpected(name)

    def check_shape(self, name: str, found: Shape, implied: Shape) -> None:
        if tuple(found) != tuple(implied):
            self.fail(
                f"tensor '{name}' has shape {list(found)}, config.json implies {list(implied)}"
            )

    def unexpected(self, name: str) -> None:
        self.fail(f"unexpected tensor '{name}' in the checkpoint (nothing in config.json uses it)")

    def fail(self, what: str) -> None:
        raise ModelError(f"{self.folder}: {what}.", mismatch_hint(self.folder))


def _weight_files(folder: Path) -> list[Path]:
    index = folder / SAFETENSORS_INDEX
    if index.exists():
        weight_map = read_json(index).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise ModelError(f"{index} lists no weight files.", damaged_hint(folder))
        files = sorted({folder / str(name) for name in weight_map.values()})
    elif (folder / SAFETENSORS).exists():
        files = [folder / SAFETENSORS]
    elif any((folder / name).exists() for name in PICKLES):
        raise ModelError(
            f"{folder} holds its weights only as pytorch_model.bin, a Python pickle, which "
            "Livecap never loads (opening a pickle can run code).",
            "Use the model's model.safetensors instead: download it from the model's Hub "
            "repo, or have the Hub's converter (huggingface.co/spaces/safetensors/convert) "
            "add one there, or save the model as safetensors with the tool that made it.",
        )
    else:
        raise ModelError(f"{folder} has no {SAFETENSORS}.", damaged_hint(folder))
    for path in files:
        if not path.exists():
            raise ModelError(f"{path} is missing.", damaged_hint(folder))
    return files


def assign(
    model: nn.Module,
    state: dict[str, torch.Tensor],
    checkpoint: Checkpoint,
    sources: Mapping[str, str] | None = None,
) -> None:
    """Load `state` (our names) into `model`, built on the meta device: a tied parameter may
    be stored under any one of its names; every other one must be there with the shape the
    config implies, and nothing else may be. `sources` names the checkpoint tensor each of
    ours came from, for the messages."""
    sources = sources or {}
    tied = _tied_names(model)
    for names in tied:
        present = [n for n in names if n in state]
        if present:
            state.update({n: state[present[0]] for n in names})
    expected = model.state_dict()
    for name, tensor in expected.items():
        if name not in state:
            checkpoint.fail(f"tensor '{name}' is missing from the checkpoint")
        found = tuple(state[name].shape)
        checkpoint.check_shape(sources.get(name, name), found, tuple(tensor.shape))
    for name in state:
        if name not in expected:
            checkpoint.unexpected(sources.get(name, name))
    model.load_state_dict(state, assign=True)
    for first, *others in tied:  # assign=True gave each name its own Parameter: share again
        shared = model.get_parameter(first)
        for name in others:
            owner, _, attr = name.rpartition(".")
            setattr(model.get_submodule(owner), attr, shared)


def _tied_names(model: nn.Module) -> list[list[str]]:
    """Groups of state-dict names that are one tied parameter (e.g. lm_head = embeddings)."""
    by_id: dict[int, list[str]] = {}
    for name, value in model.state_dict(keep_vars=True).items():
        by_id.setdefault(id(value), []).append(name)
    return [names for names in by_id.values() if len(names) > 1]
