"""Model names to folders: a local folder, or a Hugging Face Hub repo id.

Repo ids go through `huggingface_hub` and its normal cache, so HF_HOME, HF_HUB_CACHE and
HF_HUB_OFFLINE work as they do everywhere else. Only safetensors weights, configs and
tokenizer files are fetched: Livecap never unpickles weights.
"""

from __future__ import annotations

import functools
import importlib
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

import huggingface_hub
from huggingface_hub import constants, errors
from tqdm.std import tqdm

from engine.catalogue import model_revision
from engine.errors import ModelError

# The files a model needs: configs, safetensors weights (and shard index), tokenizers.
MODEL_FILES = ("*.json", "*.safetensors", "*.model", "*.spm", "*.txt")  # .spm: Marian's tokenizers
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")

HUB_ID_HINT = (
    "Give a folder that holds config.json and safetensors weights, or a Hugging Face Hub "
    "repo id such as kyutai/stt-1b-en_fr-trfs (see `livecap models`)."
)


class DownloadCancelled(ModelError):
    """The user cancelled a download; what was fetched stays in the cache to resume later."""


@dataclass(frozen=True)
class CachedModel:
    repo_id: str
    size_bytes: int
    path: Path  # the repo's folder in the cache
    complete: bool  # config and safetensors weights are there


def hub_offline() -> bool:
    value = os.environ.get("HF_HUB_OFFLINE", "")
    return constants.HF_HUB_OFFLINE or value.upper() in {"1", "ON", "YES", "TRUE"}


def resolve_model(name: str, progress: Callable[[str, float], None] | None = None) -> Path:
    """The folder holding `name`'s files, downloading a repo id that is not cached yet.

    `progress(stage, fraction)` hears about a download. Raises ModelError saying what is
    wrong and what to do when the model cannot be had.
    """
    path = Path(name).expanduser()
    if path.is_dir():
        return path.resolve()
    if path.exists():
        raise ModelError(f"{name} is a file, not a model folder.", HUB_ID_HINT)
    if not _REPO_ID.fullmatch(name):
        raise ModelError(f"There is no model folder {name}.", HUB_ID_HINT)
    cached = cached_snapshot(name)
    if cached is not None:
        return cached
    if hub_offline():
        raise ModelError(
            f"{name} is not in the local model cache ({constants.HF_HUB_CACHE}) and "
            "Hugging Face Hub access is off (HF_HUB_OFFLINE is set).",
            "Download it once with network access (unset HF_HUB_OFFLINE), point HF_HOME at "
            "a cache that holds it, or pass a local model folder.",
        )
    on_bytes = None
    if progress is not None:

        def on_bytes(done: int, total: int) -> None:
            progress("download", done / total if total else 0.0)

    return download(name, on_bytes)


def cached_snapshot(repo_id: str) -> Path | None:
    """The cached snapshot folder of `repo_id` if its config and weights are there."""
    revision = model_revision(repo_id)
    config = huggingface_hub.try_to_load_from_cache(repo_id, "config.json", revision=revision)
    if not isinstance(config, str):
        return None
    folder = Path(config).parent
    if not any(folder.glob("*.safetensors")):
        return None
    return folder


def is_downloaded(repo_id: str) -> bool:
    return cached_snapshot(repo_id) is not None


def cached_models() -> list[CachedModel]:
    """Every model repo in the Hugging Face cache, largest first."""
    try:
        cache = huggingface_hub.scan_cache_dir(constants.HF_HUB_CACHE)
    except errors.CacheNotFound:
        return []
    models = [
        CachedModel(
            repo.repo_id, repo.size_on_disk, Path(repo.repo_path), is_downloaded(repo.repo_id)
        )
        for repo in cache.repos
        if repo.repo_type == "model"
    ]
    return sorted(models, key=lambda m: m.size_bytes, reverse=True)


def delete_model(repo_id: str) -> None:
    """Remove every cached revision of `repo_id` (nothing happens if none is cached)."""
    try:
        cache = huggingface_hub.scan_cache_dir(constants.HF_HUB_CACHE)
    except errors.CacheNotFound:
        return
    hashes = [
        revision.commit_hash
        for repo in cache.repos
        if repo.repo_id == repo_id and repo.repo_type == "model"
        for revision in repo.revisions
    ]
    if hashes:
        cache.delete_revisions(*hashes).execute()


def hub_unreachable(repo_id: str, exc: BaseException) -> ModelError:
    """No connection to the Hub: say so, name the models already here, and the way round."""
    ready = sorted(model.repo_id for model in cached_models() if model.complete)
    have = (
        f"Models already downloaded: {', '.join(ready)}. Use one of those"
        if ready
        else "No model is downloaded yet. Connect to the network and try again"
    )
    return ModelError(
        f"The Hugging Face Hub ({constants.ENDPOINT}) cannot be reached, so {repo_id} "
        f"cannot be downloaded ({type(exc).__name__}: {exc}).",
        f"{have}, or use a local model folder (one holding config.json and safetensors "
        "weights). Set HF_HUB_OFFLINE=1 to stop trying the network.",
    )


def _network_errors() -> tuple[type[BaseException], ...]:
    """The transport errors of the HTTP client huggingface_hub uses (httpx2, httpx or
    requests, depending on its version): no route, refused, DNS failure, timeout."""
    found = []
    for module, name in (
        ("httpx2", "TransportError"),
        ("httpx", "TransportError"),
        ("requests", "ConnectionError"),
    ):
        try:
            found.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            continue
    return tuple(found)


class _ByteCount:
    """Bytes fetched across all files of one download; raises when the user cancels."""

    def __init__(
        self,
        total: int,
        on_bytes: Callable[[int, int], None] | None,
        cancel: threading.Event | None,
    ) -> None:
        self.total, self.done = total, 0
        self.on_bytes, self.cancel = on_bytes, cancel
        self._lock = threading.Lock()

    def add(self, n: int) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise DownloadCancelled("Download cancelled.", "Start it again to resume.")
        with self._lock:
            self.done = min(self.total, max(0, self.done + n))
        if self.on_bytes is not None:
            self.on_bytes(self.done, self.total)


class _CountingBar(tqdm):
    """A silent progress bar that feeds a _ByteCount (huggingface_hub takes a tqdm class)."""

    def __init__(self, *args, count: _ByteCount, **kwargs) -> None:
        kwargs.pop("name", None)
        super().__init__(*args, **{**kwargs, "disable": True})
        self._count = count
        count.add(int(kwargs.get("initial") or 0))  # bytes already there from a past attempt

    def update(self, n: float | None = 1) -> bool | None:
        self._count.add(int(n or 0))
        return None


def download(
    repo_id: str,
    on_bytes: Callable[[int, int], None] | None = None,
    cancel: threading.Event | None = None,
) -> Path:
    """Fetch `repo_id`'s model files into the cache; progress in bytes (done, total).

    Setting `cancel` stops it with DownloadCancelled; partly fetched files are kept as
    `.incomplete` and huggingface_hub resumes them next time.
    """
    try:
        revision = model_revision(repo_id)
        info = huggingface_hub.HfApi().model_info(repo_id, revision=revision, files_metadata=True)
        files = [
            sibling
            for sibling in info.siblings or []
            if any(fnmatch(Path(sibling.rfilename).name, p) for p in MODEL_FILES)
        ]
        if not any(f.rfilename.endswith(".safetensors") for f in files):
            raise ModelError(
                f"{repo_id} has no safetensors weights.",
                "Livecap loads safetensors only; choose a model from `livecap models`.",
            )
        count = _ByteCount(sum(f.size or 0 for f in files), on_bytes, cancel)
        bar = functools.partial(_CountingBar, count=count)
        for file in files:
            # By name, not by commit: that records refs/<revision>, which is how the cache
            # finds this snapshot again offline.
            huggingface_hub.hf_hub_download(
                repo_id, file.rfilename, revision=revision, tqdm_class=bar
            )
    except (errors.RepositoryNotFoundError, errors.GatedRepoError) as exc:
        raise ModelError(
            f"{repo_id} is not a public model on the Hugging Face Hub ({type(exc).__name__}).",
            "Check the spelling; for a gated or private model, log in with `hf auth login`.",
        ) from None
    except _network_errors() as exc:
        raise hub_unreachable(repo_id, exc) from None
    except (errors.HfHubHTTPError, errors.LocalEntryNotFoundError, OSError) as exc:
        raise ModelError(
            f"Could not download {repo_id} from the Hugging Face Hub: {exc}",
            "Check the network connection and try again; the download resumes.",
        ) from None
    folder = cached_snapshot(repo_id)
    if folder is None:
        raise ModelError(
            f"{repo_id} was downloaded but its files are not in the cache at "
            f"{constants.HF_HUB_CACHE}.",
            "Check free disk space and that HF_HOME is writable, then try again.",
        )
    return folder
