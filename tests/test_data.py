import hashlib
import http.server
import io
import json
import random
import tarfile
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from torch.utils.data import DataLoader

from tests._corpus import SR, add_line, make_tar_bz2, tiny_ljspeech_files, tone, write_corpus, write_wav
from wavenet_dilated.audio import AudioConfig
from wavenet_dilated.data import AudioDataset, DataWarning, collate, preprocess, read_metadata, split_ids
from wavenet_dilated.data.cache import CACHE_LOCK_FILE
from wavenet_dilated.data.download import download, download_ljspeech, extract_archive
from wavenet_dilated.mel import MelStats
from wavenet_dilated.mulaw import mu_law_encode

DEMO = Path(__file__).resolve().parents[1] / "wavenet_dilated" / "data" / "demo_corpus"
HOP = AudioConfig().hop_length


def record_warnings(fn, *args, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fn(*args, **kwargs)
    return result, [w for w in caught if issubclass(w.category, DataWarning)]


def run_preprocess(corpus, cache, **kwargs):
    kwargs = {"n_workers": 1, "progress": False, **kwargs}
    return record_warnings(preprocess, corpus, cache, **kwargs)


# --- metadata -------------------------------------------------------------------------------------------------------


def test_read_metadata_parses_and_reports_bad_lines_by_number(tmp_path):
    ids = write_corpus(tmp_path, n=3)
    add_line(tmp_path, "only-one-field")  # line 4
    add_line(tmp_path, "A|b|c|d")  # line 5
    add_line(tmp_path, "NOWAV-0001|Text.|Text.")  # line 6: wav missing
    add_line(tmp_path, f"{ids[0]}|Again.|Again.")  # line 7: duplicate
    add_line(tmp_path, "EMPTY-0001||")  # line 8
    add_line(tmp_path, "../escape|Text.|Text.")  # line 9
    with open(tmp_path / "metadata.csv", "ab") as f:
        f.write(b"BAD-UTF8|caf\xe9|caf\xe9\n")  # line 10
    add_line(tmp_path, "")  # blank line: ignored silently
    write_wav(tmp_path / "wavs" / "TWO-0001.wav", tone(0.1))
    add_line(tmp_path, "TWO-0001|Two fields are fine.")  # line 12

    utts, caught = record_warnings(read_metadata, tmp_path)
    assert [u.id for u in utts] == [*ids, "TWO-0001"]
    assert utts[0].text == 'Sentence "0" here.'  # quotes are text, not CSV quoting
    assert utts[-1].normalized_text == "Two fields are fine." and utts[-1].line == 12
    assert utts[1].wav_path == tmp_path / "wavs" / f"{ids[1]}.wav"
    messages = [str(w.message) for w in caught]
    assert len(messages) == 7
    for line, needle in [(4, "found 1"), (5, "found 4"), (6, "missing"), (7, "duplicate"), (8, "empty"),
                         (9, "plain file name"), (10, "UTF-8")]:  # fmt: skip
        assert any(f"metadata.csv:{line}:" in m and needle in m for m in messages), (line, messages)


def test_read_metadata_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="corpus directory"):
        read_metadata(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="metadata.csv"):
        read_metadata(tmp_path)


def test_bundled_demo_corpus_reads_cleanly():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        utts = read_metadata(DEMO)
    assert 20 <= len(utts) <= 40
    assert [u.id for u in utts] == [f"LJ-DEMO-{i:04d}" for i in range(1, len(utts) + 1)]
    total = 0
    for u in utts:
        info = sf.info(str(u.wav_path))
        assert (info.samplerate, info.channels, info.subtype) == (22050, 1, "PCM_16"), u.id
        assert 0.5 < info.duration < 6.0
        total += u.wav_path.stat().st_size
    assert total < 3.2e6


# --- splits ---------------------------------------------------------------------------------------------------------


def test_split_is_deterministic_order_independent_and_stable():
    ids = [f"LJ{i // 100:03d}-{i % 100:04d}" for i in range(3000)]
    splits = split_ids(ids)
    shuffled = ids[:]
    random.Random(0).shuffle(shuffled)
    assert split_ids(shuffled) == splits
    assert sorted(sum(splits.values(), [])) == sorted(ids)
    for name in ("val", "test"):
        assert 0.01 * len(ids) < len(splits[name]) < 0.03 * len(ids), (name, len(splits[name]))
    # removing other ids never moves an id (the val set is far above min_val here)
    sub = split_ids(ids[::2])
    for name, members in sub.items():
        assert set(members) <= set(splits[name])


def test_split_min_val_and_validation():
    for n in (3, 4, 10):
        s = split_ids([f"u{i}" for i in range(n)])
        assert len(s["val"]) >= 1 and len(s["train"]) >= 1
    assert split_ids(["solo"])["train"] == ["solo"]
    assert split_ids([f"u{i}" for i in range(10)], val_fraction=0.0)["val"] == []
    with pytest.raises(ValueError, match="unique"):
        split_ids(["a", "a"])
    with pytest.raises(ValueError, match="val_fraction"):
        split_ids(["a"], val_fraction=1.5)
    with pytest.raises(ValueError, match="< 1"):
        split_ids(["a"], val_fraction=0.5, test_fraction=0.5)


# --- preprocessing --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bad_corpus(tmp_path_factory):
    """4 good utterances, 2 convertible (stereo, 16 kHz), 6 bad files and 2 bad metadata lines."""
    root = tmp_path_factory.mktemp("bad_corpus")
    good = write_corpus(root, n=4, seconds=0.4)
    wavs = root / "wavs"
    lr = np.stack([tone(0.4, freq=300), tone(0.4, freq=500, amp=0.3, seed=9)], axis=1)
    write_wav(wavs / "STEREO.wav", lr, subtype="FLOAT")
    write_wav(wavs / "RATE16K.wav", tone(0.4, sr=16000, freq=1000.0, amp=0.4), sr=16000)
    (wavs / "UNREADABLE.wav").write_bytes(b"this is not audio at all" * 20)
    (wavs / "ZEROBYTES.wav").write_bytes(b"")
    write_wav(wavs / "NOFRAMES.wav", np.zeros(0, np.float32))
    write_wav(wavs / "SHORT.wav", tone(0.02))  # 441 samples: under min_samples
    nan = tone(0.4)
    nan[100] = np.nan
    write_wav(wavs / "NAN.wav", nan, subtype="FLOAT")
    loud = tone(0.4, amp=1.5)  # a float file may exceed full scale: never clipped silently
    write_wav(wavs / "LOUD.wav", loud, subtype="FLOAT")
    for uid in ("STEREO", "RATE16K", "UNREADABLE", "ZEROBYTES", "NOFRAMES", "SHORT", "NAN", "LOUD"):
        add_line(root, f"{uid}|Text.|Text.")
    add_line(root, "MISSING|No wav for this one.|No wav for this one.")
    add_line(root, "not|enough|fields|here|at all")
    return root, good


BAD_REASONS = {
    "UNREADABLE": "unreadable",
    "ZEROBYTES": "empty",
    "NOFRAMES": "empty",
    "SHORT": "too short",
    "NAN": "NaN",
    "LOUD": "outside [-1, 1]",
}


@pytest.fixture(scope="module")
def bad_cache(bad_corpus, tmp_path_factory):
    root, good = bad_corpus
    cache = tmp_path_factory.mktemp("bad_cache")
    manifest, caught = run_preprocess(root, cache, min_samples=4 * HOP)
    return cache, manifest, caught


def test_bad_files_are_skipped_and_reported_convertible_ones_converted(bad_corpus, bad_cache):
    root, good = bad_corpus
    cache, manifest, caught = bad_cache
    assert sorted(e.id for e in manifest.utterances) == sorted([*good, "STEREO", "RATE16K"])
    messages = [str(w.message) for w in caught]
    assert len(messages) == len(BAD_REASONS) + 2  # one per bad file + the 2 bad metadata lines
    for uid, reason in BAD_REASONS.items():
        hits = [m for m in messages if f"{uid}.wav" in m]
        assert len(hits) == 1 and reason in hits[0], (uid, hits)
    assert sum("metadata.csv:" in m for m in messages) == 2

    stored = json.loads((cache / "manifest.json").read_text())
    assert stored["n_skipped"] == len(BAD_REASONS) + 2 == len(manifest.skipped)
    assert {s["id"] for s in stored["skipped"] if s["id"]} == set(BAD_REASONS)
    assert stored["n_converted"] == 2
    assert "mono" in " ".join(manifest.converted["STEREO"])
    assert "16000 Hz" in " ".join(manifest.converted["RATE16K"])
    for e in manifest.utterances:
        a, m = np.load(manifest.audio_path(e.id)), np.load(manifest.mel_path(e.id))
        assert a.dtype == np.float32 and a.ndim == 1 and np.abs(a).max() <= 1.0
        assert a.size == e.n_samples == e.n_frames * HOP and m.shape == (80, e.n_frames)
    # the 16 kHz file was resampled: its 1 kHz tone is still at 1 kHz at 22.05 kHz
    r = np.load(manifest.audio_path("RATE16K"))
    assert abs(np.argmax(np.abs(np.fft.rfft(r))) * SR / r.size - 1000.0) <= SR / r.size  # within one FFT bin


def test_stereo_is_the_channel_mean_and_skips_are_summarised_in_the_log(bad_corpus, tmp_path, caplog):
    root, _ = bad_corpus
    with caplog.at_level("INFO", logger="wavenet_dilated.data"):
        manifest, _ = run_preprocess(root, tmp_path, audio_config=AudioConfig(trim_top_db=None), min_samples=4 * HOP)
    summary = [r for r in caplog.records if "skipped" in r.getMessage()]
    assert len(summary) == 1 and summary[0].levelname == "WARNING"
    assert f"skipped {len(BAD_REASONS) + 2} " in summary[0].getMessage()
    lr, _ = sf.read(str(root / "wavs" / "STEREO.wav"), dtype="float32")
    cached = np.load(manifest.audio_path("STEREO"))
    expected = lr.mean(axis=1)[: cached.size]
    assert cached.size == lr.shape[0] // HOP * HOP
    # both are the correctly rounded float32 of (l + r) / 2 (float64 mean, or a float32 sum halved exactly): allow one
    # float32 rounding
    np.testing.assert_allclose(cached, expected, rtol=0, atol=np.finfo(np.float32).eps * np.abs(expected).max())


def test_nothing_usable_is_a_clear_error(tmp_path):
    (tmp_path / "wavs").mkdir()
    (tmp_path / "wavs" / "A.wav").write_bytes(b"garbage")
    write_wav(tmp_path / "wavs" / "B.wav", tone(0.01))
    (tmp_path / "metadata.csv").write_text("A|x|x\nB|y|y\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        with pytest.raises(ValueError, match="no usable audio.*2 skipped"):
            preprocess(tmp_path, tmp_path / "cache", n_workers=1, min_samples=HOP * 8, progress=False)
    (tmp_path / "metadata.csv").write_text("")
    with pytest.raises(ValueError, match="no usable audio"):
        preprocess(tmp_path, tmp_path / "cache", n_workers=1, progress=False)
    with pytest.raises(FileNotFoundError, match="metadata.csv"):
        preprocess(tmp_path / "wavs", tmp_path / "cache", n_workers=1, progress=False)


def test_mel_stats_are_fitted_on_train_only(bad_cache):
    cache, manifest, _ = bad_cache
    train = manifest.entries("train")
    assert manifest.entries("val") and train
    mels = [np.load(manifest.mel_path(e.id)) for e in train]
    expected = MelStats.fit(mels)
    # float64 sums of n values, in any order, differ by at most n·eps·max|x| per value (mean); var = E[x²] − mean²
    # adds 3·n·eps·max|x|², which std = √var divides by 2·std
    n, big, eps = sum(m.shape[1] for m in mels), max(float(np.abs(m).max()) for m in mels), np.finfo(np.float64).eps
    mean_tol, std_tol = n * eps * big, 1.5 * n * eps * big**2 / min(expected.std)
    np.testing.assert_allclose(manifest.mel_stats.mean, expected.mean, rtol=0, atol=mean_tol)
    np.testing.assert_allclose(manifest.mel_stats.std, expected.std, rtol=0, atol=std_tol)
    everything = MelStats.fit(np.load(manifest.mel_path(e.id)) for e in manifest.utterances)
    assert np.abs(np.subtract(manifest.mel_stats.mean, everything.mean)).max() > mean_tol  # the check has teeth


@pytest.fixture()
def small_corpus(tmp_path):
    root = tmp_path / "corpus"
    write_corpus(root, n=5, seconds=0.3)
    return root


def _mtimes(cache: Path) -> dict[str, int]:
    # the lock file is rewritten by every call (it names the process that holds the lock)
    return {str(p.relative_to(cache)): p.stat().st_mtime_ns for p in cache.rglob("*")
            if p.is_file() and p.name != CACHE_LOCK_FILE}


def test_preprocess_is_idempotent_and_rebuilds_on_change(small_corpus, tmp_path):
    cache = tmp_path / "cache"
    first, _ = run_preprocess(small_corpus, cache)
    before = _mtimes(cache)
    assert len(before) == 1 + 2 * 5
    second, caught = run_preprocess(small_corpus, cache)
    assert second == first and _mtimes(cache) == before and not caught

    # a different AudioConfig rebuilds everything
    third, _ = run_preprocess(small_corpus, cache, audio_config=AudioConfig(n_mels=40))
    assert third.fingerprint != first.fingerprint
    assert third.audio_config_fingerprint != first.audio_config_fingerprint
    assert third.audio_config.n_mels == 40 and np.load(third.mel_path("UT-0000")).shape[0] == 40
    assert all(before[k] != v for k, v in _mtimes(cache).items() if k in before)

    # a rebuild deletes only its own .npy files
    (cache / "audio" / "notes.txt").write_text("not ours")
    run_preprocess(small_corpus, cache, audio_config=AudioConfig(n_mels=40), force=True)
    assert (cache / "audio" / "notes.txt").read_text() == "not ours"

    # a missing cache file rebuilds; so does an edited metadata.csv
    third.audio_path("UT-0001").unlink()
    fourth, _ = run_preprocess(small_corpus, cache, audio_config=AudioConfig(n_mels=40))
    assert fourth.audio_path("UT-0001").is_file()
    add_line(small_corpus, "UT-0000|dup|dup")
    _, caught = run_preprocess(small_corpus, cache, audio_config=AudioConfig(n_mels=40))
    assert len(caught) == 1 and "duplicate" in str(caught[0].message)


@pytest.mark.slow
def test_process_pool_gives_the_same_cache(small_corpus, tmp_path):
    one, _ = run_preprocess(small_corpus, tmp_path / "one", n_workers=1)
    two, _ = run_preprocess(small_corpus, tmp_path / "two", n_workers=2)
    assert one.utterances == two.utterances and one.mel_stats == two.mel_stats
    for e in one.utterances:
        assert np.array_equal(np.load(one.mel_path(e.id)), np.load(two.mel_path(e.id)))


# --- dataset and collate --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    write_corpus(root, n=8, seconds=0.3)
    cache = tmp_path_factory.mktemp("cache")
    manifest, _ = run_preprocess(root, cache)
    return cache, manifest


def test_crops_are_aligned_to_the_hop_and_match_the_mel(cache):
    cache_dir, manifest = cache
    ds = AudioDataset(cache_dir, "train", max_time_steps=8 * HOP, hop_length=HOP, seed=1)
    raw = AudioDataset(cache_dir, "train", max_time_steps=8 * HOP, n_classes=None, mel_normalize=False, seed=1)
    assert len(ds) == len(manifest.entries("train")) and ds.n_excluded == 0
    starts = set()
    for i in range(len(ds)):
        item, plain = ds[i], raw[i]
        e = ds.entries[i]
        start = ds.crop_start(i)
        starts.add(start)
        audio = np.load(manifest.audio_path(e.id))[start * HOP : (start + 8) * HOP]
        mel = np.load(manifest.mel_path(e.id))[:, start : start + 8]
        assert item["audio"].dtype == torch.int64 and item["audio"].shape == (8 * HOP,)
        assert torch.equal(item["audio"], mu_law_encode(torch.from_numpy(audio)))
        assert plain["audio"].dtype == torch.float32 and np.array_equal(plain["audio"].numpy(), audio)
        assert np.array_equal(plain["mel"].numpy(), mel)
        assert torch.equal(item["mel"], manifest.mel_stats.normalize(torch.from_numpy(mel)))  # the same float32 ops
    assert len(starts) > 1  # crops really move


def test_crops_are_reproducible_per_seed_epoch_and_worker_independent(cache):
    cache_dir, _ = cache

    def starts(seed, epoch=0):
        ds = AudioDataset(cache_dir, "train", max_time_steps=2 * HOP, seed=seed)
        ds.set_epoch(epoch)
        return [ds.crop_start(i) for i in range(len(ds))]

    assert starts(0) == starts(0)
    assert starts(0) != starts(1)
    assert starts(0, epoch=1) != starts(0, epoch=0)

    ds = AudioDataset(cache_dir, "train", max_time_steps=2 * HOP, seed=3)
    batches = []
    for workers in (0, 2):
        loader = DataLoader(ds, batch_size=3, num_workers=workers, collate_fn=collate)
        batches.append([b["audio"] for b in loader])
    assert all(torch.equal(a, b) for a, b in zip(batches[0], batches[1], strict=True))


def test_dataset_argument_checks_and_exclusion(cache):
    cache_dir, manifest = cache
    with pytest.raises(ValueError, match="multiple of hop_length=256"):
        AudioDataset(cache_dir, "train", max_time_steps=1000)
    with pytest.raises(ValueError, match="hop_length"):
        AudioDataset(cache_dir, "train", hop_length=200)
    with pytest.raises(ValueError, match="split"):
        AudioDataset(cache_dir, "dev")
    with pytest.raises(FileNotFoundError, match="preprocess"):
        AudioDataset(cache_dir / "nope")
    lengths = sorted(e.n_samples for e in manifest.entries("train"))
    crop = lengths[len(lengths) // 2]
    ds = AudioDataset(cache_dir, "train", max_time_steps=crop)
    assert ds.n_excluded == sum(n < crop for n in lengths) > 0
    assert len(ds) + ds.n_excluded == len(lengths)
    with pytest.raises(ValueError, match="no usable utterances"):
        AudioDataset(cache_dir, "train", max_time_steps=lengths[-1] + HOP)


def test_whole_utterances_collate_with_padding_and_lengths(cache):
    cache_dir, manifest = cache
    ds = AudioDataset(cache_dir, "train", max_time_steps=None)
    items = [ds[i] for i in range(len(ds))]
    for item, e in zip(items, ds.entries, strict=True):
        assert item["audio"].shape == (e.n_samples,) and item["mel"].shape == (80, e.n_frames)
    batch = ds.collate_fn(items)
    n = [e.n_samples for e in ds.entries]
    assert batch["audio"].shape == (len(items), max(n)) and batch["mel"].shape == (len(items), 80, max(n) // HOP)
    assert batch["lengths"].tolist() == n and batch["mel_lengths"].tolist() == [k // HOP for k in n]
    short = int(np.argmin(n))
    assert (batch["audio"][short, n[short] :] == 128).all()  # μ-law class of silence
    assert torch.equal(batch["audio"][short, : n[short]], items[short]["audio"])

    cropped = collate([AudioDataset(cache_dir, "train", max_time_steps=4 * HOP)[i] for i in range(3)])
    assert cropped["audio"].shape == (3, 4 * HOP) and cropped["mel"].shape == (3, 80, 4)
    with pytest.raises(ValueError, match="empty"):
        collate([])


# --- download and extraction ----------------------------------------------------------------------------------------


@pytest.fixture()
def archive(tmp_path):
    path = tmp_path / "src" / "LJSpeech-1.1.tar.bz2"
    path.parent.mkdir()
    blob = make_tar_bz2(path, tiny_ljspeech_files())
    return path, blob, hashlib.sha256(blob).hexdigest()


@pytest.fixture()
def http_server(monkeypatch):
    """``start(blob, honour_range=True) -> (url, log)``: serves ``blob`` on 127.0.0.1 from a thread."""
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    servers = []

    def start(blob: bytes, honour_range: bool = True):
        log = {"ranges": [], "bytes_sent": 0}

        class Handler(http.server.BaseHTTPRequestHandler):
            timeout = 10

            def do_GET(self):
                rng = self.headers.get("Range")
                log["ranges"].append(rng)
                begin = int(rng.removeprefix("bytes=").split("-")[0]) if rng and honour_range else 0
                body = blob[begin:]
                if begin >= len(blob):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(blob)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if begin:
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {begin}-{len(blob) - 1}/{len(blob)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                log["bytes_sent"] += len(body)

            def log_message(self, *args):
                pass

        server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        servers.append((server, thread))
        return f"http://127.0.0.1:{server.server_address[1]}/LJSpeech-1.1.tar.bz2", log

    yield start
    for server, thread in servers:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_download_from_file_url_extracts_and_is_idempotent(archive, tmp_path):
    path, blob, sha = archive
    dest = tmp_path / "dest"
    corpus = download_ljspeech(dest, path.as_uri(), len(blob), sha, progress=False)
    assert corpus == dest / "LJSpeech-1.1"
    utts, caught = record_warnings(read_metadata, corpus)
    assert len(utts) == 3 and not caught
    path.unlink()  # the source is gone: a second call must not need it
    assert download_ljspeech(dest, path.as_uri(), len(blob), sha, progress=False) == corpus


def test_file_url_resume_keeps_the_partial_prefix(archive, tmp_path):
    path, blob, _ = archive
    k = len(blob) // 2
    out = tmp_path / "out.tar.bz2"
    # A prefix that differs from the source proves the download resumed after it instead of starting over.
    (tmp_path / "out.tar.bz2.part").write_bytes(b"\0" * k)
    download(path.as_uri(), out, expected_size=len(blob), progress=False)
    assert out.read_bytes() == b"\0" * k + blob[k:]
    assert not (tmp_path / "out.tar.bz2.part").exists()


def test_http_resume_fetches_only_the_missing_bytes(archive, tmp_path, http_server):
    _, blob, sha = archive
    url, log = http_server(blob)
    k = len(blob) // 3
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "LJSpeech-1.1.tar.bz2.part").write_bytes(blob[:k])
    corpus = download_ljspeech(dest, url, len(blob), sha, progress=False)
    assert log["ranges"] == [f"bytes={k}-"] and log["bytes_sent"] == len(blob) - k
    assert (dest / "LJSpeech-1.1.tar.bz2").read_bytes() == blob
    assert (corpus / "metadata.csv").is_file()


def test_http_complete_part_file_is_not_fetched_again(archive, tmp_path, http_server):
    _, blob, sha = archive
    url, log = http_server(blob)
    out = tmp_path / "a.tar.bz2"
    (tmp_path / "a.tar.bz2.part").write_bytes(blob)
    download(url, out, expected_sha256=sha, progress=False)  # size unknown: the server answers 416
    assert log["ranges"] == [f"bytes={len(blob)}-"] and log["bytes_sent"] == 0
    assert out.read_bytes() == blob


def test_http_server_without_range_support_restarts(archive, tmp_path, http_server):
    _, blob, sha = archive
    url, log = http_server(blob, honour_range=False)
    out = tmp_path / "a.tar.bz2"
    (tmp_path / "a.tar.bz2.part").write_bytes(b"junk" * 10)
    download(url, out, len(blob), sha, progress=False)
    assert out.read_bytes() == blob and log["bytes_sent"] == len(blob)


def test_wrong_checksum_or_size_is_rejected_and_removed(archive, tmp_path, http_server):
    path, blob, _ = archive
    url, _ = http_server(blob)
    for source in (url, path.as_uri()):
        dest = tmp_path / "dest"
        with pytest.raises(ValueError, match="sha256.*expected 0{64}"):
            download_ljspeech(dest, source, len(blob), "0" * 64, progress=False)
        assert not any(dest.iterdir())  # neither the archive nor a .part is left
        with pytest.raises(ValueError, match=f"expected {len(blob) + 1} bytes, found {len(blob)}"):
            download_ljspeech(dest, source, len(blob) + 1, None, progress=False)
        assert not any(dest.iterdir())


def _evil_archive(path: Path, member: tarfile.TarInfo) -> Path:
    with tarfile.open(path, "w:bz2") as tf:
        ok = tarfile.TarInfo("LJSpeech-1.1/metadata.csv")
        ok.size = 0
        tf.addfile(ok)
        tf.addfile(member, None if member.size == 0 else io.BytesIO(b"x" * member.size))
    return path


@pytest.mark.parametrize(
    "kind, why",
    [("dotdot", "'..'"), ("absolute", "absolute"), ("symlink", "symlink"), ("hardlink", "hard link"), ("fifo", "fifo")],
)
def test_unsafe_archive_members_are_refused(tmp_path, kind, why):
    outside = tmp_path / "outside.txt"
    if kind == "dotdot":
        member = tarfile.TarInfo("../evil.txt")
    elif kind == "absolute":
        member = tarfile.TarInfo(str(outside))
    elif kind == "symlink":
        member = tarfile.TarInfo("LJSpeech-1.1/link")
        member.type, member.linkname = tarfile.SYMTYPE, "../../outside.txt"
    elif kind == "hardlink":
        member = tarfile.TarInfo("LJSpeech-1.1/hard")
        member.type, member.linkname = tarfile.LNKTYPE, "/etc/passwd"
    else:
        member = tarfile.TarInfo("LJSpeech-1.1/pipe")
        member.type = tarfile.FIFOTYPE
    if kind in ("dotdot", "absolute"):
        member.size = 4
    arc = _evil_archive(tmp_path / "evil.tar.bz2", member)
    with tarfile.open(arc) as tf:
        assert member.name in tf.getnames()  # the archive really holds the unsafe name
    dest = tmp_path / "dest"
    with pytest.raises(ValueError, match=f"unsafe archive member {member.name!r}.*{why}"):
        extract_archive(arc, dest)
    assert not outside.exists() and not (tmp_path / "evil.txt").exists()
