"""The conditional discrete video diffusion model and its rewards (models/diffusion.py)."""

from __future__ import annotations

import pytest
import torch

from models import diffusion
from models.diffusion import (
    EMA,
    DiffusionConfig,
    MaskReplaceSchedule,
    VideoDiffusion,
    condition_windows,
    log_one_hot,
    naive_entropy_reward,
    visited_timesteps,
)

K = 16  # codebook size of the synthetic token videos



def tiny_model(seed: int = 0, **overrides: object) -> VideoDiffusion:
    torch.manual_seed(seed)
    return VideoDiffusion(DiffusionConfig.preset("tiny", codebook_size=K, **overrides)).eval()


def random_tokens(*shape: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, K, shape, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------- schedule

def test_schedule_cumulative_probabilities_are_monotone_and_valid() -> None:
    s = MaskReplaceSchedule(K, 100)
    alpha_bar, gamma_bar = s.alpha_bar[1:], s.gamma_bar[1:]
    assert (alpha_bar.diff() < 0).all() and (gamma_bar.diff() > 0).all()
    assert alpha_bar[0] == pytest.approx(0.99999) and alpha_bar[-1] == pytest.approx(0.000009)
    assert gamma_bar[0] == pytest.approx(0.000009) and gamma_bar[-1] == pytest.approx(0.99999)
    for p in s.per_step():
        assert ((p >= 0) & (p <= 1)).all()
    alpha, gamma, beta = s.per_step()
    assert torch.allclose(alpha + gamma + K * beta, torch.ones(100, dtype=torch.float64))


def test_q_sample_masks_almost_everything_at_the_end_and_nothing_at_the_start() -> None:
    s = MaskReplaceSchedule(K, 100)
    x0 = random_tokens(64, 64)
    g = torch.Generator().manual_seed(0)
    late = s.q_sample(x0, torch.full((64,), 99), g)
    early = s.q_sample(x0, torch.zeros(64, dtype=torch.long), g)
    assert (late == K).float().mean() > 0.99
    assert (early == x0).float().mean() > 0.999


def brute_force_posterior(s: MaskReplaceSchedule, p0: torch.Tensor, x_t: int, t: int, sv: int) -> torch.Tensor:
    """sum_x0 p0(x0) q(x_s | x0) q(x_t | x_s) / q(x_t | x0) from dense (K+1)^2 matrices."""
    def matrix(a: int, b: int) -> torch.Tensor:  # M[j, i] = q(x_b = i | x_a = j)
        if b < 0:
            return torch.eye(K + 1, dtype=torch.float64)
        alpha, gamma, beta = (v.item() for v in s.transition(torch.tensor([a]), torch.tensor([b])))
        m = torch.full((K + 1, K + 1), beta, dtype=torch.float64)
        m += alpha * torch.eye(K + 1, dtype=torch.float64)
        m[:, K], m[K] = gamma, 0.0
        m[K, K] = 1.0
        return m
    to_s, s_to_t, to_t = matrix(-1, sv), matrix(sv, t) if sv >= 0 else matrix(-1, t), matrix(-1, t)
    post = sum(p0[x0] * to_s[x0] * s_to_t[:, x_t] / to_t[x0, x_t] for x0 in range(K))
    return post / post.sum()


@pytest.mark.parametrize(("t", "sv"), [(50, 49), (99, 89), (9, 0), (0, -1), (5, -1)])
def test_posterior_matches_bayes_rule_and_is_normalised(t: int, sv: int) -> None:
    s = MaskReplaceSchedule(K, 100)
    p0 = torch.softmax(torch.randn(K, generator=torch.Generator().manual_seed(t), dtype=torch.float64), 0)
    x_t = torch.arange(K + 1)[None]  # every class and [MASK]
    log_post = s.q_posterior(p0.log().float()[None, :, None].expand(1, K, K + 1), x_t,
                             torch.tensor([t]), torch.tensor([sv]))
    assert torch.allclose(log_post.logsumexp(dim=1), torch.zeros(1, K + 1), atol=1e-5)
    for v in range(K + 1):
        expected = brute_force_posterior(s, p0, v, t, sv)
        assert torch.allclose(log_post[0, :, v].exp().double(), expected, atol=1e-5)


@pytest.mark.parametrize("num_classes", [K, 1024])
def test_fast_posterior_equals_the_log_space_posterior(num_classes: int) -> None:
    s = MaskReplaceSchedule(num_classes, 100)
    g = torch.Generator().manual_seed(0)
    x0, t = torch.randint(0, num_classes, (24, 64), generator=g), torch.randint(0, 100, (24,), generator=g)
    sv = (t - torch.randint(1, 12, (24,), generator=g)).clamp(min=-1)
    x_t = s.q_sample(x0, t, g)
    x_t[0] = num_classes  # some rows all [MASK]
    sharp = torch.log_softmax(30 * torch.randn(24, num_classes, 64, generator=g), 1)  # p(x_t) ~ 1 happens
    for log_x0 in (torch.log_softmax(torch.randn(24, num_classes, 64, generator=g), 1), sharp,
                   log_one_hot(x0, num_classes)):
        fast, exact = s.q_posterior_fast(log_x0, x_t, t, sv), s.q_posterior(log_x0, x_t, t, sv)
        assert fast.shape == exact.shape
        assert torch.allclose(fast, exact, atol=1e-4)
        assert s.kl(exact, fast).abs().max() < 1e-5


def test_kl_terms_are_non_negative_and_zero_for_the_true_x0() -> None:
    s = MaskReplaceSchedule(K, 100)
    g = torch.Generator().manual_seed(0)
    x0, t = random_tokens(32, 64), torch.randint(1, 100, (32,), generator=g)
    x_t = s.q_sample(x0, t, g)
    log_q = s.q_posterior(log_one_hot(x0, K), x_t, t)
    log_p = s.q_posterior(torch.log_softmax(torch.randn(32, K, 64, generator=g), 1), x_t, t)
    assert (s.kl(log_q, log_p) >= -1e-5).all()
    assert s.kl(log_q, log_q).abs().max() < 1e-5
    assert 0.0 <= s.prior_kl() < 1e-3


def test_visited_timesteps_are_the_papers() -> None:
    assert visited_timesteps(100, 9) == [99, 89, 79, 69, 59, 49, 39, 29, 19, 9, 0]
    assert visited_timesteps(100, 0) == list(range(99, -1, -1))
    assert visited_timesteps(100, 20)[-2:] == [15, 0]


# --------------------------------------------------------------------------- config

def test_presets_and_config_round_trip() -> None:
    paper = DiffusionConfig.preset("paper")
    assert (paper.layers, paper.width, paper.heads, paper.codebook_size) == (16, 128, 16, 1024)
    with pytest.raises(ValueError, match="tiny.*cpu|cpu.*tiny"):
        DiffusionConfig.preset("huge")
    cfg = DiffusionConfig.preset("cpu", codebook_size=K, frame_skip=3)
    assert DiffusionConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="'widht'"):
        DiffusionConfig.from_dict({**cfg.to_dict(), "widht": 64})
    stored = cfg.to_dict()
    del stored["frame_skip"]  # a file that lacks a key is refused, not loaded with a default it was not trained with
    with pytest.raises(ValueError, match=r"video model config: .*missing keys \['frame_skip'\]"):
        DiffusionConfig.from_dict(stored)
    with pytest.raises(ValueError, match="heads"):
        DiffusionConfig(codebook_size=K, width=30, heads=4)
    with pytest.raises(ValueError, match="tokens_per_frame"):
        DiffusionConfig(codebook_size=K, tokens_per_frame=60)


# ----------------------------------------------------------------------- the model

def test_shapes_and_normalised_x0_prediction() -> None:
    model = tiny_model()
    cond, target = random_tokens(3, 2, 64), random_tokens(3, 64, seed=2)
    cache = model.denoiser.encode_condition(cond)
    log_x0 = model.denoiser(torch.full((3, 64), K), torch.tensor([99, 50, 0]), cache)
    assert log_x0.shape == (3, K, 64)
    assert torch.allclose(log_x0.logsumexp(dim=1), torch.zeros(3, 64), atol=1e-5)
    loss, logs = model.loss(cond, target)
    assert loss.shape == () and set(logs) == {"loss", "vlb", "x0_ce"}
    assert model.entropy_reward(cond, skip=30).shape == (3,)
    assert model.likelihood_reward(cond, target, skip=30).shape == (3,)


def test_swapping_the_condition_frames_changes_the_prediction() -> None:
    model = tiny_model()
    cond = random_tokens(2, 2, 64)
    x_t, t = random_tokens(2, 64, seed=3), torch.tensor([40, 40])
    swapped = cond.flip(1)
    enc = model.denoiser.encode_condition
    assert not torch.allclose(model.denoiser(x_t, t, enc(cond)), model.denoiser(x_t, t, enc(swapped)))
    # Without the frame-index embedding the history would be an unordered set.
    with torch.no_grad():
        model.denoiser.cond_frame_emb.weight.zero_()
    assert torch.allclose(model.denoiser(x_t, t, enc(cond)), model.denoiser(x_t, t, enc(swapped)), atol=1e-5)


def test_entropy_reward_is_seeded_per_history_and_averages_samples(monkeypatch) -> None:
    model = tiny_model()
    cond = random_tokens(4, 2, 64)
    assert torch.equal(model.entropy_reward(cond, seed=5), model.entropy_reward(cond, seed=5))
    assert torch.equal(model.entropy_reward(cond), model.entropy_reward(cond, seed=0))  # default seed
    assert not torch.allclose(model.entropy_reward(cond, seed=5), model.entropy_reward(cond, seed=6))
    # A history's noise is its own: the same reward alone, in any batch, at any row.
    batched = model.entropy_reward(torch.cat([cond, cond.flip(0)]), seed=5)
    alone = torch.cat([model.entropy_reward(c[None], seed=5) for c in cond])
    assert torch.allclose(batched[:4], alone, atol=1e-3) and torch.allclose(batched[4:], alone.flip(0), atol=1e-3)
    # num_samples = 3 runs 3 chains per frame in one batch and averages them: with the
    # seeds pinned, the chains are the rows of a 3x-repeated batch.
    monkeypatch.setattr(diffusion, "history_seeds", lambda c, seed, r=1: list(range(100, 100 + len(c) * r)))
    per_chain = model.entropy_reward(cond.repeat_interleave(3, dim=0))
    averaged = model.entropy_reward(cond, num_samples=3)
    assert torch.allclose(averaged, per_chain.view(4, 3).mean(dim=1), rtol=1e-4, atol=1e-3)


def test_history_seeds_depend_on_seed_and_tokens_only() -> None:
    cond = random_tokens(3, 2, 64)
    seeds = diffusion.history_seeds(cond, seed=1, num_samples=2)
    assert len(seeds) == 6 and len(set(seeds)) == 6 and all(0 <= s < 2**63 for s in seeds)
    assert seeds[2:4] == diffusion.history_seeds(cond[1:2], seed=1, num_samples=2)
    assert seeds != diffusion.history_seeds(cond, seed=2, num_samples=2)


def test_naive_reward_equals_cached_reward_and_cache_is_computed_once() -> None:
    model = tiny_model()
    cond = random_tokens(3, 2, 64)
    calls = {"encode": 0, "pass": 0}
    encode = model.denoiser.encode_condition

    def counting_encode(c: torch.Tensor):  # noqa: ANN202
        calls["encode"] += 1
        return encode(c)

    model.denoiser.encode_condition = counting_encode  # type: ignore[method-assign]
    model.denoiser.register_forward_hook(lambda *_: calls.__setitem__("pass", calls["pass"] + 1))
    cached = model.entropy_reward(cond, num_samples=2, seed=3)
    assert calls == {"encode": 1, "pass": 11}
    naive = naive_entropy_reward(model, cond, num_samples=2, seed=3)
    assert calls == {"encode": 12, "pass": 22}
    assert torch.equal(cached, naive)


def test_condition_windows_pad_with_the_first_frame() -> None:
    frames = torch.arange(6)[:, None].expand(6, 64)  # frame i is all token i
    cond, target = condition_windows(frames, condition_frames=2, frame_skip=2)
    assert cond.shape == (6, 2, 64) and torch.equal(target, frames)
    assert cond[:, :, 0].tolist() == [[0, 0], [0, 0], [0, 0], [0, 1], [0, 2], [1, 3]]
    cond, _ = condition_windows(frames, condition_frames=3, frame_skip=1)
    assert cond[:, :, 0].tolist()[:4] == [[0, 0, 0], [0, 0, 0], [0, 0, 1], [0, 1, 2]]


def test_bad_shapes_and_ids_are_refused_with_the_expected_shape() -> None:
    model = tiny_model()
    good_cond, good_target = random_tokens(2, 2, 64), random_tokens(2, 64)
    with pytest.raises(ValueError, match=r"\(N, 2, 64\)"):
        model.entropy_reward(random_tokens(2, 3, 64))
    with pytest.raises(ValueError, match=r"\(N, 2, 64\)"):
        model.loss(good_cond.float(), good_target)
    with pytest.raises(ValueError, match=r"\[0, 16\)"):
        model.entropy_reward(good_cond + K)
    with pytest.raises(ValueError, match=r"\[0, 16\)"):
        model.loss(good_cond, good_target - 1)
    with pytest.raises(ValueError, match=r"\(N=2, 64\)"):
        model.likelihood_reward(good_cond, random_tokens(3, 64))
    with pytest.raises(ValueError, match="num_samples"):
        model.entropy_reward(good_cond, num_samples=0)


def test_ema_tracks_and_copies_weights() -> None:
    model, other = tiny_model(0), tiny_model(1)
    ema = EMA(model, decay=0.999)
    ema.update(other)  # warm-up: the first update's decay is 1/10, not 0.999
    name, first = next(iter(model.state_dict().items()))
    assert torch.allclose(ema.shadow[name], 0.1 * first + 0.9 * other.state_dict()[name], atol=1e-6)
    for _ in range(10_000):
        ema.updates += 1  # long after warm-up the configured decay rules
    ema.update(model)
    expected = 0.999 * (0.1 * first + 0.9 * other.state_dict()[name]) + 0.001 * first
    assert torch.allclose(ema.shadow[name], expected, atol=1e-6)
    ema.copy_to(other)
    assert torch.equal(other.state_dict()[name], ema.shadow[name])
    restored = EMA(other, decay=0.9)
    restored.load_state_dict(ema.state_dict())
    assert restored.decay == 0.999 and restored.updates == 10_002
    assert torch.equal(restored.shadow[name], ema.shadow[name])


# ---------------------------------------------------------------------- learning

def shifting_video(frames: int) -> torch.Tensor:
    """A fixed random 8x8 token pattern moving one cell to the right per frame."""
    pattern = random_tokens(8, 8, seed=11)
    return torch.stack([pattern.roll(f, dims=1).flatten() for f in range(frames)])


def test_training_lowers_the_loss_and_expert_histories_get_higher_entropy_reward() -> None:
    model = tiny_model().train()
    cond, target = condition_windows(shifting_video(18), 2, 1)
    cond, target = cond[2:], target[2:]  # no padded windows: every history is a real shift
    g = torch.Generator().manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(300):
        batch = torch.randint(0, len(target), (16,), generator=g)
        loss, logs = model.loss(cond[batch], target[batch], g)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(logs["loss"])
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    print(f"loss {first:.3f} -> {last:.3f}")
    assert last < 0.2 * first, (first, last)

    expert = model.entropy_reward(cond[:8])
    random_history = model.entropy_reward(random_tokens(8, 2, 64, seed=5))
    print(f"entropy reward: expert {expert.mean():.2f}, random histories {random_history.mean():.2f}")
    assert expert.mean() > random_history.mean() + 10.0, (expert, random_history)
    observed = model.likelihood_reward(cond[:8], target[:8])
    wrong = model.likelihood_reward(cond[:8], random_tokens(8, 64, seed=6))
    assert (observed > wrong).all()
