"""A synthetic keyword-spotting corpus in the Speech Commands v2 layout, spoken by espeak-ng.

"Speakers" are espeak-ng voices x variants x pitch x speed. Each clip is resampled to 16 kHz,
placed at a random offset in a 1 s window and mixed with background noise at a random SNR.
Speakers are split into train/validation/test like the real lists (no speaker in two splits).
The corpus is generated once per parameter set and cached under a content key.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from sweeper.errors import DataError

SAMPLE_RATE = 16_000
KEYWORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
# The other 25 words of Speech Commands v2, so the 35-word task exists here too.
UNKNOWN_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
                 "bed", "bird", "cat", "dog", "happy", "house", "marvin", "sheila", "tree",
                 "wow", "backward", "forward", "follow", "learn", "visual")
VOICES = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbclan",
          "en-gb-x-gbcwmd")
VARIANTS = ("m1", "m2", "m3", "m4", "m7", "f1", "f2", "f3", "f4", "f5")
NOISES = ("white_noise", "pink_noise", "brown_noise")
GENERATOR_VERSION = 3


@dataclass(frozen=True)
class CorpusSpec:
    speakers: int = 32
    takes: int = 6
    seed: int = 0
    snr_db_low: float = 5.0
    snr_db_high: float = 25.0
    test_fraction: float = 0.2
    validation_fraction: float = 0.1

    def key(self) -> str:
        blob = json.dumps({**asdict(self), "v": GENERATOR_VERSION}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Speaker:
    voice: str
    variant: str
    pitch: int
    speed: int

    @property
    def id(self) -> str:
        return hashlib.sha1(f"{self.voice}+{self.variant}|{self.pitch}|{self.speed}".encode()
                            ).hexdigest()[:8]


def speakers_for(spec: CorpusSpec) -> list[Speaker]:
    rng = np.random.default_rng(spec.seed)
    pairs = [(v, var) for v in VOICES for var in VARIANTS]
    order = rng.permutation(len(pairs))
    out = []
    for i in range(spec.speakers):
        voice, variant = pairs[order[i % len(pairs)]]
        out.append(Speaker(voice, variant, int(rng.integers(25, 75)), int(rng.integers(120, 200))))
    return out


def corpus_dir(spec: CorpusSpec, cache_root: Path) -> Path:
    return cache_root / f"synthetic-{spec.key()}"


def ensure_corpus(spec: CorpusSpec, cache_root: Path,
                  progress: Callable[[int, int], None] | None = None) -> Path:
    """The corpus folder for `spec`, generated first if the cache does not hold it."""
    target = corpus_dir(spec, cache_root)
    if (target / ".complete").exists():
        return target
    if shutil.which("espeak-ng") is None:
        raise DataError("espeak-ng not found: install it (apt-get install espeak-ng) to "
                        "generate the synthetic corpus")
    cache_root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=cache_root))
    try:
        _generate(spec, staging, progress)
        (staging / "spec.json").write_text(json.dumps(asdict(spec), indent=2))
        (staging / ".complete").write_text("ok\n")
        try:
            staging.rename(target)
        except OSError:  # another process finished first: its copy is as good as ours
            if not (target / ".complete").exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _speak(speaker: Speaker, word: str, pitch_shift: int, speed_scale: float) -> np.ndarray:
    """One utterance; a take varies the speaker's pitch and rate a little, as people do."""
    cmd = ["espeak-ng", "-v", f"{speaker.voice}+{speaker.variant}",
           "-p", str(int(np.clip(speaker.pitch + pitch_shift, 0, 99))),
           "-s", str(int(speaker.speed * speed_scale)), "--stdout", word]
    wav = subprocess.run(cmd, check=True, capture_output=True).stdout
    audio, rate = sf.read(io.BytesIO(wav), dtype="float32")
    return AF.resample(torch.from_numpy(audio), rate, SAMPLE_RATE).numpy()[:SAMPLE_RATE]


def _noise(kind: str, seconds: int, rng: np.random.Generator) -> np.ndarray:
    white = rng.standard_normal(SAMPLE_RATE * seconds)
    if kind == "white_noise":
        out = white
    else:
        spectrum = np.fft.rfft(white)
        freqs = np.fft.rfftfreq(white.size, 1 / SAMPLE_RATE)
        freqs[0] = freqs[1]
        spectrum /= np.sqrt(freqs) if kind == "pink_noise" else freqs
        out = np.fft.irfft(spectrum, n=white.size)
    return (0.3 * out / np.abs(out).max()).astype(np.float32)


def _generate(spec: CorpusSpec, root: Path,
              progress: Callable[[int, int], None] | None) -> None:
    noise_dir = root / "_background_noise_"
    noise_dir.mkdir(parents=True)
    rng = np.random.default_rng(spec.seed)
    noises = {}
    for kind in NOISES:
        noises[kind] = _noise(kind, 30, rng)
        sf.write(noise_dir / f"{kind}.wav", noises[kind], SAMPLE_RATE, subtype="PCM_16")
    speakers = speakers_for(spec)
    words = KEYWORDS + UNKNOWN_WORDS
    split_order = rng.permutation(len(speakers))
    n_test = max(1, round(spec.test_fraction * len(speakers)))
    n_val = max(1, round(spec.validation_fraction * len(speakers)))
    test_ids = {speakers[i].id for i in split_order[:n_test]}
    val_ids = {speakers[i].id for i in split_order[n_test:n_test + n_val]}
    jobs = [(s, w, t) for s in range(len(speakers)) for w in range(len(words))
            for t in range(spec.takes)]
    for word in words:
        (root / word).mkdir()

    def write_clip(job: tuple[int, int, int]) -> str:
        spk_index, word_index, take = job
        speaker, word = speakers[spk_index], words[word_index]
        clip_rng = np.random.default_rng([spec.seed, spk_index, word_index, take])
        clean = _speak(speaker, word, int(clip_rng.integers(-6, 7)),
                       float(clip_rng.uniform(0.9, 1.1)))
        clip = np.zeros(SAMPLE_RATE, dtype=np.float32)
        offset = int(clip_rng.integers(0, SAMPLE_RATE - clean.size + 1))
        clip[offset:offset + clean.size] = clean
        noise = noises[NOISES[int(clip_rng.integers(len(NOISES)))]]
        start = int(clip_rng.integers(0, noise.size - SAMPLE_RATE))
        segment = noise[start:start + SAMPLE_RATE]
        snr_db = clip_rng.uniform(spec.snr_db_low, spec.snr_db_high)
        gain = np.sqrt(np.mean(clean**2) / (np.mean(segment**2) * 10 ** (snr_db / 10)))
        rel = f"{word}/{speaker.id}_nohash_{take}.wav"
        sf.write(root / rel, np.clip(clip + gain * segment, -1.0, 1.0), SAMPLE_RATE,
                 subtype="PCM_16")
        return rel

    testing, validation = [], []
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        for done, rel in enumerate(pool.map(write_clip, jobs), start=1):
            speaker_id = rel.split("/")[1].split("_nohash_")[0]
            if speaker_id in test_ids:
                testing.append(rel)
            elif speaker_id in val_ids:
                validation.append(rel)
            if progress:
                progress(done, len(jobs))
    (root / "testing_list.txt").write_text("\n".join(sorted(testing)) + "\n")
    (root / "validation_list.txt").write_text("\n".join(sorted(validation)) + "\n")
