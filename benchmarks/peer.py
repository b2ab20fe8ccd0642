"""Side-by-side speed against the best-known open PyTorch WaveNet vocoder, in one run on one machine.

The peer is r9y9/wavenet_vocoder; get it with ``git clone https://github.com/r9y9/wavenet_vocoder`` and pass the clone's
directory (the one holding the ``wavenet_vocoder`` package) with ``--peer``. Nothing of it is installed or changed: it
is imported from that path, and the small compatibility notes for current torch are handled here.

Both sides build the ``ljspeech`` sizes (30 layers in 3 stacks, kernel 3, residual 128, gate 256, skip 128, 80 mel
bins, hop 256, μ-law 256 classes, random weights) and measure, interleaved (A, B, A, B, … so that a change in the
machine's load hits both alike), medians of ``--repeats`` calls after one warm-up:

* generation at batch 1: the peer's ``incremental_forward`` (after its own ``make_generation_fast_``) against
  ``fast_generate`` with each backend asked for (default: ``torch``, the plain-PyTorch fallback, and ``reference``;
  add ``cpp`` for the compiled kernel);
* training: one forward + backward + Adam step on ``--train-batch`` × ``--train-length`` samples (default 2 × 8192):
  the peer's ``forward`` on one-hot input with a cross-entropy loss, against this package's training loss
  (:func:`wavenet_dilated.train.fused_loss.training_loss`, fused) in fp32 and, where asked, bf16 autocast.

    python benchmarks/peer.py --peer ~/src/wavenet_vocoder
    python benchmarks/peer.py --peer ~/src/wavenet_vocoder --backends torch cpp --threads 2 --json peer.json

``--json FILE`` writes the peer's numbers as ``{"targets": [{"measure", "target", "measured"}, …]}`` rows, the
shape ``wavenet-dilated bench --peer FILE`` reads, plus every measurement of the run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

# the package is importable from a checkout without installing it
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

import wavenet_dilated.runtime as RUNTIME  # noqa: E402  (imports no torch)

RUNTIME.apply_runtime_env()

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from wavenet_dilated.bench.machine import machine_info  # noqa: E402
from wavenet_dilated.presets import model_preset  # noqa: E402
from wavenet_dilated.wavenet import WaveNet  # noqa: E402

PRESET = "ljspeech"
#: the peer's ``ConvInUpsampleNetwork`` reads ``CIN_PAD`` extra mel frames on each side (its LJSpeech recipe's value)
CIN_PAD = 2


def load_peer(path: Path):
    """The peer's ``WaveNet`` class, imported from the clone at ``path``."""
    package = path / "wavenet_vocoder"
    if not (package / "wavenet.py").is_file():
        raise SystemExit(f"peer.py: error: {path} holds no wavenet_vocoder/wavenet.py; pass the directory of a clone of "
                         "https://github.com/r9y9/wavenet_vocoder")
    version = package / "version.py"  # written by the peer's setup.py; a plain clone may lack it
    if not version.is_file():
        raise SystemExit(f"peer.py: error: {version} is missing (run the peer's `python setup.py --version` once, or "
                         "create it with: version = '0.2.0')")
    sys.path.insert(0, str(path))
    warnings.filterwarnings("ignore", category=FutureWarning)  # torch.nn.utils.weight_norm, non-full backward hooks
    from wavenet_vocoder import WaveNet as PeerWaveNet

    return PeerWaveNet


def peer_model(peer_cls):
    """The peer at the ``ljspeech`` sizes, as its LJSpeech μ-law recipe configures it (no dropout)."""
    c = model_preset(PRESET)
    return peer_cls(out_channels=c.n_classes, layers=c.n_layers, stacks=c.n_stacks,
                    residual_channels=c.residual_channels, gate_channels=c.gate_channels,
                    skip_out_channels=c.skip_channels, kernel_size=c.kernel_size, dropout=0.0,
                    cin_channels=c.cond_channels, gin_channels=-1, upsample_conditional_features=True,
                    upsample_net="ConvInUpsampleNetwork",
                    upsample_params={"upsample_scales": list(c.upsample_scales), "cin_pad": CIN_PAD,
                                     "cin_channels": c.cond_channels},
                    scalar_input=False, cin_pad=CIN_PAD)


def interleaved(calls: dict[str, Callable[[], float]], repeats: int,
                warm_up: dict[str, float] | None = None) -> dict[str, list[float]]:
    """Each call once as a warm-up (its seconds stored in ``warm_up`` when given), then ``repeats`` rounds of every
    call in turn; per name the measured values."""
    for k, fn in calls.items():
        t0 = time.perf_counter()
        fn()
        if warm_up is not None:
            warm_up[k] = time.perf_counter() - t0
    out: dict[str, list[float]] = {k: [] for k in calls}
    for _ in range(repeats):
        for k, fn in calls.items():
            out[k].append(fn())
    return out


def generation_calls(peer_cls, backends: list[str], n: int) -> dict[str, Callable[[], float]]:
    """Samples/s of one batch-1 generation of ``n`` samples, per method."""
    from wavenet_dilated.generation import fast as fastgen

    c = model_preset(PRESET)
    torch.manual_seed(0)
    ours = WaveNet(c).eval()
    peer = peer_model(peer_cls).eval()
    peer.make_generation_fast_()
    frames = n // c.hop_length
    mel = torch.randn(1, c.cond_channels, frames)
    peer_mel = torch.randn(1, c.cond_channels, frames + 2 * CIN_PAD)

    def timed(fn) -> float:
        t0 = time.perf_counter()
        fn()
        return frames * c.hop_length / (time.perf_counter() - t0)

    calls = {"peer incremental_forward": lambda: timed(lambda: _peer_generate(peer, peer_mel, frames * c.hop_length))}
    for b in backends:
        calls[f"fast_generate backend={b}"] = lambda b=b: timed(lambda: fastgen.fast_generate(ours, mel=mel, seed=0,
                                                                                               backend=b))
    return calls


@torch.no_grad()
def _peer_generate(peer, mel: torch.Tensor, n: int) -> torch.Tensor:
    return peer.incremental_forward(c=mel, T=n, softmax=True, quantize=True)


def training_calls(peer_cls, batch: int, length: int, amp: list[str],
                   compiled: bool = False) -> dict[str, Callable[[], float]]:
    """Samples/s of one forward + backward + Adam step, per method (``compiled``: also our fp32 loss through
    ``torch.compile``, as ``TrainConfig.compile`` runs it; compiled in the warm-up call)."""
    from wavenet_dilated.train.fused_loss import LossModule, training_loss

    c = model_preset(PRESET)
    torch.manual_seed(0)
    ours = WaveNet(c).train()
    peer = peer_model(peer_cls).train()
    audio = torch.randint(0, c.n_classes, (batch, length))
    mel = torch.randn(batch, c.cond_channels, length // c.hop_length)
    peer_mel = torch.randn(batch, c.cond_channels, length // c.hop_length + 2 * CIN_PAD)
    peer_in = F.one_hot(audio, c.n_classes).float().transpose(1, 2).contiguous()  # the peer's one-hot input
    opt_ours, opt_peer = torch.optim.Adam(ours.parameters(), 1e-4), torch.optim.Adam(peer.parameters(), 1e-4)

    def step(opt, loss_fn) -> float:
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss_fn().backward()
        opt.step()
        return batch * length / (time.perf_counter() - t0)

    def peer_loss() -> torch.Tensor:
        logits = peer(peer_in, c=peer_mel)  # (B, classes, T): output t predicts input t + 1
        return F.cross_entropy(logits[:, :, :-1], audio[:, 1:])

    def our_loss(mode: str) -> torch.Tensor:
        if mode == "bf16":
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return training_loss(ours, audio, mel, fused=True)
        return training_loss(ours, audio, mel, fused=True)

    calls = {"peer forward+backward+Adam": lambda: step(opt_peer, peer_loss)}
    for mode in amp:
        calls[f"ours fused loss {mode}"] = lambda mode=mode: step(opt_ours, lambda: our_loss(mode))
    if compiled:
        net = torch.compile(LossModule(ours, fused=True))
        calls["ours fused loss fp32 compiled"] = lambda: step(opt_ours, lambda: net(audio, mel))
    return calls


def report(name: str, values: dict[str, list[float]], peer_key: str) -> dict[str, dict[str, float]]:
    """Print one block of medians (and their ratio to the peer); return them."""
    print(f"\n{name} (samples/s, median of {len(next(iter(values.values())))}, interleaved)")
    peer = statistics.median(values[peer_key])
    out = {}
    for k, v in values.items():
        med = statistics.median(v)
        out[k] = {"median": med, "all": v, "vs_peer": med / peer}
        print(f"  {k:<36} {med:>10,.1f}   x{med / peer:5.2f} of the peer   ({', '.join(f'{x:,.0f}' for x in v)})")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--peer", type=Path, required=True, help="a clone of https://github.com/r9y9/wavenet_vocoder")
    p.add_argument("--backends", nargs="+", default=["torch", "reference"],
                   help="fast_generate backends to measure (default: torch reference)")
    p.add_argument("--samples", type=int, default=2048, help="samples per generation call (default 2048)")
    p.add_argument("--repeats", type=int, default=5, help="measured rounds (default 5)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--train-batch", type=int, default=2)
    p.add_argument("--train-length", type=int, default=8192)
    p.add_argument("--train-repeats", type=int, default=3)
    p.add_argument("--amp", nargs="*", default=["fp32"], choices=["fp32", "bf16"],
                   help="our training precisions to measure (default fp32)")
    p.add_argument("--compile", action="store_true",
                   help="also measure our fp32 training loss through torch.compile (compiling takes minutes)")
    p.add_argument("--no-generation", dest="generation", action="store_false")
    p.add_argument("--no-training", dest="training", action="store_false")
    p.add_argument("--json", type=Path, help="write the results and the peer's target rows here")
    args = p.parse_args(argv)
    peer_cls = load_peer(args.peer.expanduser())
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    machine = machine_info()
    print(f"CPU: {machine['cpu']} ({machine['cores']} cores; kernel ISA {machine['isa']}); torch {machine['torch']}, "
          f"{machine['torch_threads']} thread(s); load average before: {os.getloadavg()[0]:.2f}")
    result: dict = {"machine": machine, "load_before": os.getloadavg()}
    rows = []
    if args.generation:
        values = interleaved(generation_calls(peer_cls, args.backends, args.samples), args.repeats)
        result["generation"] = report(f"{PRESET} generation, batch 1, {args.samples} samples per call", values,
                                      "peer incremental_forward")
        rows.append({"measure": f"{PRESET} generation, batch 1", "target": None,
                     "measured": result["generation"]["peer incremental_forward"]["median"]})
    if args.training:
        warm_up: dict[str, float] = {}
        values = interleaved(training_calls(peer_cls, args.train_batch, args.train_length, args.amp, args.compile),
                             args.train_repeats, warm_up)
        name = f"{PRESET} training, {args.train_batch} x {args.train_length}"
        result["training"] = report(name, values, "peer forward+backward+Adam")
        print("  first call (s; a compiled one includes its compilation): "
              + ", ".join(f"{k} {v:.1f}" for k, v in warm_up.items()))
        for k, v in warm_up.items():
            result["training"][k]["first_call_s"] = v
        rows.append({"measure": name, "target": None,
                     "measured": result["training"]["peer forward+backward+Adam"]["median"]})
    result["load_after"] = os.getloadavg()
    print(f"\nload average after: {result['load_after'][0]:.2f}")
    if args.json is not None:
        # ``target`` must be non-null for ``bench --peer`` to read a row: these are the peer's own numbers
        result["targets"] = [dict(r, target=r["measured"]) for r in rows]
        args.json.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
