"""Model names to folders through huggingface_hub's real cache code, offline."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from huggingface_hub import constants
from safetensors.numpy import save_file

from engine import hub
from engine.errors import ModelError

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def put_in_cache(cache: Path, repo_id: str, with_weights: bool = True) -> Path:
    """Lay a tiny model out the way huggingface_hub stores downloads: blobs, refs, snapshots."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    (repo / "blobs").mkdir()
    files = {"config.json": json.dumps({"model_type": "speech_to_text"}).encode()}
    if with_weights:
        weights = repo / "tmp.safetensors"
        save_file({"w": np.zeros((4, 4), np.float32)}, str(weights))
        files["model.safetensors"] = weights.read_bytes()
        weights.unlink()
    for name, data in files.items():
        blob = repo / "blobs" / f"blob-{name}"
        blob.write_bytes(data)
        os.symlink(os.path.relpath(blob, snapshot), snapshot / name)
    return snapshot


@pytest.fixture
def hf_cache(tmp_path, monkeypatch) -> Path:
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def test_cached_repo_id_resolves_offline(hf_cache):
    snapshot = put_in_cache(hf_cache, "org/tiny-s2t")
    folder = hub.resolve_model("org/tiny-s2t")
    assert folder == snapshot
    assert json.loads((folder / "config.json").read_text())["model_type"] == "speech_to_text"
    assert hub.is_downloaded("org/tiny-s2t")
    [cached] = hub.cached_models()
    assert cached.repo_id == "org/tiny-s2t" and cached.complete and cached.size_bytes > 0


def test_uncached_repo_offline_says_which_and_what_to_do(hf_cache):
    put_in_cache(hf_cache, "org/config-only", with_weights=False)
    for name in ("org/not-here", "org/config-only"):
        with pytest.raises(ModelError) as info:
            hub.resolve_model(name)
        assert name in info.value.message and "HF_HUB_OFFLINE" in info.value.message
        assert "network" in info.value.hint
    assert not hub.is_downloaded("org/config-only")


def test_local_folder_and_bad_names(tmp_path, hf_cache):
    assert hub.resolve_model(str(tmp_path)) == tmp_path.resolve()
    with pytest.raises(ModelError, match="no model folder"):
        hub.resolve_model(str(tmp_path / "missing" / "model"))
    (tmp_path / "file.bin").write_bytes(b"x")
    with pytest.raises(ModelError, match="is a file"):
        hub.resolve_model(str(tmp_path / "file.bin"))


def test_delete_model_removes_it_from_the_cache(hf_cache):
    put_in_cache(hf_cache, "org/tiny-s2t")
    hub.delete_model("org/tiny-s2t")
    assert hub.cached_models() == [] and not hub.is_downloaded("org/tiny-s2t")
    hub.delete_model("org/never-there")  # nothing to do is not an error


def test_catalogue_lists_the_supported_models():
    from engine.catalogue import CATALOGUE, find_entry

    ids = [entry.repo_id for entry in CATALOGUE]
    assert ids == [
        "kyutai/stt-1b-en_fr-trfs",
        "kyutai/stt-2.6b-en-trfs",
        "facebook/s2t-small-librispeech-asr",
        "facebook/s2t-medium-mustc-multilingual-st",
        "facebook/wav2vec2-xls-r-300m-en-to-15",
        "Helsinki-NLP/opus-mt-en-de",
        "Helsinki-NLP/opus-mt-en-fr",
        "Helsinki-NLP/opus-mt-fr-en",
        "facebook/m2m100_418M",
        "facebook/nllb-200-distilled-600M",
    ]
    assert find_entry("facebook/nllb-200-distilled-600M").licence == "CC-BY-NC 4.0"
    assert find_entry("Helsinki-NLP/opus-mt-en-de").languages == ("de",)
    assert find_entry("kyutai/stt-2.6b-en-trfs").delay_seconds == 2.5
    assert find_entry("nobody/nothing") is None


class FakeHub:
    """Stands in for the network side of huggingface_hub: a repo's listing and file fetches
    that report bytes through the tqdm class they are given, as huggingface_hub does."""

    FILES = {"config.json": 100, "model.safetensors": 1000, "pytorch_model.bin": 1000}

    def __init__(self, cache: Path):
        self.cache, self.fetched, self.revisions = cache, [], []

    def root(self, repo_id: str) -> Path:
        return self.cache / f"models--{repo_id.replace('/', '--')}"

    def model_info(self, repo_id, revision, files_metadata):
        self.revisions.append(revision)
        siblings = [SimpleNamespace(rfilename=n, size=s) for n, s in self.FILES.items()]
        return SimpleNamespace(sha=COMMIT, siblings=siblings)

    def hf_hub_download(self, repo_id, filename, revision, tqdm_class):
        self.fetched.append(filename)
        bar = tqdm_class(total=self.FILES[filename], initial=0, unit="B", desc=filename)
        for _ in range(self.FILES[filename] // 50):
            bar.update(50)
        bar.close()
        # As huggingface_hub does for a named revision: the file, and the revision's ref.
        self.revisions.append(revision)
        path = self.root(repo_id) / "snapshots" / COMMIT / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
        ref = self.root(repo_id) / "refs" / revision
        ref.parent.mkdir(parents=True, exist_ok=True)
        ref.write_text(COMMIT)
        return str(path)


@pytest.fixture
def fake_hub(hf_cache, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    fake = FakeHub(hf_cache)
    monkeypatch.setattr(hub.huggingface_hub, "HfApi", lambda: fake)
    monkeypatch.setattr(hub.huggingface_hub, "hf_hub_download", fake.hf_hub_download)
    return fake


def test_download_fetches_safetensors_only_reporting_bytes(fake_hub):
    progress = []
    folder = hub.download("org/tiny", lambda done, total: progress.append((done, total)))
    assert fake_hub.fetched == ["config.json", "model.safetensors"]  # never pickles
    assert folder == fake_hub.root("org/tiny") / "snapshots" / COMMIT
    assert set(fake_hub.revisions) == {"main"}
    assert hub.resolve_model("org/tiny") == folder  # found in the cache, not fetched again
    assert len(fake_hub.fetched) == 2
    assert progress[-1] == (1100, 1100)
    assert [done for done, _ in progress] == sorted(done for done, _ in progress)


def test_download_fetches_every_tokenizer_file_a_family_reads(fake_hub, monkeypatch):
    """Marian ships source.spm / target.spm, M2M100 sentencepiece.bpe.model, Kyutai
    tokenizer.json, Speech2Text vocab.json: all come down with the weights."""
    tokenizers = ["source.spm", "target.spm", "sentencepiece.bpe.model", "tokenizer.json"]
    files = {**FakeHub.FILES, **{name: 10 for name in tokenizers}}
    monkeypatch.setattr(FakeHub, "FILES", files)
    hub.download("Helsinki-NLP/opus-mt-en-de")
    assert set(fake_hub.fetched) == {"config.json", "model.safetensors", *tokenizers}


def test_download_can_be_cancelled(fake_hub):
    cancel = threading.Event()

    def on_bytes(done, total):
        if done >= 500:
            cancel.set()

    with pytest.raises(hub.DownloadCancelled):
        hub.download("org/tiny", on_bytes, cancel)
    assert fake_hub.fetched == ["config.json", "model.safetensors"]


def test_a_repo_without_safetensors_is_refused(fake_hub, monkeypatch):
    monkeypatch.setattr(FakeHub, "FILES", {"config.json": 10, "pytorch_model.bin": 10})
    with pytest.raises(ModelError, match="no safetensors"):
        hub.download("org/tiny")


def test_catalogue_models_come_from_the_revision_with_safetensors(fake_hub):
    repo_id = "facebook/wav2vec2-xls-r-300m-en-to-15"  # safetensors only in refs/pr/3
    folder = hub.download(repo_id)
    assert set(fake_hub.revisions) == {"refs/pr/3"}
    assert hub.is_downloaded(repo_id) and hub.resolve_model(repo_id) == folder
    assert len(fake_hub.fetched) == 2
