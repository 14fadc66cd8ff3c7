"""Training entry points on episodes the stack records itself (tiny presets)."""

import math

import pytest
import torch

from models.checkpoint import load_checkpoint
from models.train import load_codec, train_codec
from sim.record import record_episodes


@pytest.fixture(scope="module")
def episodes(tmp_path_factory):
    root = tmp_path_factory.mktemp("episodes")
    for task in ("sim:reach", "sim:push"):
        record_episodes(task, "expert", range(5), root, image_size=(96, 128), progress=False)
    return root


def test_codec_trains_resumes_and_evaluates(episodes, tmp_path):
    first = train_codec(episodes, tmp_path, "tiny", steps=30, progress=False)
    assert first["steps"] == 30 and first["train_episodes"] >= 5
    assert load_checkpoint(first["checkpoint"]).step == 30
    resumed = train_codec(episodes, tmp_path, "tiny", steps=60, progress=False)
    assert resumed["steps"] == 60  # continued from 30, not restarted
    assert (tmp_path / "tensorboard" / "codec").is_dir()
    if resumed["test_l1"] is not None:
        assert resumed["test_l1"] < 1.0 and (tmp_path / "codec_reconstructions.png").is_file()
        assert 0.0 <= resumed["test_foreground_l1"] <= 2.0
    model, ckpt = load_codec(first["checkpoint"], preset="tiny")
    assert ckpt.kind == "codec" and model.encode(torch.zeros(1, 3, 64, 64)).shape == (1, 8, 8)


def test_codec_refuses_other_data_and_presets(episodes, tmp_path):
    train_codec(episodes, tmp_path, "tiny", steps=2, progress=False, tasks=["sim:reach"])
    with pytest.raises(ValueError, match="trained on other episodes"):
        train_codec(episodes, tmp_path, "tiny", steps=4, progress=False, tasks=["sim:push"])
    with pytest.raises(ValueError, match="expected preset 'cpu'"):
        load_codec(tmp_path / "codec.ckpt", preset="cpu")
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        train_codec(episodes, tmp_path / "other", "huge", progress=False)


def test_video_model_trains_and_scores_episodes(episodes, tmp_path):
    import numpy as np

    from models.data import load_frames, select_episodes
    from models.reward_model import DiffusionReward
    from models.rewards import REWARD_KINDS, episode_windows
    from models.train import train_video

    codec = train_codec(episodes, tmp_path / "codec", "tiny", steps=20, progress=False)
    result = train_video(episodes, tmp_path / "video", codec["checkpoint"], "tiny", steps=40, progress=False)
    assert result["steps"] == 40
    assert all(result["reward_stats"][kind]["std"] > 0 for kind in REWARD_KINDS)
    for kind in REWARD_KINDS:
        reward = DiffusionReward.load(result["checkpoint"], preset="tiny", kind=kind)
        (episode,) = load_frames(select_episodes(episodes, split="all")[:1], reward.image_size, progress=False)
        labels = reward.label_episode(episode.frames)
        assert labels.raw.shape == labels.standardized.shape == (len(episode.frames),)
        # The tiny preset: 2 condition frames at skip 1; the likelihood's history ends a frame earlier,
        # likelihood_stay's spans both its conditions.
        assert labels.warmup == reward.warmup_frames == {"entropy": 1, "likelihood": 2, "likelihood_stay": 2}[kind]
        assert np.all(labels.standardized[:labels.warmup] == 0)  # padded histories: not scored
        np.testing.assert_allclose(labels.standardized[labels.warmup:],
                                   reward.stats.standardize(labels.raw[labels.warmup:]), rtol=1e-6)
        np.testing.assert_array_equal(labels.raw, reward.label_episode(episode.frames).raw)  # seeded
        # Streaming scores each frame alone from cached tokens; its noise is seeded by the
        # frame's tokens, so it gives the episode labels frame by frame.
        stream = reward.stream()
        streamed = np.array([stream.push(frame, stamp_ns=i + 1) for i, frame in enumerate(episode.frames)])
        np.testing.assert_allclose(streamed[:, 0], labels.raw, rtol=1e-5, atol=1e-3, err_msg=kind)
        np.testing.assert_allclose(streamed[:, 1], labels.standardized, rtol=1e-5, atol=1e-4, err_msg=kind)
        # Frames that queued up are scored in one batch, with the same rewards; a restart mid-batch
        # starts the history over as a new stream would.
        half = len(episode.frames) // 2
        batch = reward.stream()
        raw, standardized = batch.push_batch(episode.frames, list(range(1, len(episode.frames) + 1)),
                                             restarts=[i == half for i in range(len(episode.frames))])
        np.testing.assert_allclose(raw[:half], labels.raw[:half], rtol=1e-5, atol=1e-3, err_msg=kind)
        np.testing.assert_allclose(raw[half:], reward.label_episode(episode.frames[half:]).raw, rtol=1e-5,
                                   atol=1e-3, err_msg=kind)
        in_episode = np.r_[np.arange(half), np.arange(len(raw) - half)]  # the restart starts the count over
        expected = np.where(in_episode < reward.warmup_frames, 0.0, reward.stats.standardize(raw))
        np.testing.assert_allclose(standardized, expected, rtol=1e-6, err_msg=kind)
    with pytest.raises(ValueError, match="reward kind must be one of"):
        DiffusionReward.load(result["checkpoint"], kind="curiosity")
    # likelihood_stay is the likelihood of frame t plus that of frame t again given the history ending at t.
    both, likelihood = (DiffusionReward.load(result["checkpoint"], kind=k) for k in ("likelihood_stay", "likelihood"))
    tokens = likelihood.encode(episode.frames)
    config = likelihood.video.config
    stay = likelihood.video.likelihood_reward(episode_windows(tokens, config.condition_frames, config.frame_skip),
                                              tokens).numpy()
    np.testing.assert_allclose(both.label_episode(episode.frames).raw,
                               likelihood.label_episode(episode.frames).raw + stay, rtol=1e-5)

    # Resuming the finished run recomputes the statistics, here of one kind: the others no longer score.
    only = train_video(episodes, tmp_path / "video", codec["checkpoint"], "tiny", steps=40,
                       reward_kinds=("likelihood",), progress=False)
    assert set(only["reward_stats"]) == {"likelihood"}
    assert only["reward_stats"]["likelihood"] == result["reward_stats"]["likelihood"]
    with pytest.raises(ValueError, match=r"statistics for the \['likelihood'\] reward\(s\), not 'entropy'"):
        DiffusionReward.load(only["checkpoint"], kind="entropy")
    for bad in ((), ("curiosity",)):
        with pytest.raises(ValueError, match="reward_kinds is empty|reward kind must be one of"):
            train_video(episodes, tmp_path / "video", codec["checkpoint"], "tiny", steps=40,
                        reward_kinds=bad, progress=False)

    # A codec trained on further cannot continue (or silently stand in for) the finished video run.
    retrained = train_codec(episodes, tmp_path / "codec", "tiny", steps=22, progress=False)
    before = (tmp_path / "video" / "video.ckpt").read_bytes()
    with pytest.raises(ValueError, match=r"trained with another codec \(step 20\) than the one given \(step 22\)"):
        train_video(episodes, tmp_path / "video", retrained["checkpoint"], "tiny", steps=60, progress=False)
    assert (tmp_path / "video" / "video.ckpt").read_bytes() == before


def test_train_and_evaluate_through_the_cli(episodes, tmp_path):
    import json
    import subprocess
    import sys

    def drr(*args):
        result = subprocess.run([sys.executable, "-m", "robot.cli", *args, "--threads", "1"]
                                if args[0] == "train" else [sys.executable, "-m", "robot.cli", *args],
                                capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-2000:]
        return json.loads(result.stdout.strip().splitlines()[-1])

    record_episodes("sim:reach", "random", range(100, 104), episodes, image_size=(96, 128), progress=False)
    codec = drr("train", "codec", "--data", str(episodes), "--out", str(tmp_path), "--preset", "tiny",
                "--steps", "10")
    video = drr("train", "video", "--data", str(episodes), "--codec", codec["checkpoint"], "--out", str(tmp_path),
                "--preset", "tiny", "--steps", "10")
    figures = drr("eval", "reward", "--model", video["checkpoint"], "--data", str(episodes),
                  "--out", str(tmp_path / "eval"), "--split", "all", "--seed-spread", "2")
    reach = figures["tasks"]["sim:reach"]
    spread = figures["seed_spread"]
    assert spread["seeds"] == 2 and spread["frames"] > 0
    assert all(spread[f"num_samples_{r}"]["std_nats"] > 0 for r in (1, 8))
    assert reach["seen"] and {"mean_expert", "mean_random", "auroc_expert_vs_random"} <= set(reach)
    assert 0.0 <= reach["auroc_expert_vs_random"] <= 1.0
    assert figures["seen"] is not None and (tmp_path / "eval" / "reward_curves.png").is_file()

    exported = drr("export", "reward", "--model", video["checkpoint"], "--out", str(tmp_path / "onnx"))
    assert set(exported["files"]) == {"codec_encoder.onnx", "condition.onnx", "denoiser_step.onnx"}
    on_ort = drr("eval", "reward", "--model", video["checkpoint"], "--data", str(episodes), "--out",
                 str(tmp_path / "eval_ort"), "--split", "all", "--backend", "onnxruntime",
                 "--onnx-dir", str(tmp_path / "onnx"))
    import numpy as np

    # Same tokens and noise give the same reward (tests/models/test_export.py checks that to
    # 1e-3 of the std on every frame). Here the ONNX codec encodes too: a token at a float tie
    # between two codes may flip, which changes that frame's history and so its noise seed.
    torch_raw, ort_raw = np.load(figures["raw_rewards"]), np.load(on_ort["raw_rewards"])
    assert set(torch_raw.files) == set(ort_raw.files) and len(torch_raw.files) >= 2
    diffs = np.concatenate([np.abs(ort_raw[e] - torch_raw[e]) for e in torch_raw.files])
    assert np.mean(diffs <= 1e-3 * figures["reward_std"]) >= 0.9, np.sort(diffs)[-5:]


def test_learning_rate_warms_up_then_decays_by_step_alone():
    from models.train import Schedule

    schedule = Schedule(steps=1000, batch_size=8, lr=1e-3, checkpoint_every=100, warmup=100)
    assert schedule.lr_at(0) == pytest.approx(1e-5)
    assert schedule.lr_at(99) == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 0.099)))
    assert schedule.lr_at(500) == pytest.approx(0.5e-3) and schedule.lr_at(1000) == pytest.approx(0.0)
    rates = [schedule.lr_at(step) for step in range(100, 1000)]
    assert all(a >= b for a, b in zip(rates, rates[1:]))  # monotone after warm-up
    assert Schedule(steps=10, batch_size=8, lr=3e-4, checkpoint_every=5).lr_at(7) == 3e-4  # no warm-up: flat
