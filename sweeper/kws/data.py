"""Read a Speech Commands folder (real v2, or the synthetic one written in its layout).

The layout: `<word>/<speaker>_nohash_<n>.wav`, `_background_noise_/*.wav`, and the split lists
`validation_list.txt` / `testing_list.txt` (everything else is train). WAVs are read with
soundfile (torchaudio.load would need torchcodec + FFmpeg) and padded/cropped to 1 s.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from sweeper.errors import DataError
from sweeper.kws.synth import KEYWORDS, UNKNOWN_WORDS

UNKNOWN, SILENCE = "_unknown_", "_silence_"
NOISE_DIR = "_background_noise_"
SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class Example:
    path: str  # relative to the dataset root
    label: int
    speaker: str  # "" for silence cut from background noise
    split: int  # index into SPLITS
    offset: int = 0  # first sample, for silence windows cut from long noise files


def classes_for(task: str) -> tuple[str, ...]:
    """"12": the 10 keywords, `_unknown_` and `_silence_` (Warden 2018's standard task);
    "35": every word of Speech Commands v2, no unknown or silence class."""
    if task == "12":
        return (*KEYWORDS, UNKNOWN, SILENCE)
    if task == "35":
        return (*KEYWORDS, *UNKNOWN_WORDS)
    raise DataError(f"task {task!r}: must be '12' or '35'")


def list_examples(root: Path, task: str = "12", seed: int = 0) -> list[Example]:
    """Every example of the task with its label, speaker and official split."""
    root = Path(root)
    lists = {}
    for index, name in ((1, "validation_list.txt"), (2, "testing_list.txt")):
        path = root / name
        if not path.exists():
            raise DataError(f"{path}: missing (not a Speech Commands folder?)")
        lists.update({line.strip(): index for line in path.read_text().splitlines()
                      if line.strip()})
    classes = classes_for(task)
    examples = []
    for word_dir in sorted(p for p in root.iterdir() if p.is_dir() and p.name != NOISE_DIR):
        if word_dir.name in classes:
            label = classes.index(word_dir.name)
        elif UNKNOWN in classes:
            label = classes.index(UNKNOWN)
        else:
            continue
        for wav in sorted(word_dir.glob("*.wav")):
            rel = f"{word_dir.name}/{wav.name}"
            examples.append(Example(rel, label, wav.name.split("_nohash_")[0],
                                    lists.get(rel, 0)))
    if not examples:
        raise DataError(f"{root}: no <word>/*.wav files")
    if task == "35":
        return examples
    examples = _balance_unknown(examples, classes.index(UNKNOWN), seed)
    return examples + _silence_examples(root, examples, classes.index(SILENCE), seed)


def _balance_unknown(examples: list[Example], label: int, seed: int) -> list[Example]:
    """Keep as many `_unknown_` examples per split as an average keyword has, as the
    standard 12-class task does (Warden 2018, sec. 4: unknown and silence ~ 1/12 each)."""
    rng = np.random.default_rng(seed + 1)
    known = [e for e in examples if e.label != label]
    kept = []
    for split in range(len(SPLITS)):
        pool = [e for e in examples if e.label == label and e.split == split]
        quota = sum(e.split == split for e in known) // max(1, label)
        if len(pool) > quota:
            pool = [pool[i] for i in sorted(rng.choice(len(pool), quota, replace=False))]
        kept += pool
    return sorted(known + kept, key=lambda e: e.path)


def _silence_examples(root: Path, examples: list[Example], label: int,
                      seed: int) -> list[Example]:
    """1 s windows of background noise, as many per split as an average word class has."""
    noise_files = sorted((root / NOISE_DIR).glob("*.wav"))
    if not noise_files:
        raise DataError(f"{root / NOISE_DIR}: no noise files to make {SILENCE} from")
    rng = np.random.default_rng(seed)
    n_labels = label  # the other classes
    out = []
    for split in range(len(SPLITS)):
        count = max(1, sum(e.split == split for e in examples) // n_labels)
        for _ in range(count):
            path = noise_files[int(rng.integers(len(noise_files)))]
            info = sf.info(path)
            offset = int(rng.integers(0, max(1, info.frames - info.samplerate)))
            out.append(Example(f"{NOISE_DIR}/{path.name}", label, "", split, offset))
    return out


def load_clip(root: Path, example: Example, sample_rate: int) -> torch.Tensor:
    """One second of mono audio at `sample_rate`, zero-padded or cropped."""
    with sf.SoundFile(Path(root) / example.path) as f:
        native = f.samplerate
        f.seek(example.offset)
        audio = f.read(native, dtype="float32", always_2d=True)[:, 0]
    wave = torch.from_numpy(np.ascontiguousarray(audio))
    if native != sample_rate:
        wave = AF.resample(wave, native, sample_rate)
    if wave.numel() < sample_rate:
        wave = torch.nn.functional.pad(wave, (0, sample_rate - wave.numel()))
    return wave[:sample_rate]
