"""Greedy and beam-search decoding for encoder-decoder speech models.

Speech2Text and the speech encoder-decoder family share this search. It follows the
semantics of transformers' `generate()` so that our tokens can be checked against it:
`max_length` counts the start tokens, a finished beam's score is its summed log-probability
divided by (generated length, end token included) ** `length_penalty`, the search keeps
2 × beams candidates per step so that finished ones never starve the running ones, and
`early_stopping` is True (stop once `num_beams` hypotheses are finished), False (stop when
no running beam can still beat the worst finished one at its current length) or "never"
(the same, judged at the longest possible length when the penalty favours length).

A model takes part through a `DecoderState`: it runs the decoder on new tokens, keeping its
own self-attention cache and cross-attention keys/values, and can reorder its cache rows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Protocol

import torch

from engine.errors import ModelError
from engine.models.loading import damaged_hint, read_json

_NEG = -1.0e9  # "impossible" score, as large as transformers uses, so ties break the same way


class DecoderState(Protocol):
    def step(self, ids: torch.Tensor, outputs: int = 1) -> torch.Tensor | Screened:
        """ids [B, T] new tokens → logits of the last `outputs` positions [B, outputs, V]
        (for one row, greedy's, they may come as `Screened`); extends the cache."""
        ...

    def truncate(self, length: int) -> None:
        """Forget the cached positions from `length` on."""
        ...

    def reorder(self, beam_idx: torch.Tensor) -> None:
        """Keep (or duplicate) cache rows `beam_idx` [B] for the next step."""
        ...


@dataclass(frozen=True)
class Screened:
    """Logits of a large output layer as greedy search needs them, bought cheaply: `approx`
    [T, V] lies within ±`bound` [T, V] of the exact logits, and `exact(row, ids)` computes a
    few of them exactly. Only the tokens whose interval reaches the best lower bound can be
    the argmax; scoring just those exactly gives the exact argmax (see ScreenedHead)."""

    approx: torch.Tensor
    bound: torch.Tensor
    exact: Callable[[int, torch.Tensor], torch.Tensor]

    def best(self, row: int, scores: torch.Tensor | None = None) -> int:
        """The exact argmax of row `row`; `scores` is `approx[row]` after the search's rules
        (which only ban tokens or force one), so banned tokens stay out."""
        scores = self.approx[row] if scores is None else scores
        floor = (scores - self.bound[row]).max()
        candidates = torch.nonzero(scores + self.bound[row] >= floor)[:, 0]  # ascending ids
        return int(candidates[self.exact(row, candidates).argmax()])  # first of equals wins


@dataclass(frozen=True)
class GenerationConfig:
    decoder_start_token_id: int
    eos_token_id: int | tuple[int, ...]
    pad_token_id: int
    max_length: int = 20  # transformers' default when a checkpoint sets none
    num_beams: int = 1
    length_penalty: float = 1.0
    early_stopping: bool | str = False
    forced_bos_token_id: int | None = None
    forced_eos_token_id: int | None = None
    no_repeat_ngram_size: int = 0
    min_length: int = 0
    # token sequences never to complete (Marian bans its pad token, which shares its
    # embedding row with the start token, so a search could otherwise emit it)
    bad_words_ids: tuple[tuple[int, ...], ...] = ()

    @classmethod
    def from_folder(cls, folder: Path, **overrides: object) -> GenerationConfig:
        """generation_config.json, then config.json for what it lacks, then `overrides`."""
        values: dict = {}
        for name in ("config.json", "generation_config.json"):  # later files win
            loaded = read_json(folder / name, missing_ok=True)
            values.update({k: v for k, v in loaded.items() if v is not None})
        values.update({k: v for k, v in overrides.items() if v is not None})
        known = {f.name for f in fields(cls)}
        config = {k: v for k, v in values.items() if k in known}
        if isinstance(config.get("eos_token_id"), list):
            config["eos_token_id"] = tuple(config["eos_token_id"])
        try:
            config["bad_words_ids"] = tuple(tuple(w) for w in config.get("bad_words_ids", ()))
            config.setdefault("pad_token_id", _first(config["eos_token_id"]))
            return cls(**config)
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(
                f"{folder} does not say how to generate text ({exc} is not set).",
                damaged_hint(folder),
            ) from None

    @property
    def eos_ids(self) -> tuple[int, ...]:
        eos = self.eos_token_id
        return eos if isinstance(eos, tuple) else (eos,)


def generate(
    new_state: Callable[[int], DecoderState],
    config: GenerationConfig,
    start_ids: Sequence[int] | None = None,
    draft: Sequence[int] = (),
) -> list[int]:
    """Decode one input. `new_state(rows)` builds a decoder state for that many rows.
    `draft`: the tokens expected after the start (greedy only; see `_greedy`)."""
    start = list(start_ids) if start_ids else [config.decoder_start_token_id]
    if len(start) >= config.max_length:
        return start
    if config.num_beams > 1:
        return _beam_search(new_state(config.num_beams), config, start)
    return _greedy(new_state(1), config, start, list(draft))


def generate_after(
    new_state: Callable[[int], DecoderState],
    config: GenerationConfig,
    language: int | None,
    prefix: Sequence[int] = (),
    draft: Sequence[int] = (),
) -> list[int]:
    """Decode after the start token, the language token (if the model writes several) and a
    forced `prefix`. Without a prefix the language comes from forced_bos, so a draft starts
    with it; forced_bos only acts on the first step, so before a prefix it is named."""
    languages = [language] if language is not None else []
    if not prefix:
        return generate(new_state, config, draft=[*languages, *draft])
    start = [config.decoder_start_token_id, *languages, *prefix]
    return generate(new_state, config, start, draft)


def forced_lengths(config: GenerationConfig) -> frozenset[int]:
    """Sequence lengths after which generate() forces the next token whatever the logits say
    (forced_bos after the start token, forced_eos one short of max_length): a decoder may
    skip its output layer there."""
    lengths = set()
    if config.forced_bos_token_id is not None:
        lengths.add(1)
    if config.forced_eos_token_id is not None:
        lengths.add(config.max_length - 1)
    return frozenset(lengths)


DRAFT_TOKENS = 3  # checked per step; a CPU reads the weights once for up to ~4 rows


def _greedy(
    state: DecoderState, config: GenerationConfig, start: list[int], draft: list[int]
) -> list[int]:
    """Greedy search, checking a draft on the way: while the output follows `draft` (in live
    use, the previous window's text), a step feeds the next `DRAFT_TOKENS` of it with the
    newest token and takes the choices at every position until the first that differs from
    the draft; the cache is cut back to what the kept tokens saw. The weights are read once
    per step whatever the rows, and each choice sees exactly the inputs plain greedy would,
    so the tokens are the same, in fewer steps."""
    seq, feed = list(start), list(start)
    while True:
        done = len(seq) - len(start)
        on_draft = seq[len(start) :] == draft[:done]
        room = config.max_length - len(seq) - 1
        guesses = draft[done : done + min(DRAFT_TOKENS, room)] if on_draft else []
        logits = state.step(torch.tensor([feed + guesses]), outputs=1 + len(guesses))
        for row in range(1 + len(guesses)):
            token = _greedy_choice(config, seq, logits, row)
            seq.append(token)
            if token in config.eos_ids or len(seq) >= config.max_length:
                return seq
            if row == len(guesses) or token != guesses[row]:
                break
        state.truncate(len(seq) - 1)  # every kept token but the newest was an input
        feed = [seq[-1]]


def _greedy_choice(
    config: GenerationConfig, seq: list[int], logits: torch.Tensor | Screened, row: int
) -> int:
    if isinstance(logits, Screened):
        return logits.best(row, _process(config, torch.tensor([seq]), logits.approx[row][None])[0])
    return _first_best(_process(config, torch.tensor([seq]), logits[:, row].float()))


def _first_best(scores: torch.Tensor) -> int:
    """The index of the first highest of one row's scores (torch.argmax's answer, NaN highest)
    found on the calling thread: PyTorch splits a vocabulary's scores over the thread team,
    whose wake-up costs more than the scan."""
    return int(scores.reshape(-1).numpy().argmax())


def _beam_search(state: DecoderState, config: GenerationConfig, start: list[int]) -> list[int]:
    beams, prompt_len = config.num_beams, len(start)
    keep = max(2, 1 + len(config.eos_ids)) * beams  # candidates examined per step
    eos = torch.tensor(config.eos_ids)

    running = torch.tensor([start] * beams)  # [beams, cur_len]
    running_scores = torch.full((beams,), _NEG)
    running_scores[0] = 0.0  # identical beams at the start: only the first may expand
    done = _FinishedBeams(beams, config.max_length, config.pad_token_id)

    logits = state.step(running)[:, 0]
    while True:
        cur_len = running.shape[1]
        log_probs = torch.log_softmax(logits.float(), dim=-1)
        log_probs = _process(config, running, log_probs) + running_scores[:, None]
        # the best `keep` over all beams are among each beam's best `keep`: a top-k per beam
        # then one over beams x keep, cheaper than one top-k over beams x vocab
        # (tests/benchmarks/sed_vs_transformers.py times the beam steps)
        row_best = torch.topk(log_probs, min(keep, log_probs.shape[-1]), dim=-1)
        top_scores, top_index = torch.topk(row_best.values.reshape(-1), keep)
        source, token = (
            top_index // row_best.values.shape[-1],
            row_best.indices.reshape(-1)[top_index],
        )
        candidates = torch.cat([running[source], token[:, None]], dim=1)  # [keep, cur_len+1]
        finishes = torch.isin(token, eos) | (cur_len + 1 >= config.max_length)

        # the best `beams` candidates that did not finish run on
        runnable = top_scores + finishes.float() * _NEG
        chosen = torch.topk(runnable, beams).indices
        running, running_scores = candidates[chosen], runnable[chosen]

        # only the best `beams` candidates may finish (the rest exist to keep beams running)
        finished_scores = top_scores / float(cur_len + 1 - prompt_len) ** config.length_penalty
        just_finished = finishes & (torch.arange(keep) < beams)
        done.merge(candidates, finished_scores + (~just_finished).float() * _NEG, just_finished)

        state.reorder(source[chosen])
        hope = running_scores[0] / float(_judged_length(config, cur_len + 1, prompt_len)) ** (
            config.length_penalty
        )
        stop = not done.beatable_by(hope) or (done.full and config.early_stopping is True)
        if stop or finishes.all():
            return done.best()
        logits = state.step(running[:, -1:])[:, 0]


def _judged_length(config: GenerationConfig, cur_len: int, prompt_len: int) -> int:
    """The length at which the best running beam's score is judged against finished ones."""
    if config.early_stopping == "never" and config.length_penalty > 0.0:
        return config.max_length - prompt_len
    return cur_len - prompt_len


class _FinishedBeams:
    """The `beams` best finished hypotheses so far, as fixed-size slots sorted by score."""

    def __init__(self, beams: int, max_length: int, pad: int) -> None:
        self.max_length, self.pad = max_length, pad
        self.seqs = torch.full((beams, max_length), pad, dtype=torch.long)
        self.lengths = torch.zeros(beams, dtype=torch.long)
        self.scores = torch.full((beams,), _NEG)
        self.is_finished = torch.zeros(beams, dtype=torch.bool)

    @property
    def full(self) -> bool:
        return bool(self.is_finished.all())

    def merge(self, candidates: torch.Tensor, scores: torch.Tensor, finished: torch.Tensor) -> None:
        padded = torch.full((len(candidates), self.max_length), self.pad, dtype=torch.long)
        padded[:, : candidates.shape[1]] = candidates
        lengths = torch.full((len(candidates),), candidates.shape[1], dtype=torch.long)
        keep = torch.topk(torch.cat([self.scores, scores]), len(self.scores)).indices
        self.seqs = torch.cat([self.seqs, padded])[keep]
        self.lengths = torch.cat([self.lengths, lengths])[keep]
        self.scores = torch.cat([self.scores, scores])[keep]
        self.is_finished = torch.cat([self.is_finished, finished])[keep]

    def beatable_by(self, hope: torch.Tensor) -> bool:
        """Could a running beam scoring `hope` still displace a slot (an empty one or the worst)?"""
        worst = torch.where(self.is_finished, self.scores.min(), torch.tensor(_NEG))
        return bool((hope > worst).any())

    def best(self) -> list[int]:
        return self.seqs[0, : self.lengths[0]].tolist()


def _process(config: GenerationConfig, seqs: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """The score rules of transformers' generate(), in its order. seqs [B, T], scores [B, V]."""
    cur_len = seqs.shape[1]
    if config.no_repeat_ngram_size and cur_len >= config.no_repeat_ngram_size:
        scores = _ban_repeated_ngrams(seqs, scores, config.no_repeat_ngram_size)
    if config.bad_words_ids:
        scores = _ban_words(seqs, scores, config.bad_words_ids)
    if config.min_length and cur_len < config.min_length:
        scores = scores.clone()
        scores[:, list(config.eos_ids)] = -float("inf")
    if config.forced_bos_token_id is not None and cur_len == 1:
        scores = _only(scores, config.forced_bos_token_id)
    if config.forced_eos_token_id is not None and cur_len == config.max_length - 1:
        scores = _only(scores, config.forced_eos_token_id)
    return scores


def _only(scores: torch.Tensor, token: int) -> torch.Tensor:
    forced = torch.full_like(scores, -float("inf"))
    forced[:, token] = 0.0
    return forced


def _ban_repeated_ngrams(seqs: torch.Tensor, scores: torch.Tensor, n: int) -> torch.Tensor:
    """Forbid any token that would complete an n-gram already present in the row."""
    scores = scores.clone()
    for row, seq in enumerate(seqs.tolist()):
        tail = seq[len(seq) - n + 1 :] if n > 1 else []
        banned = {seq[i + n - 1] for i in range(len(seq) - n + 1) if seq[i : i + n - 1] == tail}
        if banned:
            scores[row, list(banned)] = -float("inf")
    return scores


def _ban_words(
    seqs: torch.Tensor, scores: torch.Tensor, words: tuple[tuple[int, ...], ...]
) -> torch.Tensor:
    """Forbid the last token of each banned word whose other tokens end the row."""
    scores = scores.clone()
    for row, seq in enumerate(seqs.tolist()):
        banned = [w[-1] for w in words if len(w) == 1 or seq[len(seq) - len(w) + 1 :] == [*w[:-1]]]
        if banned:
            scores[row, banned] = -float("inf")
    return scores


def _first(value: int | tuple[int, ...]) -> int:
    return value[0] if isinstance(value, tuple) else value
