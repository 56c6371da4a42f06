"""Our greedy and beam search against transformers' generate(), on one tiny BART.

The decoder here is transformers' own (wrapped as a DecoderState in this test), so any
difference in the tokens comes from the search, not from a model.
"""

import pytest
import torch
from transformers import BartConfig, BartForConditionalGeneration

from engine.models.generation import GenerationConfig, Screened, generate

VOCAB, EOS, START = 64, 2, 2


@pytest.fixture(scope="module")
def bart():
    torch.manual_seed(0)
    config = BartConfig(
        vocab_size=VOCAB,
        d_model=32,
        encoder_layers=1,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_position_embeddings=128,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=EOS,
        decoder_start_token_id=START,
        forced_eos_token_id=None,
    )
    model = BartForConditionalGeneration(config).eval()
    with torch.no_grad():  # make the end token plausible but not certain
        model.final_logits_bias[0, EOS] = 2.0
    return model


class HFState:
    def __init__(self, model, encoder_out, rows):
        self.model, self.past, self.steps = model, None, 0
        self.enc = encoder_out.expand(rows, -1, -1)

    def step(self, ids, outputs=1):
        self.steps += 1
        with torch.no_grad():
            out = self.model(
                encoder_outputs=(self.enc,),
                decoder_input_ids=ids,
                past_key_values=self.past,
                use_cache=True,
            )
        self.past = out.past_key_values
        return out.logits[:, -outputs:]

    def truncate(self, length):
        extra = self.past.get_seq_length() - length
        if extra > 0:
            self.past.crop(-extra)

    def reorder(self, beam_idx):
        self.past.reorder_cache(beam_idx)


CASES = [
    dict(num_beams=1, max_length=30),
    dict(num_beams=1, max_length=12, min_length=8, no_repeat_ngram_size=2),
    dict(num_beams=3, max_length=25),
    dict(num_beams=4, max_length=25, length_penalty=0.6, early_stopping=True),
    dict(num_beams=4, max_length=20, length_penalty=1.4, early_stopping="never"),
    dict(num_beams=5, max_length=18, no_repeat_ngram_size=3, min_length=6, forced_bos_token_id=7),
    dict(num_beams=2, max_length=10, forced_eos_token_id=EOS, length_penalty=2.0),
]


@pytest.mark.parametrize("case", CASES, ids=[str(i) for i in range(len(CASES))])
def test_search_matches_transformers(bart, case):
    torch.manual_seed(1)
    hits = 0
    for trial in range(4):
        inputs = torch.randint(3, VOCAB, (1, 9 + trial))
        with torch.no_grad():
            enc = bart.get_encoder()(input_ids=inputs).last_hidden_state
            expected = bart.generate(input_ids=inputs, do_sample=False, **case)[0].tolist()
        config = GenerationConfig(
            decoder_start_token_id=START, eos_token_id=EOS, pad_token_id=1, **case
        )
        ours = generate(lambda rows, enc=enc: HFState(bart, enc, rows), config)
        assert ours == expected
        hits += EOS in ours[1:]
    if case.get("forced_eos_token_id") is None:
        assert 0 < hits  # some hypotheses end by themselves, so the end rules are exercised


def test_start_ids_are_forced_and_kept(bart):
    inputs = torch.randint(3, VOCAB, (1, 7))
    prefix = [START, 11, 12]
    with torch.no_grad():
        enc = bart.get_encoder()(input_ids=inputs).last_hidden_state
        expected = bart.generate(
            input_ids=inputs, decoder_input_ids=torch.tensor([prefix]), num_beams=3, max_length=16
        )[0].tolist()
    config = GenerationConfig(START, EOS, 1, max_length=16, num_beams=3)
    assert generate(lambda rows: HFState(bart, enc, rows), config, prefix) == expected
    assert expected[:3] == prefix


def test_a_draft_saves_steps_and_never_changes_the_tokens(bart):
    """Greedy with a draft (the previous window's text, live) checks several draft tokens
    per step; whatever the draft — right, wrong from some point, garbage, too long — the
    tokens are transformers' greedy ones, and a right draft takes far fewer steps."""
    torch.manual_seed(2)
    inputs = torch.randint(3, VOCAB, (1, 9))
    # a long, varied text: the tiny model likes to end, and to repeat itself
    case = dict(max_length=30, min_length=20, no_repeat_ngram_size=2)
    with torch.no_grad():
        enc = bart.get_encoder()(input_ids=inputs).last_hidden_state
        expected = bart.generate(input_ids=inputs, do_sample=False, **case)[0].tolist()
    config = GenerationConfig(START, EOS, 1, **case)
    text = expected[1:]
    assert len(text) >= 19 and len(set(text)) > 5
    drafts = {
        "right": text,
        "wrong from the 6th token": text[:5] + [(t + 1) % VOCAB for t in text[5:]],
        "garbage": [5] * 40,
        "right, then too long": text[:-1] + [7] * 20,
        "none": [],
    }
    steps = {}
    for name, draft in drafts.items():
        states = []

        def new_state(rows, states=states):
            states.append(HFState(bart, enc, rows))
            return states[-1]

        assert generate(new_state, config, draft=draft) == expected, name
        steps[name] = states[0].steps
    assert steps["none"] == len(text)
    assert steps["right"] <= len(text) // 3 + 1
    assert steps["right"] < steps["wrong from the 6th token"] < steps["none"]


class ScreenedHFState(HFState):
    """HFState answering one-row steps as a ScreenedHead does: every logit blurred by up to
    `BLUR` (random, within the stated bound), the exact ones on request."""

    BLUR = 3.0

    def __init__(self, model, encoder_out, rows):
        super().__init__(model, encoder_out, rows)
        self.misled = 0  # steps where the blurred logits' argmax is not the exact one

    def step(self, ids, outputs=1):
        logits = super().step(ids, outputs)
        if logits.shape[0] != 1:
            return logits
        exact = logits[0].float()
        blurred = exact + (torch.rand_like(exact) * 2 - 1) * self.BLUR
        self.misled += int((blurred.argmax(-1) != exact.argmax(-1)).sum())
        bound = torch.full_like(exact, self.BLUR)
        return Screened(blurred, bound, lambda row, ids: exact[row, ids])


@pytest.mark.parametrize("case", [CASES[0], CASES[1]], ids=["plain", "min length, no repeats"])
def test_greedy_over_screened_logits_matches_transformers(bart, case):
    """Greedy reading approximate logits with error bounds (the float32 output layer of a
    CPU decoder, ScreenedHead) picks exactly transformers' tokens — with the search's rules
    (banned repeats, no end before min_length) and with a draft — although the blurred
    logits alone would often pick another token."""
    torch.manual_seed(3)
    config = GenerationConfig(START, EOS, 1, **case)
    misled = 0
    for trial in range(3):
        inputs = torch.randint(3, VOCAB, (1, 8 + trial))
        with torch.no_grad():
            enc = bart.get_encoder()(input_ids=inputs).last_hidden_state
            expected = bart.generate(input_ids=inputs, do_sample=False, **case)[0].tolist()
        for draft in ([], expected[1:4] + [5, 6]):
            state = ScreenedHFState(bart, enc, 1)
            assert generate(lambda rows, state=state: state, config, draft=draft) == expected
            misled += state.misled
    assert misled > 0


def test_config_from_folder_prefers_generation_config(tmp_path):
    (tmp_path / "config.json").write_text(
        '{"decoder_start_token_id": 2, "eos_token_id": 2, "max_length": 50, "num_beams": 2}'
    )
    (tmp_path / "generation_config.json").write_text('{"eos_token_id": [2, 5], "num_beams": 4}')
    config = GenerationConfig.from_folder(tmp_path, num_beams=None, max_length=60)
    assert (config.num_beams, config.max_length, config.eos_ids, config.pad_token_id) == (
        4,
        60,
        (2, 5),
        2,
    )
