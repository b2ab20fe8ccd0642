import math

import pytest
import torch

from tests._tolerance import assert_close_derived, eps
from wavenet_dilated.nn.heads import Categorical, DiscretizedMixtureLogistics, Gaussian, nats_to_bits


def test_categorical_loss_matches_direct_computation():
    torch.manual_seed(0)
    logits, target = torch.randn(2, 7, 5), torch.randint(0, 7, (2, 5))
    p = torch.softmax(logits, dim=1)
    direct = -torch.log(p.gather(1, target[:, None]))[:, 0].mean()
    # −log p = logsumexp(z) − z_t either way: the sum of 7 exponentials (√7 roundings of a relative eps, a few more
    # for exp and log) and the subtraction, whose rounding scales with |z_t| + |logsumexp(z)|; the mean of 10 adds
    # √10 relative roundings of the mean
    lse = torch.logsumexp(logits, dim=1)
    z_t = logits.gather(1, target[:, None])[:, 0]
    per_sample = eps(torch.float32) * ((math.sqrt(7) + 4) + 2 * (z_t.abs() + lse.abs()))
    bound = per_sample.mean() + eps(torch.float32) * math.sqrt(10) * direct.abs()
    assert_close_derived(Categorical(7).loss(logits, target), direct, bound, "categorical loss")
    # zero logits: log(256) (one rounding of log, ≤ an ulp or so), the mean of 3 equal values (√3), /ln 2 in float64
    bits = nats_to_bits(Categorical(256).loss(torch.zeros(1, 256, 3), target[:1, :3]).item())
    assert abs(bits - 8.0) <= 8.0 * eps(torch.float32) * (2 + math.sqrt(3))


def test_categorical_sampling_frequencies():
    head = Categorical(4)
    logits = torch.log(torch.tensor([[0.1, 0.2, 0.3, 0.4]])).expand(50000, 4)
    s = head.sample(logits, torch.rand(50000, 1, generator=torch.Generator().manual_seed(0)))
    freq = torch.bincount(s, minlength=4).float() / 50000
    p = torch.tensor([0.1, 0.2, 0.3, 0.4])
    # a statistical bound, not a rounding one: five binomial standard deviations of a frequency over 50000 draws
    assert_close_derived(freq, p, 5 * (p * (1 - p) / 50000).sqrt(), "sampled frequencies")
    assert s.min() >= 0 and s.max() <= 3


def logistic_cdf(x, mu, s):
    return 1 / (1 + math.exp(-(x - mu) / s))


def test_mol_loss_matches_direct_cdf_differences():
    torch.manual_seed(1)
    K, n_classes = 3, 256
    head = DiscretizedMixtureLogistics(K, n_classes)
    logits = torch.randn(1, 3 * K, 6, dtype=torch.float64)
    logits[:, 2 * K :] = logits[:, 2 * K :] * 0.5 - 2.0  # log scales around -2: bins resolvable
    levels = torch.tensor([[-1.0, -0.5, 0.0, 0.3, 0.999, 1.0]], dtype=torch.float64)
    half = 1 / (n_classes - 1)
    ours = head.log_prob(logits, levels)[0]
    for t in range(6):
        pis = torch.softmax(logits[0, :K, t], 0)
        x = levels[0, t].item()
        total = magnitude = reach = 0.0
        for k in range(K):
            mu, s = logits[0, K + k, t].item(), math.exp(logits[0, 2 * K + k, t].item())
            hi = 1.0 if x > 0.999 else logistic_cdf(x + half, mu, s)
            lo = 0.0 if x < -0.999 else logistic_cdf(x - half, mu, s)
            total += pis[k].item() * (hi - lo)
            magnitude += pis[k].item() * (hi + lo)
            reach = max(reach, (abs(x - mu) + half) / s)
        # Each σ((x ± Δ − μ)/s) is off by a few eps relative, plus eps·|argument| from rounding the argument (s is
        # exp(log s) here and exp(−log s) there); the bin's mass is a difference of two of them, which loses the
        # ratio magnitude/total; log, the log-softmax weights and logsumexp add a few eps absolute (and eps·|log|).
        rel = eps(torch.float64) * ((2 * reach + 4) * magnitude / total)
        bound = rel + eps(torch.float64) * (4 + 2 * abs(math.log(total)))
        assert abs(ours[t].item() - math.log(total)) <= bound, (t, ours[t].item(), math.log(total), bound)
    # the same log-probabilities, averaged twice: the means may round differently by √6 eps of the mean magnitude
    assert_close_derived(head.loss(logits, levels), -ours.mean(),
                         2 * eps(torch.float64) * math.sqrt(6) * ours.abs().mean(), "MoL loss")


def test_mol_sampling_in_range_and_centred():
    head = DiscretizedMixtureLogistics(2, 65536)
    logits = torch.tensor([[5.0, -5.0, 0.25, -0.5, -4.0, -4.0]]).expand(20000, 6)
    s = head.sample(logits, torch.rand(20000, 2, generator=torch.Generator().manual_seed(0)))
    assert s.min() >= -1 and s.max() <= 1
    assert abs(s.mean().item() - 0.25) < 0.01  # the dominant component's mean


def test_gaussian_loss_and_sampling():
    head = Gaussian()
    logits = torch.tensor([[[0.1, -0.2]], [[math.log(0.3), math.log(0.05)]]]).permute(1, 0, 2)  # (1, 2, 2)
    target = torch.tensor([[0.0, -0.25]])
    sigma = torch.tensor([0.3, 0.05])
    ref = -torch.distributions.Normal(torch.tensor([0.1, -0.2]), sigma).log_prob(target[0]).mean()
    # z = (x − μ)/σ with σ = exp(log σ) here and σ itself there: z is off by eps·(|log σ| + 3) relative, so z²/2 by
    # twice that times z²/2; log σ and the constant are added with a few more roundings; then the mean of 2
    z = (target[0] - torch.tensor([0.1, -0.2])) / sigma
    per_sample = eps(torch.float32) * ((2 * sigma.log().abs() + 6) * z.square() / 2 + 2 * sigma.log().abs() + 4)
    assert_close_derived(head.loss(logits, target), ref, per_sample.mean() + eps(torch.float32) * ref.abs(),
                         "Gaussian loss")
    samples = head.sample(torch.tensor([[0.2, math.log(0.1)]]).expand(20000, 2),
                          torch.rand(20000, 1, generator=torch.Generator().manual_seed(0)))
    assert abs(samples.mean().item() - 0.2) < 0.005 and abs(samples.std().item() - 0.1) < 0.005


def test_bad_targets_and_temperature():
    with pytest.raises(ValueError, match="int64"):
        Categorical(4).loss(torch.zeros(1, 4, 2), torch.zeros(1, 2))
    with pytest.raises(ValueError, match="floats"):
        DiscretizedMixtureLogistics(2).loss(torch.zeros(1, 6, 2), torch.zeros(1, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="temperature"):
        Categorical(4).sample(torch.zeros(1, 4), torch.rand(1, 1), temperature=-1)
