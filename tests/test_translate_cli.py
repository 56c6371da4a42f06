"""`livecap translate` and `transcribe --translate-model TEXT_MODEL`, through the CLI process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

from tests.s2t_fixtures import speech_like
from tests.s2t_fixtures import tiny as tiny_s2t
from tests.translation_fixtures import SENTENCES, m2m100_tokenizer, tiny

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "main.py", *args],
        cwd=ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def assert_clear_failure(result: subprocess.CompletedProcess, text: str) -> None:
    assert result.returncode == 2, result.stderr
    assert text in result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def opus_mt(tmp_path_factory) -> Path:
    """The tiny Marian model under a Hub-style name, as a local folder."""
    folder = tmp_path_factory.mktemp("hub") / "opus-mt-en-fr"
    shutil.copytree(tiny("marian"), folder)
    return folder


def marian_reference(folder: Path, lines: list[str]) -> list[str]:
    from transformers import MarianMTModel, MarianTokenizer

    model = MarianMTModel.from_pretrained(folder).eval()
    tokenizer = MarianTokenizer.from_pretrained(folder)
    out = []
    for line in lines:
        ids = model.generate(tokenizer(line, return_tensors="pt").input_ids, num_beams=1)
        out.append(tokenizer.decode(ids[0], skip_special_tokens=True) if line else "")
    return out


def test_lines_from_a_file_come_out_translated_in_order(opus_mt, tmp_path):
    lines = [SENTENCES[0], "", SENTENCES[1], SENTENCES[2]]
    text = tmp_path / "in.txt"
    text.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = run_cli(
        "translate", "--model", str(opus_mt), "--beams", "1", "--dtype", "float32", str(text)
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == marian_reference(opus_mt, lines)


def test_lines_from_standard_input_with_languages_for_a_multilingual_model():
    folder = tiny("m2m100")
    result = run_cli(
        "translate", "--model", str(folder), "--source-lang", "fr", "--target-lang", "de",
        "--beams", "1", "--dtype", "float32", stdin=f"{SENTENCES[1]}\n{SENTENCES[0]}\n",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    from transformers import M2M100ForConditionalGeneration

    model = M2M100ForConditionalGeneration.from_pretrained(folder).eval()
    tokenizer = m2m100_tokenizer(folder, "fr", "de")
    pieces = set(range(len(tokenizer.encoder))) - set(tokenizer.all_special_ids)
    expected = []
    for line in (SENTENCES[1], SENTENCES[0]):
        ids = tokenizer(line, return_tensors="pt").input_ids
        out = model.generate(ids, num_beams=1, forced_bos_token_id=tokenizer.get_lang_id("de"))
        expected.append(tokenizer.decode([i for i in out[0].tolist() if i in pieces]))
    assert result.stdout.splitlines() == expected


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--target-lang", "de"], "needs to be told which"),
        (["--source-lang", "fr"], "translates into many languages"),
        (["--source-lang", "xx", "--target-lang", "de"], "cannot translate from 'xx'"),
        (["--source-lang", "fr", "--target-lang", "xx"], "cannot translate into 'xx'"),
    ],
)
def test_a_multilingual_model_needs_supported_languages(args, message):
    result = run_cli("translate", "--model", str(tiny("m2m100")), *args, stdin="hello\n")
    assert_clear_failure(result, message)


def test_bad_inputs_are_clear_errors(opus_mt, tmp_path):
    assert_clear_failure(
        run_cli("translate", "--model", str(opus_mt), str(tmp_path / "none.txt")), "No such file"
    )
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("caf\xe9\n".encode("latin-1"))
    assert_clear_failure(run_cli("translate", "--model", str(opus_mt), str(latin1)), "not UTF-8")
    wrong_pair = run_cli("translate", "--model", str(opus_mt), "--source-lang", "de", stdin="x\n")
    assert_clear_failure(wrong_pair, "cannot translate from 'de'")
    speech = run_cli("translate", "--model", str(tiny_s2t("asr")), stdin="hello\n")
    assert_clear_failure(speech, "translates speech, not text")


def test_a_text_model_is_refused_as_the_caption_model(opus_mt, tmp_path):
    path = tmp_path / "a.wav"
    soundfile.write(path, np.zeros(16000, np.float32), 16000)
    result = run_cli("transcribe", str(path), "--model", str(opus_mt))
    assert_clear_failure(result, "It translates text")


def test_transcribe_translates_the_captions_with_their_times(opus_mt, tmp_path):
    path = tmp_path / "speech.wav"
    soundfile.write(path, np.concatenate([speech_like(4.0), speech_like(3.0, seed=1)]), 16000)
    result = run_cli(
        "transcribe", str(path), "--model", str(tiny_s2t("asr")), "--translate-model",
        str(opus_mt), "--source-lang", "en", "--beams", "1", "--format", "json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    captions, translation = data["segments"], data["translation"]["segments"]
    assert captions and translation
    assert [(s["start"], s["end"]) for s in translation] == [
        (s["start"], s["end"]) for s in captions
    ]
    expected = marian_reference(opus_mt, [s["text"] for s in captions])
    assert [s["text"] for s in translation] == expected


def test_help_names_the_options(capsys):
    import main

    with pytest.raises(SystemExit) as exit_info:
        main.main(["translate", "--help"])
    assert exit_info.value.code == 0
    shown = capsys.readouterr().out
    assert all(option in shown for option in ("--model", "--source-lang", "--target-lang"))
