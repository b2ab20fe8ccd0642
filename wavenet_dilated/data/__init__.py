"""Corpora and features: LJSpeech metadata, download, the preprocessing cache and the training dataset.

    corpus dir (metadata.csv + wavs/)          ← download_ljspeech(dest) / your own LJSpeech-format corpus
      → preprocess(corpus, cache, AudioConfig()) → cache dir: manifest.json + audio/<id>.npy + mel/<id>.npy
      → AudioDataset(cache, "train", max_time_steps=...) → DataLoader(..., collate_fn=collate)

One module per step: :mod:`~wavenet_dilated.data.ljspeech` (the corpus format, metadata, splits),
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
    "AudioDataset",
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
    "download_ljspeech",
    "extract_archive",
    "load_manifest",
    "mix_seed",
    "preprocess",
    "read_metadata",
    "split_ids",
    "verify_file",
]


__getattr__, __dir__ = lazy_attributes(__name__, globals(), _EXPORTS)


if TYPE_CHECKING:  # what static checkers and IDEs see
    from .cache import preprocess
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
