"""Integration: speech played into a PulseAudio null sink arrives intact and in real time
through sounddevice → MicrophoneSource → AudioRing → resampling reader → EngineWorker.

The test starts its own PulseAudio daemon (skipped, with the reason, only where PulseAudio
cannot start), makes speech with espeak-ng, plays it into the null sink with paplay and
captures the sink's `.monitor` source in a fresh process (PortAudio lists ALSA's "pulse"
device only if the server runs when it initialises).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile
import soxr

pytestmark = pytest.mark.pulse

ROOT = Path(__file__).resolve().parents[1]
SINK = "livecap_test"
SINK_RATE = 44100
ENGINE_RATE = 16000
SENTENCE = "Livecap hears what the computer plays, sample by sample, in real time."

CAPTURE = """
import sys, time
import numpy as np
from engine.audio.ring import AudioRing
from engine.audio.sources import MicrophoneSource
from engine.events import Error
from engine.worker import EngineWorker
from tests.recognizer_doubles import RecordingRecognizer

class TimedRecorder(RecordingRecognizer):
    arrivals = []  # (monotonic time, samples fed so far)
    def feed(self, samples):
        events = super().feed(samples)
        self.arrivals.append((time.monotonic(), self.fed))
        return events

source = MicrophoneSource(sys.argv[1])
ring = AudioRing(source.sample_rate)
recorder = TimedRecorder(sample_rate=int(sys.argv[3]), frame_size=320)
events = []
worker = EngineWorker(recorder, ring.reader(recorder.sample_rate), events.append)
worker.start()
source.start(ring)
while recorder.fed == 0:  # until sound really flows
    time.sleep(0.01)
print(source.sample_rate, flush=True)
sys.stdin.readline()  # the test says when playback is over
source.stop()
worker.join(30)
np.savez(sys.argv[2], audio=recorder.audio, arrivals=np.array(recorder.arrivals),
         dropped=worker.reader.dropped_seconds,
         errors=sum(isinstance(e, Error) for e in events), end=ring.end_reason,
         overflows=source.overflows)
"""


def _tool_or_skip(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (bash packaging/dev.sh test installs it)")
    return path


@pytest.fixture(scope="module")
def pulse(tmp_path_factory):
    """A private PulseAudio daemon with a null sink; yields the environment that reaches it."""
    daemon = _tool_or_skip("pulseaudio")
    for tool in ("pactl", "paplay"):
        _tool_or_skip(tool)
    runtime = tmp_path_factory.mktemp("pulse-runtime")
    runtime.chmod(0o700)
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime), "HOME": str(runtime)}
    env.pop("PULSE_SERVER", None)
    process = subprocess.Popen(
        [
            daemon,
            "--daemonize=no",
            "--exit-idle-time=-1",
            "--disallow-exit",
            "-n",
            "--use-pid-file=no",
            "--log-target=stderr",
            "--log-level=error",
            "--load=module-native-protocol-unix",
            f"--load=module-null-sink sink_name={SINK} rate={SINK_RATE} channels=2",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 15
    while True:
        info = subprocess.run(["pactl", "info"], env=env, capture_output=True, text=True)
        if info.returncode == 0:
            break
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            reason = process.communicate()[1].strip() or info.stderr.strip()
            pytest.skip(f"PulseAudio cannot start here: {reason}")
        time.sleep(0.2)
    yield env
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> tuple[Path, np.ndarray]:
    espeak = _tool_or_skip("espeak-ng")
    folder = tmp_path_factory.mktemp("speech")
    spoken, path = folder / "spoken.wav", folder / "speech.wav"
    subprocess.run([espeak, "-w", str(spoken), SENTENCE], check=True, capture_output=True)
    # At the sink's rate, so PulseAudio plays it as it is instead of resampling it first;
    # after a little silence, which absorbs the sink rewinding when the stream starts.
    audio, rate = soundfile.read(spoken, dtype="float32")
    audio = soxr.resample(audio, rate, SINK_RATE, quality="VHQ")
    soundfile.write(path, np.concatenate([np.zeros(SINK_RATE // 2, np.float32), audio]), SINK_RATE)
    return path, audio


def align(captured: np.ndarray, reference: np.ndarray) -> int:
    """Where `reference` starts in `captured`, to the sample, by FFT cross-correlation."""
    size = 1 << int(np.ceil(np.log2(captured.size + reference.size)))
    spectrum = np.fft.rfft(captured, size) * np.conj(np.fft.rfft(reference, size))
    correlation = np.fft.irfft(spectrum, size)[: captured.size - reference.size + 1]
    return int(np.argmax(correlation))


def delayed(signal: np.ndarray, samples: float) -> np.ndarray:
    """`signal` delayed by a fraction of a sample (a linear phase shift, zero-padded)."""
    size = 2 * signal.size
    phase = np.exp(-2j * np.pi * np.fft.rfftfreq(size) * samples)
    return np.fft.irfft(np.fft.rfft(signal, size) * phase, size)[: signal.size]


def best_correlation(window: np.ndarray, reference: np.ndarray) -> float:
    """Correlation after sub-sample alignment: capture starts at an arbitrary phase of the
    device-rate samples, so the engine-rate samples sit a fraction of a sample off."""

    def correlation(shift: float) -> float:
        return float(np.corrcoef(window, delayed(reference, shift))[0, 1])

    coarse = max(np.linspace(-0.5, 0.5, 11), key=correlation)
    return max(correlation(shift) for shift in coarse + np.linspace(-0.05, 0.05, 11))


def test_sink_monitor_speech_arrives_intact_and_in_real_time(pulse, speech, tmp_path):
    listing = subprocess.run(
        [sys.executable, "main.py", "devices"], cwd=ROOT, env=pulse, capture_output=True, text=True
    )
    assert f"{SINK}.monitor" in listing.stdout and "[system audio]" in listing.stdout

    result_file = tmp_path / "captured.npz"
    capture = subprocess.Popen(
        [sys.executable, "-c", CAPTURE, f"{SINK}.monitor", str(result_file), str(ENGINE_RATE)],
        cwd=ROOT,
        env={**pulse, "PYTHONPATH": str(ROOT)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    capture_rate = int(capture.stdout.readline() or 0)
    assert capture_rate > 0, capture.stderr.read()
    time.sleep(0.5)
    # A generous playback buffer, so a busy machine does not make the player itself underrun.
    played, spoken = speech
    play = ["paplay", f"--device={SINK}", "--latency-msec=300", str(played)]
    subprocess.run(play, env=pulse, check=True, timeout=30)
    time.sleep(0.5)
    _, errors = capture.communicate("stop\n", timeout=60)
    assert capture.returncode == 0, errors
    result = np.load(result_file)
    captured, arrivals = result["audio"].astype(np.float64), result["arrivals"]
    assert float(result["dropped"]) == 0.0 and int(result["overflows"]) == 0
    assert str(result["end"]) == "Stopped." and int(result["errors"]) == 0

    reference = soxr.resample(spoken, SINK_RATE, ENGINE_RATE, quality="VHQ").astype(np.float64)
    start = align(captured, reference)
    window = captured[start : start + reference.size]
    assert window.size == reference.size, "the capture ended before the speech did"
    correlation = best_correlation(window, reference)
    assert correlation > 0.99, correlation

    # Paced at real time: the speech's first and last samples reached the engine as far
    # apart in wall time as they are in audio time.
    times, counts = arrivals[:, 0], arrivals[:, 1]
    first = times[np.searchsorted(counts, start + 1)]
    last = times[np.searchsorted(counts, start + reference.size)]
    audio_seconds = reference.size / ENGINE_RATE
    assert abs((last - first) - audio_seconds) < 0.25 + 0.05 * audio_seconds, (
        last - first,
        audio_seconds,
    )
