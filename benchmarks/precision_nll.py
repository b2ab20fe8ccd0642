"""Held-out NLL of a trained checkpoint with each weight precision of the compiled loop: the teacher-forced logits of
``fast_logits(..., precision=…)`` on the validation utterances of the training corpus, in bits per sample, and the
change from fp32 (the bound of issue 15 is +0.02 bits/sample).

Example:
    python -m recipes.train_ljspeech --preset demo --out-dir /tmp/run
    python benchmarks/precision_nll.py /tmp/run/checkpoints/best.pt --corpus wavenet_dilated/data/demo_corpus \
        --val-fraction 0.1
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from wavenet_dilated.generation.fast import fast_logits
from wavenet_dilated.generation.precision import PRECISIONS
from wavenet_dilated.mulaw import mu_law_encode
from wavenet_dilated.quality.evaluate import corpus_utterances
from wavenet_dilated.vocoder import Vocoder


def nll_bits(vocoder: Vocoder, wav: Path, precision: str, max_seconds: float) -> tuple[float, int]:
    """Summed NLL (bits) of one utterance's samples and how many there are."""
    model, hop = vocoder.model, vocoder.model.config.hop_length
    audio = torch.from_numpy(vocoder.prepare(wav))
    mel = vocoder.mel(wav)
    frames = min(mel.shape[1], int(max_seconds * vocoder.audio_config.sample_rate) // hop)
    audio, mel = audio[: frames * hop], mel[None, :, :frames]
    if model.head.quantized:
        target = mu_law_encode(audio, model.config.n_classes)[None]
    else:
        target = audio[None].float()
    logits = fast_logits(model, model.shift_right(target), mel, precision=precision)
    if model.head.quantized:
        nats = F.cross_entropy(logits[0].T, target[0], reduction="sum").item()
    else:
        nats = model.head.loss(logits, target).item() * target.numel()
    return nats / math.log(2), target.numel()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--corpus", type=Path, required=True, help="the training corpus directory")
    p.add_argument("--split", default="val")
    p.add_argument("--val-fraction", type=float, default=0.02, help="the training run's (demo preset: 0.1)")
    p.add_argument("--max-seconds", type=float, default=4.0, help="per utterance (default 4)")
    args = p.parse_args()
    torch.set_num_threads(2)
    vocoder = Vocoder.from_checkpoint(args.checkpoint)
    utterances = corpus_utterances(args.corpus, args.split, val_fraction=args.val_fraction)
    print(f"{args.checkpoint}: {len(utterances)} {args.split} utterances, first {args.max_seconds} s of each")
    result = {}
    for precision in PRECISIONS:
        bits, n = 0.0, 0
        for u in utterances:
            b, k = nll_bits(vocoder, Path(u.wav_path), precision, args.max_seconds)
            bits, n = bits + b, n + k
        result[precision] = bits / n
        change = "" if precision == "fp32" else f"  ({result[precision] - result['fp32']:+.4f} vs fp32)"
        print(f"  {precision}: {result[precision]:.4f} bits/sample over {n} samples{change}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
