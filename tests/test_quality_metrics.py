"""The copy-synthesis metrics and the Griffin-Lim baseline against cases whose answer is known by hand."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from _tolerance import eps, reduction_bound

from wavenet_dilated.audio import AudioConfig, load_audio
from wavenet_dilated.mel import MelStats, log_mel
from wavenet_dilated.quality import metrics as qm
from wavenet_dilated.quality.baseline import griffin_lim
from wavenet_dilated.quality.metrics import METRICS, copy_synthesis_metrics

SR = 22050
CONFIG = AudioConfig()
DEMO = Path(__file__).resolve().parents[1] / "wavenet_dilated" / "data" / "demo_corpus" / "wavs"
#: how far from 1 STOI of a signal with (a power-of-two multiple of) itself may be: a mean of correlation coefficients,
#: each a sum of N = 30 products of normalised envelopes; worst-case rounding n·u per sum plus the normalisation's few
#: operations (mean, norm, division) on each side, in float64
STOI_ROUNDING = eps(torch.float64) * (30 + 4)
#: wideband PESQ's best score: P.862.2's mapping of the best raw score 4.5 to MOS-LQO
PESQ_WB_MAX = 0.999 + 4.0 / (1.0 + math.exp(-1.3669 * 4.5 + 3.8224))


def speech(uid: str = "LJ-DEMO-0001", seconds: float = 2.0) -> np.ndarray:
    """A bundled utterance (espeak-ng speech), cut to whole hops."""
    x = load_audio(DEMO / f"{uid}.wav", SR)[: int(seconds * SR)]
    return x[: x.size - x.size % CONFIG.hop_length]


def harmonic(f0: float, seconds: float = 1.5, cents: float = 0.0) -> np.ndarray:
    """A voiced-speech-like tone: 8 harmonics of a slowly gliding f0 (raised by ``cents``) plus a noise floor that
    keeps every mel bin well above the log floor; whole hops."""
    n = int(seconds * SR) // CONFIG.hop_length * CONFIG.hop_length
    t = np.arange(n) / SR
    freq = f0 * 2.0 ** (cents / 1200.0) * (1.0 + 0.05 * np.sin(2 * np.pi * 0.5 * t))
    phase = 2 * np.pi * np.cumsum(freq) / SR
    x = sum(np.sin(k * phase) / k for k in range(1, 9)) * 0.2
    x += np.random.default_rng(0).standard_normal(n) * 1e-3
    return x.astype(np.float32)


def noise_at_snr(x: np.ndarray, snr_db: float) -> np.ndarray:
    n = np.random.default_rng(1).standard_normal(x.size)
    n *= math.sqrt(np.mean(x.astype(np.float64) ** 2) / np.mean(n**2)) * 10 ** (-snr_db / 20)
    return (x + n).astype(np.float32)


def test_identical_signals_score_perfectly():
    x = speech()
    m = copy_synthesis_metrics(x, x, SR, CONFIG)
    assert list(m) == [metric.name for metric in METRICS]
    assert m["mel_l1"] == 0.0 and m["mcd_db"] == 0.0  # the same float32 log-mel, computed once for both
    assert m["f0_rmse_cents"] == 0.0 and m["vuv_error"] == 0.0 and m["dead_silence"] == 0.0
    assert m["stoi"] == pytest.approx(1.0, abs=STOI_ROUNDING)
    # PESQ computes in float32: its best score up to rounding of the mapping's few operations
    assert m["pesq_wb"] == pytest.approx(PESQ_WB_MAX, abs=8 * eps(torch.float32) * PESQ_WB_MAX)


def test_gain_moves_mel_l1_by_its_log_and_leaves_the_rest():
    x = harmonic(150.0)
    raw = log_mel(torch.from_numpy(x), CONFIG)
    assert float(raw.min()) > math.log(2 * CONFIG.mel_floor)  # no bin reaches the floor, even halved
    m = copy_synthesis_metrics(x, 0.5 * x, SR, CONFIG)
    # halving is exact in binary floating point, so the STFT and mel scale exactly: the log-mels differ by ln 2 up to
    # the float32 rounding of each log (half an eps of its magnitude, in each of the two)
    top = float(raw.abs().max())
    assert m["mel_l1"] == pytest.approx(math.log(2.0), abs=eps(torch.float32) * top)
    # a constant offset lies in c0 only (the DCT of a constant), which MCD leaves out: what remains is the rounding,
    # an orthonormal transform of a vector of n_mels entries of at most eps * top each
    rounding = eps(torch.float32) * top * math.sqrt(CONFIG.n_mels)
    assert m["mcd_db"] <= 10 / math.log(10) * math.sqrt(2 * qm.MCD_N_COEFFS) * rounding
    assert m["f0_rmse_cents"] == 0.0 and m["vuv_error"] == 0.0 and m["dead_silence"] == 0.0
    assert m["stoi"] == pytest.approx(1.0, abs=STOI_ROUNDING)  # level-invariant: halving scales every sum exactly
    assert m["pesq_wb"] == pytest.approx(PESQ_WB_MAX, abs=8 * eps(torch.float32) * PESQ_WB_MAX)  # level-aligned


def test_more_noise_scores_worse_on_every_spectral_and_perceptual_metric():
    x = speech()
    rows = [copy_synthesis_metrics(x, noise_at_snr(x, snr), SR, CONFIG) for snr in (30.0, 15.0, 0.0)]
    for name in ("mel_l1", "mcd_db"):
        values = [r[name] for r in rows]
        assert 0 < values[0] < values[1] < values[2], (name, values)
    for name in ("stoi", "pesq_wb"):
        values = [r[name] for r in rows]
        assert values[0] > values[1] > values[2], (name, values)


def test_a_delay_scores_worse_the_longer_it_is():
    x = speech()
    rows = [copy_synthesis_metrics(x, np.concatenate([np.zeros(d, np.float32), x[: x.size - d]]), SR, CONFIG)
            for d in (0, CONFIG.hop_length, 4 * CONFIG.hop_length)]
    for name in ("mel_l1", "mcd_db"):
        values = [r[name] for r in rows]
        assert values[0] == 0 < values[1] < values[2], (name, values)
    stoi = [r["stoi"] for r in rows]
    assert stoi[0] > stoi[1] > stoi[2]


@pytest.mark.parametrize("cents", [100.0, 300.0])
def test_f0_rmse_of_a_shifted_pitch_is_the_shift(cents):
    m = qm.f0_metrics(harmonic(140.0), harmonic(140.0, cents=cents), SR, CONFIG)
    # pyin's estimates lie on a grid of F0_RESOLUTION semitones: each is within half a step of its tone's pitch,
    # so their difference is within one step (100 cents per semitone) of the shift
    assert m["f0_rmse_cents"] == pytest.approx(cents, abs=qm.F0_RESOLUTION * 100)
    assert m["vuv_error"] == 0.0


def test_vuv_error_counts_frames_where_voicing_differs():
    x = harmonic(140.0)
    y = x.copy()
    hop = qm.pitch_hop_length(CONFIG)
    n = x.size // hop
    y[: (n // 2) * hop] = 0.0
    m = qm.f0_metrics(x, y, SR, CONFIG)
    # the first half is silent, so unvoiced: half of the frames disagree, give or take the frames whose pyin window
    # (centred) straddles the boundary
    straddle = qm.pitch_frame_length(SR) / hop
    assert abs(m["vuv_error"] - (n // 2) / n) <= straddle / n


def test_dead_silence_is_the_share_of_sounding_frames_zeroed():
    x = harmonic(140.0)  # every frame sounds
    hop, n = CONFIG.hop_length, x.size // CONFIG.hop_length
    y = x.copy()
    y[10 * hop : 17 * hop] = 0.0  # 7 whole frames of digital silence
    assert qm.dead_silence(x, y, SR, CONFIG) == pytest.approx(7 / n, abs=0)
    quiet = y.copy()
    quiet[10 * hop : 17 * hop] = x[10 * hop : 17 * hop] * 1e-2  # 40 dB down but not dead (about -43 dBFS)
    assert qm.dead_silence(x, quiet, SR, CONFIG) == 0.0


def test_a_noise_floor_replaced_by_digital_silence_is_dead():
    clean = speech()  # espeak-ng: digital silence between words
    recorded = noise_at_snr(clean, 30.0)  # a room-noise floor everywhere
    hop = CONFIG.hop_length
    blocks = clean[: clean.size // hop * hop].reshape(-1, hop).astype(np.float64)
    silent = np.sqrt((blocks**2).mean(axis=1)) < 10 ** (qm.DEAD_SILENCE_DBFS / 20)
    assert silent.any()
    # every frame of the recording sounds (the floor is above -60 dBFS), so the dead share is the share of frames
    # where the clean signal is silent
    floor_db = 20 * math.log10(float(np.std(recorded - clean)))
    assert floor_db > qm.MIN_SIGNAL_DBFS
    assert qm.dead_silence(recorded, clean, SR, CONFIG) == pytest.approx(silent.mean(), abs=0)
    assert qm.dead_silence(clean, recorded, SR, CONFIG) == 0.0


def test_silent_and_short_signals_give_nan_not_errors():
    x = speech()
    zeros = np.zeros_like(x)
    dead = copy_synthesis_metrics(x, zeros, SR, CONFIG)
    assert math.isnan(dead["stoi"]) and math.isnan(dead["pesq_wb"]) and math.isnan(dead["f0_rmse_cents"])
    assert dead["dead_silence"] == 1.0 and dead["mel_l1"] > 0
    silent = copy_synthesis_metrics(zeros, zeros, SR, CONFIG)
    for name in ("mcd_db", "stoi", "pesq_wb", "f0_rmse_cents", "dead_silence"):
        assert math.isnan(silent[name]), name
    short = copy_synthesis_metrics(x[:300], x[:300], SR, CONFIG)  # one hop: too short for STOI, PESQ, pyin
    assert short["mel_l1"] == 0.0
    for name in ("stoi", "pesq_wb", "f0_rmse_cents", "vuv_error"):
        assert math.isnan(short[name]), name
    empty = copy_synthesis_metrics(x[:100], x[:100], SR, CONFIG)  # no whole frame at all
    assert all(math.isnan(v) for v in empty.values())


def test_mean_metrics_skips_nan():
    rows = [dict.fromkeys((m.name for m in METRICS), math.nan), {m.name: 1.0 for m in METRICS},
            {m.name: 3.0 for m in METRICS}]
    assert qm.mean_metrics(rows) == {m.name: 2.0 for m in METRICS}
    assert all(math.isnan(v) for v in qm.mean_metrics(rows[:1]).values())


@pytest.mark.parametrize(
    ("reference", "estimate", "match"),
    [
        (np.zeros(512, np.float32), np.zeros(256, np.float32), "same length"),
        (np.zeros((2, 512), np.float32), np.zeros((2, 512), np.float32), "shape"),
        (np.zeros(512, np.int16), np.zeros(512, np.int16), "floating-point"),
        (np.full(512, np.nan, np.float32), np.zeros(512, np.float32), "NaN"),
    ],
)
def test_bad_signals_are_refused_with_a_clear_message(reference, estimate, match):
    with pytest.raises(ValueError, match=match):
        copy_synthesis_metrics(reference, estimate, SR)


def test_audio_config_at_another_rate_is_refused():
    x = harmonic(140.0, seconds=0.2)
    with pytest.raises(ValueError, match="16000 Hz"):
        copy_synthesis_metrics(x, x, 16000, CONFIG)
    assert copy_synthesis_metrics(x, x, 16000)["mel_l1"] == 0.0  # None: the default representation at that rate


@pytest.mark.parametrize("module", ["pystoi", "pesq"])
def test_a_missing_metric_library_names_the_extra(monkeypatch, module):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` raise ImportError
    x = speech(seconds=1.0)
    with pytest.raises(ImportError, match=r'pip install -e "\.\[eval\]"') as caught:
        copy_synthesis_metrics(x, x, SR)
    assert isinstance(caught.value, qm.MissingEvalDependency)


# --------------------------------------------------------------------------------------------------- Griffin-Lim


def test_griffin_lim_is_the_mel_length_and_repeatable():
    x = speech(seconds=1.0)
    mel = log_mel(torch.from_numpy(x), CONFIG)
    a, b = griffin_lim(mel, CONFIG, None, n_iter=8), griffin_lim(mel, CONFIG, None, n_iter=8)
    assert a.shape == (mel.shape[1] * CONFIG.hop_length,) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert np.abs(a).max() <= 1.0
    assert not np.array_equal(a, griffin_lim(mel, CONFIG, None, n_iter=8, seed=1))


def test_griffin_lim_undoes_the_normalisation():
    x = speech(seconds=1.0)
    mel = log_mel(torch.from_numpy(x), CONFIG).double()
    stats = MelStats.fit([mel])
    plain = griffin_lim(mel, CONFIG, None, n_iter=4)
    normalised = griffin_lim(stats.normalize(mel), CONFIG, stats, n_iter=4)
    # the round trip (mel - mean) / std * std + mean in float64, then the same float32 Griffin-Lim: the inputs differ
    # by float64 rounding, far below what float32 Griffin-Lim resolves; compare at float32 precision of the output
    bound = float(reduction_bound(float(np.abs(plain).max()) * 4, CONFIG.n_fft * 4, torch.float32))
    np.testing.assert_allclose(normalised, plain, rtol=0, atol=bound)


def test_griffin_lim_reproduces_the_mel_far_better_than_noise():
    x = speech()
    gl = griffin_lim(log_mel(torch.from_numpy(x), CONFIG), CONFIG, None)
    noise = np.random.default_rng(3).standard_normal(x.size).astype(np.float32) * float(np.std(x))
    assert qm.mel_l1(x, gl, SR, CONFIG) < qm.mel_l1(x, noise, SR, CONFIG) / 4
    assert qm.stoi(x, gl, SR) > qm.stoi(x, noise, SR)


@pytest.mark.parametrize(
    ("mel", "match"),
    [(torch.zeros(40, 10), r"\(80, frames\)"), (torch.zeros(80, 0), "frames >= 1"),
     (torch.full((80, 4), float("nan")), "NaN")],
)
def test_griffin_lim_refuses_a_bad_mel(mel, match):
    with pytest.raises(ValueError, match=match):
        griffin_lim(mel, CONFIG, None)


def test_docstring_examples_hold():
    import doctest

    from wavenet_dilated.quality import baseline

    for module in (qm, baseline):
        result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
        assert result.attempted > 0 and result.failed == 0, module.__name__
