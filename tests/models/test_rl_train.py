"""`drr train policy`: short real DrQ-v2 runs in the mirror (tiny preset, fixed seeds)."""

import hashlib
import json
import subprocess
import sys
from dataclasses import replace

import cv2
import numpy as np
import pytest

from models.checkpoint import load_checkpoint
from models.rl import ReplayBuffer, load_episode
from models.rl.train import DiffusionLabeller, per_step, repeat_action, reward_model_fingerprint, train_policy

TCP_Y = 15  # mirror proprio: 7 joint positions, 7 joint velocities, then the TCP's x, y, z and the gripper


def episode_files(run) -> list:
    return sorted((run / "replay").glob("episode_*.npz"))


def eval_rows(run) -> list[dict]:
    lines = (run / "eval.csv").read_text().splitlines()
    assert lines[0] == "frames,episodes,success_rate,mean_return,wall_s"
    return [dict(zip(lines[0].split(","), map(float, line.split(",")))) for line in lines[1:]]


# ---------------------------------------------------------------- a sparse run, resumed


def test_a_sparse_run_writes_its_files_then_resumes_where_it_stopped(tmp_path):
    from robot.policy_runtime import ActorPolicy
    from robot.policy_runtime import load_actor as runtime_load_actor

    run = tmp_path / "run"
    # reach: 20-frame episodes; tiny: no action repeat, 100 seed frames, an update every 2 steps after them
    first = train_policy("sim:reach", run, reward="sparse", preset="tiny", frames=200, eval_every_frames=120,
                         eval_episodes=2, progress=False)
    assert (first["frames"], first["episodes"], first["updates"], first["resumed_from_frames"]) == (200, 10, 50, 0)
    assert 0.0 <= first["final_success_rate"] <= 1.0 and first["replay_episodes"] == 10
    assert [row["frames"] for row in eval_rows(run)] == [120, 200]
    sheet = cv2.imread(first["eval_sheet"])
    assert sheet.shape == (2 * (96 + 18), 8 * 96, 3)  # one row per evaluation episode
    assert any((run / "tensorboard").iterdir())
    assert load_checkpoint(run / "agent.ckpt").step == 200
    episode = load_episode(episode_files(run)[0])
    assert len(episode) == 20 and episode.image.shape == (21, 64, 64, 3)
    np.testing.assert_array_equal(episode.reward, episode.reward_parts["sparse"])
    assert episode.meta["reward_fingerprint"] == "sparse" and not episode.terminated  # time limit: bootstrap

    before = {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in episode_files(run)}
    second = train_policy("sim:reach", run, reward="sparse", preset="tiny", frames=300, eval_every_frames=120,
                          eval_episodes=2, progress=False)
    assert (second["frames"], second["episodes"], second["updates"], second["resumed_from_frames"]) == (300, 15, 100,
                                                                                                        200)
    assert [row["frames"] for row in eval_rows(run)] == [120, 200, 240, 300]
    files = episode_files(run)
    assert len(files) == 15 and all(hashlib.sha256(p.read_bytes()).hexdigest() == before[p.name] for p in files[:10])
    assert [load_episode(p).meta["seed"] for p in files] == list(range(15))  # the episode counter went on

    with pytest.raises(ValueError, match=r"other settings \(seed: folder 0, now 1\)"):
        train_policy("sim:reach", run, reward="sparse", preset="tiny", frames=400, seed=1, progress=False)
    with pytest.raises(ValueError, match="reward: folder 'sparse', now 'rnd'"):
        train_policy("sim:reach", run, reward="rnd", preset="tiny", frames=400, progress=False)

    # what policy_node runs: the actor file, fed 64x64 frames one at a time
    policy = ActorPolicy(runtime_load_actor(second["actor_checkpoint"]))
    obs = {"image": episode.image[5], "proprio": episode.proprio[5]}
    action = policy.act(obs, {})
    assert action.shape == (4,) and action.dtype == np.float32 and np.all(np.abs(action) <= 1)
    policy.reset()
    assert policy.act(obs, {}).tolist() == ActorPolicy(runtime_load_actor(run / "agent.ckpt")).act(obs, {}).tolist()


def test_an_action_repeat_sums_the_sparse_rewards_and_stops_at_the_episode_end():
    class ThreeFrames:
        frame = 0

        def step(self, action):
            self.frame += 1
            return {"image": self.frame}, 1.0, False, self.frame == 3, {"success": self.frame == 2}

    env = ThreeFrames()
    first = repeat_action(env, np.zeros(4), 2)
    assert (first.frames, first.reward, first.success, first.done, first.obs) == (2, 2.0, True, False, {"image": 2})
    assert first.images == [1, 2]  # every frame, for a reward model that learned videos at the env's rate
    last = repeat_action(env, np.zeros(4), 2)
    assert (last.frames, last.reward, last.success, last.done, last.images) == (1, 1.0, False, True, [3])


def test_per_step_takes_the_mean_of_the_frames_each_action_led_to():
    np.testing.assert_array_equal(per_step(np.arange(5.0), 4), [1, 2, 3, 4])  # one frame a step: frame t + 1
    np.testing.assert_array_equal(per_step(np.arange(7.0), 3), [1.5, 3.5, 5.5])  # frames 1-2, 3-4, 5-6
    np.testing.assert_array_equal(per_step(np.arange(6.0), 3), [1.5, 3.5, 5.0])  # the last step cut short
    with pytest.raises(ValueError, match="3 frames cannot cover 3 steps"):
        per_step(np.arange(3.0), 3)


# ---------------------------------------------------------------- the diffusion reward


@pytest.fixture(scope="module")
def reward_model(tmp_path_factory):
    """A tiny video.ckpt trained a few steps on mirror reach experts: enough for rewards that vary."""
    from models.train import train_codec, train_video
    from sim.record import record_episodes

    root = tmp_path_factory.mktemp("reward_model")
    record_episodes("sim:reach", "expert", range(3), root / "demos", image_size=(64, 64), stop_on_success=False,
                    progress=False)
    codec = train_codec(root / "demos", root, "tiny", steps=5, progress=False)
    return train_video(root / "demos", root, codec["checkpoint"], "tiny", steps=5, progress=False)["checkpoint"]


def test_diffusion_runs_label_each_episode_with_the_model_and_its_fingerprint(reward_model, tmp_path, monkeypatch):
    from models.reward_model import DiffusionReward

    run = tmp_path / "run"
    result = train_policy("sim:reach", run, reward="diffusion", reward_model=reward_model, preset="tiny", frames=140,
                          eval_every_frames=140, eval_episodes=1, progress=False)
    assert result["episodes"] == 7 and result["updates"] == 20
    fingerprint = reward_model_fingerprint(reward_model, "entropy", 0.95)
    model = DiffusionReward.load(reward_model, kind="entropy")
    for path in episode_files(run):
        episode = load_episode(path)
        assert set(episode.reward_parts) == {"sparse", "diffusion", "diffusion_raw"}
        assert episode.meta["reward_fingerprint"] == fingerprint
        # step t is rewarded with frame t + 1, the frame its action led to
        np.testing.assert_allclose(episode.reward_parts["diffusion"],
                                   model.label_episode(episode.image).standardized[1:], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(episode.reward, 0.05 * episode.reward_parts["diffusion"] +
                                   episode.reward_parts["sparse"], rtol=1e-5, atol=1e-6)
        assert np.ptp(episode.reward_parts["diffusion"]) > 0
    rnd = load_checkpoint(run / "rnd.ckpt", expect_kind="rnd")
    assert rnd.state_dict["_extra_state"]["count"] == 20 * 16  # the novelty's predictor trained on every batch

    # a new reward model: the replay relabels its episodes with the same labeller
    likelihood = DiffusionLabeller(DiffusionReward.load(reward_model, kind="likelihood"), "likelihood-test", 0.95)
    replay = ReplayBuffer(run / "replay", max_size=2000)
    assert replay.relabel(likelihood, likelihood.fingerprint) == 7
    relabelled = load_episode(episode_files(run)[0])
    assert relabelled.meta["reward_fingerprint"] == "likelihood-test"
    np.testing.assert_allclose(relabelled.reward, 0.05 * likelihood(relabelled)["diffusion"] +
                               relabelled.reward_parts["sparse"], rtol=1e-5, atol=1e-6)

    # With an action repeat the labeller scores every env frame (the model's frame rate), not the
    # observations: step t gets the mean of the frames its action led to.
    every_frame = np.concatenate([relabelled.image, relabelled.image[::-1]])[:2 * len(relabelled) + 1]
    repeated = replace(relabelled, env_frames=every_frame)
    per_frame = likelihood.reward.label_episode(every_frame).standardized
    np.testing.assert_allclose(likelihood(repeated)["diffusion"],
                               per_frame[1:].reshape(len(relabelled), 2).mean(axis=1), rtol=1e-5, atol=1e-6)

    with pytest.raises(ValueError, match="reward_kind: folder 'entropy', now 'likelihood'"):
        train_policy("sim:reach", run, reward="diffusion", reward_model=reward_model, reward_kind="likelihood",
                     preset="tiny", frames=160, progress=False)
    monkeypatch.setattr(DiffusionReward, "image_size", property(lambda self: 32))
    with pytest.raises(ValueError, match="takes 32x32 frames; the policy's env renders 64x64"):
        train_policy("sim:reach", tmp_path / "other", reward="diffusion", reward_model=reward_model, preset="tiny",
                     frames=20, progress=False)


def test_with_an_action_repeat_the_diffusion_reward_scores_every_env_frame(reward_model, tmp_path, monkeypatch):
    from models.reward_model import DiffusionReward
    from models.rl.presets import DrQConfig

    tiny = DrQConfig.preset
    monkeypatch.setattr(DrQConfig, "preset", classmethod(lambda cls, name, **kw: tiny(name, action_repeat=2, **kw)))
    train_policy("sim:reach", tmp_path, reward="diffusion", reward_model=reward_model, preset="tiny", frames=40,
                 eval_every_frames=40, eval_episodes=1, progress=False)
    model = DiffusionReward.load(reward_model, kind="entropy")
    for path in episode_files(tmp_path):
        episode = load_episode(path)
        assert len(episode) == 10 and episode.env_frames.shape == (21, 64, 64, 3)  # 20 frames stepped, and the first
        np.testing.assert_array_equal(episode.env_frames[::2], episode.image)  # the observations are every 2nd
        np.testing.assert_allclose(episode.reward_parts["diffusion"],
                                   per_step(model.label_episode(episode.env_frames).standardized, 10),
                                   rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- learning


class TcpLeftward:
    """A shaped labeller: 10 x how far each step moved the TCP towards +y (the robot's left)."""

    fingerprint = "test:tcp-y-progress"
    reads_env_frames = False

    def __call__(self, episode):
        return {"reward": 10 * np.diff(episode.proprio[:, TCP_Y])}


def test_the_loop_learns_what_its_stored_reward_asks(tmp_path):
    """800 frames (~350 updates) teach the tiny agent to move the TCP left; random actions hardly move it.
    This checks the loop (acting, labelling, replay, updates, the saved actor), not vision: the sparse
    reach reward needs far more frames than a test can afford (random actions never succeed)."""
    from robot.policy_runtime import load_actor as runtime_load_actor
    from sim.registry import make_env

    result = train_policy("sim:reach", tmp_path, reward=TcpLeftward(), preset="tiny", frames=800,
                          eval_every_frames=800, eval_episodes=1, progress=False)
    actor, rng = runtime_load_actor(result["actor_checkpoint"]), np.random.default_rng(0)
    env = make_env("sim:reach", terminate_on_success=False)

    def leftward(act, seed: int) -> float:
        obs, _ = env.reset(seed=5000 + seed)
        actor.reset()
        start, done = obs["proprio"][TCP_Y], False
        while not done:
            obs, _, terminated, truncated, _ = env.step(act(obs))
            done = terminated or truncated
        return float(obs["proprio"][TCP_Y] - start)

    try:
        trained = [leftward(lambda obs: actor.act(obs["image"], obs["proprio"]), seed) for seed in range(5)]
        uniform = [leftward(lambda obs: rng.uniform(-1, 1, 4), seed) for seed in range(5)]
    finally:
        env.close()
    assert min(trained) > 0.18 and np.mean(trained) > np.mean(uniform) + 0.15, (trained, uniform)


# ---------------------------------------------------------------- the CLI


def test_drr_train_policy_runs_with_the_presets_action_repeat(tmp_path):
    """The cpu preset repeats each action twice: 20-frame reach episodes are 10 agent steps."""
    command = [sys.executable, "-m", "robot.cli", "train", "policy", "--env", "sim:reach", "--reward", "sparse",
               "--preset", "cpu", "--frames", "40", "--eval-every", "40", "--eval-episodes", "1", "--threads", "1",
               "--out", str(tmp_path)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    *human, last = result.stdout.strip().splitlines()
    summary = json.loads(last)
    assert summary["frames"] == 40 and summary["episodes"] == 2 and summary["final_success_rate"] == 0.0
    assert any("DrQ-v2 (cpu) on sim:reach" in line for line in human)
    assert [len(load_episode(p)) for p in episode_files(tmp_path)] == [10, 10]
    assert load_episode(episode_files(tmp_path)[0]).env_frames is None  # the sparse reward reads no frames


@pytest.mark.parametrize("args, message", [
    (["--env", "sim:fly", "--reward", "sparse"], "unknown task 'sim:fly'"),
    (["--env", "metaworld:fly-v3", "--reward", "sparse"], "unknown task 'metaworld:fly-v3'"),
    (["--env", "sim:reach", "--reward", "dense"], "invalid choice: 'dense'"),
    (["--env", "sim:reach", "--reward", "sparse", "--preset", "huge"], "invalid choice: 'huge'"),
    (["--env", "sim:reach", "--reward", "diffusion"], "the diffusion reward needs a trained reward model"),
    (["--env", "sim:reach", "--reward", "diffusion", "--reward-model", "{tmp}/none.ckpt"], "no checkpoint file at"),
    (["--env", "sim:reach", "--reward", "sparse", "--reward-model", "{tmp}/none.ckpt"],
     "used by the diffusion reward only, not by 'sparse'"),
    (["--env", "sim:reach", "--reward", "sparse", "--frames", "0"], "frames must be an int >= 1, got 0"),
    (["--env", "sim:reach", "--reward", "rnd", "--alpha", "2"], "alpha (the RND weight) must be a number in [0, 1]"),
])
def test_bad_arguments_exit_2_naming_the_problem(tmp_path, capsys, args, message):
    from robot.cli import main

    argv = ["train", "policy", *(a.format(tmp=tmp_path) for a in args), "--out", str(tmp_path / "run")]
    try:
        code = main(argv)
    except SystemExit as exit:  # argparse's own errors
        code = exit.code
    out, err = capsys.readouterr()
    assert code == 2 and message in json.loads(out.strip().splitlines()[-1])["error"] and message in err
    assert not (tmp_path / "run" / "run.json").exists()  # nothing started
