"""Corpora and features: corpus layouts, download, the preprocessing cache and the training dataset.

    corpus dir (metadata.csv + wavs/)          ← download_ljspeech(dest) / your own LJSpeech-format corpus
      or (wavs/<speaker>/<utterance>.wav)      ← VCTK (wav48_silence_trimmed/<speaker>/…) / your own speakers
      → preprocess(corpus, cache, AudioConfig()) → cache dir: manifest.json + audio/<id>.npy + mel/<id>.npy
      → AudioDataset(cache, "train", max_time_steps=...) → DataLoader(..., collate_fn=collate)

One module per step: :mod:`~wavenet_dilated.data.corpus` (which layout a directory holds),
:mod:`~wavenet_dilated.data.ljspeech` (the single-speaker format, metadata, splits),
:mod:`~wavenet_dilated.data.speakers` (the multi-speaker layout, per-speaker splits, speaker conditioning),
:mod:`~wavenet_dilated.data.download` (download with resume, verification, safe extraction),
:mod:`~wavenet_dilated.data.cache` (preprocessing into a cache with a manifest) and
:mod:`~wavenet_dilated.data.dataset` (the dataset with aligned crops). The names below load on first use (PEP 562), so
importing this package costs nothing until one is used. The file downloader is ``data.download.download``: the name
``download`` here is that module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_attributes

# public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    "LJSPEECH_URL": "ljspeech",
    "LJSPEECH_SIZE": "ljspeech",
    "LJSPEECH_SHA256": "ljspeech",
    "LJSPEECH_DIRNAME": "ljspeech",
    "METADATA_FILE": "ljspeech",
    "SPLITS": "ljspeech",
    "DataWarning": "ljspeech",
    "Utterance": "ljspeech",
    "read_metadata": "ljspeech",
    "split_ids": "ljspeech",
    "CORPUS_LAYOUTS": "corpus",
    "Corpus": "corpus",
    "corpus_layout": "corpus",
    "scan_corpus": "corpus",
    "AUDIO_DIRS": "speakers",
    "parse_speaker_tree": "speakers",
    "speaker_conditioning": "speakers",
    "split_by_speaker": "speakers",
    "verify_file": "download",
    "extract_archive": "download",
    "download_ljspeech": "download",
    "MANIFEST_FILE": "manifest",
    "ManifestEntry": "manifest",
    "SkippedFile": "manifest",
    "Manifest": "manifest",
    "load_manifest": "manifest",
    "preprocess": "cache",
    "AudioDataset": "dataset",
    "collate": "dataset",
    "mix_seed": "dataset",
}

__all__ = [
    "AUDIO_DIRS",
    "AudioDataset",
    "CORPUS_LAYOUTS",
    "Corpus",
    "DataWarning",
    "LJSPEECH_DIRNAME",
    "LJSPEECH_SHA256",
    "LJSPEECH_SIZE",
    "LJSPEECH_URL",
    "MANIFEST_FILE",
    "METADATA_FILE",
    "Manifest",
    "ManifestEntry",
    "SPLITS",
    "SkippedFile",
    "Utterance",
    "collate",
    "corpus_layout",
    "download_ljspeech",
    "extract_archive",
    "load_manifest",
    "mix_seed",
    "parse_speaker_tree",
    "preprocess",
    "read_metadata",
    "scan_corpus",
    "speaker_conditioning",
    "split_by_speaker",
    "split_ids",
    "verify_file",
]


__getattr__, __dir__ = lazy_attributes(__name__, globals(), _EXPORTS)


if TYPE_CHECKING:  # what static checkers and IDEs see
    from .cache import preprocess
    from .corpus import CORPUS_LAYOUTS, Corpus, corpus_layout, scan_corpus
    from .dataset import AudioDataset, collate, mix_seed
    from .download import download_ljspeech, extract_archive, verify_file
    from .ljspeech import (
        LJSPEECH_DIRNAME,
        LJSPEECH_SHA256,
        LJSPEECH_SIZE,
        LJSPEECH_URL,
        METADATA_FILE,
        SPLITS,
        DataWarning,
        Utterance,
        read_metadata,
        split_ids,
    )
    from .manifest import MANIFEST_FILE, Manifest, ManifestEntry, SkippedFile, load_manifest
    from .speakers import AUDIO_DIRS, parse_speaker_tree, speaker_conditioning, split_by_speaker
