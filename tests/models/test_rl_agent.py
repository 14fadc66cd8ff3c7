import numpy as np
import pytest
import torch

from models.checkpoint import Checkpoint, save_checkpoint
from models.rewards import RND, RNDConfig
from models.rl import (
    DrQConfig,
    DrQV2Agent,
    Episode,
    FrameStack,
    RandomShift,
    ReplayBuffer,
    RNDBonus,
    load_actor,
    load_agent,
    save_actor,
    save_agent,
    std_at,
)
from models.train import seed_everything

SIZE = 24  # the smallest images the tests need (the encoder needs at least 15 pixels)
PROPRIO = 2


def bar_image(target: float) -> np.ndarray:
    """A black image with a red vertical bar at the column of target in [-1, 1]."""
    image = np.zeros((SIZE, SIZE, 3), np.uint8)
    column = int(round((target + 1) / 2 * (SIZE - 1)))
    image[:, max(0, column - 1):column + 2, 0] = 255
    return image


def random_replay(agent: DrQV2Agent, folder, episodes: int = 3, seed: int = 0) -> ReplayBuffer:
    rng = np.random.default_rng(seed)
    replay = ReplayBuffer(folder, max_size=1000, nstep=agent.config.nstep,
                          discount=agent.config.discount)
    for _ in range(episodes):
        replay.add(Episode(rng.integers(0, 256, (5, SIZE, SIZE, 3), dtype=np.uint8),
                           rng.normal(size=(5, PROPRIO)).astype(np.float32), rng.uniform(-1, 1, (4, 1)),
                           rng.normal(size=4)))
    return replay


def tiny_agent(seed: int = 0, **overrides) -> DrQV2Agent:
    return DrQV2Agent(DrQConfig.preset("tiny", **overrides), SIZE, PROPRIO, 1, seed=seed)


# ---------------------------------------------------------------- presets


def test_presets_and_the_std_schedule():
    paper = DrQConfig.preset("paper")
    assert (paper.channels, paper.feature_dim, paper.hidden_dim) == (32, 50, 1024)
    assert (paper.batch_size, paper.lr, paper.replay_size) == (256, 1e-4, 1_000_000)
    assert (paper.critic_tau, paper.std_clip, paper.nstep, paper.discount) == (0.01, 0.3, 3, 0.99)
    assert (paper.update_every_steps, paper.seed_frames, paper.action_repeat, paper.frame_stack) == (2, 4000, 2, 3)
    assert paper.seed_steps == 2000 and not paper.use_proprio and DrQConfig.preset("cpu").use_proprio
    assert std_at(paper.std_schedule, 0) == 1.0 and std_at(paper.std_schedule, 250_000) == pytest.approx(0.55)
    assert std_at(paper.std_schedule, 10**7) == pytest.approx(0.1) and std_at("0.2", 5) == 0.2
    assert DrQConfig.from_dict(DrQConfig.preset("tiny").to_dict()) == DrQConfig.preset("tiny")
    with pytest.raises(ValueError, match="unknown DrQ-v2 preset 'huge'; known: \\['cpu', 'paper', 'tiny'\\]"):
        DrQConfig.preset("huge")
    with pytest.raises(ValueError, match="DrQConfig.batch_size must be an int >= 1"):
        DrQConfig.preset("tiny", batch_size=0)
    with pytest.raises(ValueError, match="DrQConfig.std_schedule: schedule 'cosine"):
        DrQConfig(std_schedule="cosine(1,0)")
    with pytest.raises(ValueError, match=r"unknown keys \['width'\]"):
        DrQConfig.from_dict({**paper.to_dict(), "width": 3})


# ---------------------------------------------------------------- shapes and determinism


def test_same_seed_same_actions_and_updates(tmp_path):
    obs = np.stack([bar_image(0.3)] * 3).transpose(0, 3, 1, 2).reshape(9, SIZE, SIZE)
    proprio = np.ones(PROPRIO, np.float32)
    runs = []
    for run in range(2):
        agent = tiny_agent(seed=3)
        seeding = [agent.act(obs, proprio, step=0) for _ in range(3)]  # uniform, before seed_steps
        metrics = agent.learn(random_replay(agent, tmp_path / str(run)).sample(16, agent.generator), step=500)
        runs.append((seeding, agent.act(obs, proprio, step=500), agent.act(obs, proprio, 500, eval_mode=True),
                     metrics))
    assert runs[0][0][0].tolist() != runs[0][0][1].tolist()  # the uniform actions do vary
    for first, second in zip(*runs):
        np.testing.assert_equal(first, second)
    other = tiny_agent(seed=4).act(obs, proprio, 500, eval_mode=True)
    assert other.tolist() != runs[0][2].tolist()
    for action in [*runs[0][0], runs[0][1], runs[0][2]]:
        assert action.shape == (1,) and np.all(np.abs(action) <= 1.0)


def test_proprio_reaches_the_heads_only_when_the_preset_says_so():
    obs = np.stack([bar_image(0.0)] * 3).transpose(0, 3, 1, 2).reshape(9, SIZE, SIZE)
    zeros, ones = np.zeros(PROPRIO, np.float32), np.ones(PROPRIO, np.float32)
    with_proprio = tiny_agent()
    assert with_proprio.act(obs, zeros, 0, True).tolist() != with_proprio.act(obs, ones, 0, True).tolist()
    pixels = tiny_agent(use_proprio=False)  # DrQ-v2 as published
    assert pixels.nets.critic.Q1[0].in_features == pixels.config.feature_dim + 1
    assert pixels.act(obs, ones, 0, True).tolist() == pixels.act(obs, None, 0, True).tolist()
    assert pixels.deployment_actor().act(bar_image(0.0), None).shape == (1,)


def test_random_shift_keeps_shape_and_moves_content_by_whole_pixels():
    images = torch.zeros(64, 3, SIZE, SIZE)
    images[:, :, 12, 10] = 255.0
    shifted = RandomShift(pad=4)(images, torch.Generator().manual_seed(0))
    assert shifted.shape == images.shape
    moves = set()
    for image in shifted:
        row, col = divmod(int(image[0].argmax()), SIZE)
        assert image[0, row, col] == pytest.approx(255.0, abs=1e-3)  # whole-pixel shifts: nothing blurred
        assert image.sum() == pytest.approx(3 * 255.0, abs=1e-2)
        assert abs(row - 12) <= 4 and abs(col - 10) <= 4
        moves.add((row - 12, col - 10))
    assert len(moves) > 10


def test_the_deployment_actor_stacks_frames_itself_and_reset_starts_over():
    agent = tiny_agent()
    actor = agent.deployment_actor()
    assert actor.image_size == SIZE and actor.action_dim == 1
    frames, proprio = [bar_image(x) for x in (-0.8, 0.0, 0.8)], np.zeros(PROPRIO, np.float32)
    stack, expected = FrameStack(3), []
    for frame in frames:
        expected.append(agent.act(stack.push(frame), proprio, 0, eval_mode=True))
    assert [actor.act(frame, proprio).tolist() for frame in frames] == [e.tolist() for e in expected]
    assert actor.act(frames[0], proprio).tolist() != expected[0].tolist()  # still remembers the episode
    actor.reset()
    assert actor.act(frames[0], proprio).tolist() == expected[0].tolist()
    with pytest.raises(ValueError, match=r"uint8 \(24, 24, 3\) RGB images, got uint8 \(32, 32, 3\)"):
        actor.act(np.zeros((32, 32, 3), np.uint8), proprio)
    with pytest.raises(ValueError, match=r"proprio of shape \(2,\)"):
        actor.act(frames[0], np.zeros(3))


def test_a_non_finite_loss_stops_the_update_before_any_weight_moves(tmp_path):
    agent = tiny_agent()
    batch = random_replay(agent, tmp_path).sample(16, agent.generator)
    batch.reward[3] = np.nan
    before = {k: v.clone() for k, v in agent.nets.state_dict().items()}
    with pytest.raises(FloatingPointError, match="critic loss is nan at update 0"):
        agent.learn(batch, step=500)
    assert all(torch.equal(before[k], v) for k, v in agent.nets.state_dict().items())


def test_the_rnd_bonus_hook_adds_trained_novelty(tmp_path):
    rnd = RND(RNDConfig.preset("tiny", input_shape=(3, SIZE, SIZE)))
    bonus = RNDBonus(rnd, scale=0.5, optimizer=rnd.make_optimizer())
    agent = tiny_agent()
    replay = random_replay(agent, tmp_path)
    metrics = agent.update(replay, step=500, bonus=bonus)
    assert metrics["bonus"] > 0 and rnd.running.count == agent.config.batch_size  # the predictor trained once
    plain = agent.learn(replay.sample(16, torch.Generator().manual_seed(1)), 500)
    assert "bonus" not in plain
    with pytest.raises(ValueError, match=r"the replay samples \(frame_stack, nstep, discount\) = \(3, 1, 0.99\)"):
        agent.update(ReplayBuffer(tmp_path / "other", max_size=10, nstep=1), step=500)
    with pytest.raises(ValueError, match=r"the bonus hook returned shape \(3,\) for a batch of 16"):
        agent.learn(replay.sample(16), 500, bonus=lambda next_obs: torch.zeros(3))
    with pytest.raises(ValueError, match="image RND"):
        RNDBonus(RND(RNDConfig.preset("tiny", input_shape=(8,))))


# ---------------------------------------------------------------- learning


def test_drqv2_learns_to_point_at_the_target_it_sees(tmp_path):
    """Episodes of 2 steps; the image shows a target in [-1, 1], reward -|action - target|.
    A random policy scores about -2/3 per step, a blind one at best -1/2."""
    seed_everything(0)
    rng = np.random.default_rng(0)
    agent = tiny_agent()
    replay = ReplayBuffer(tmp_path, max_size=agent.config.replay_size, nstep=agent.config.nstep,
                          discount=agent.config.discount)
    stack, proprio, step = FrameStack(agent.config.frame_stack), np.zeros((3, PROPRIO), np.float32), 0
    while step < 1500:
        target, actions, rewards = rng.uniform(-1, 1), [], []
        stack.reset()
        for _ in range(2):
            actions.append(agent.act(stack.push(bar_image(target)), proprio[0], step))
            rewards.append(-abs(actions[-1][0] - target))
            step += 1
            if step >= agent.config.seed_steps:
                agent.update(replay, step)
        replay.add(Episode(np.stack([bar_image(target)] * 3), proprio, np.stack(actions), rewards, terminated=True))

    targets = np.random.default_rng(1).uniform(-1, 1, 200)
    actor = agent.deployment_actor()
    trained = np.mean([-abs(first_action(actor, bar_image(t), proprio[0]) - t) for t in targets])
    uniform = np.mean(-np.abs(np.random.default_rng(2).uniform(-1, 1, 200) - targets))
    assert uniform < -0.55
    assert trained > -0.25 and trained > uniform + 0.35, (trained, uniform)


def first_action(actor, image: np.ndarray, proprio: np.ndarray) -> float:
    actor.reset()
    return float(actor.act(image, proprio)[0])


# ---------------------------------------------------------------- checkpoints


def test_agent_checkpoints_round_trip_and_resume_exactly(tmp_path):
    agent = tiny_agent(seed=5)
    replay = random_replay(agent, tmp_path)
    for step in range(500, 506):
        agent.update(replay, step)
    path = save_agent(agent, tmp_path / "agent.ckpt", step=506, counters={"episodes": 3})
    loaded, ckpt = load_agent(path)
    assert ckpt.step == 506 and ckpt.extra["counters"] == {"episodes": 3} and loaded.updates == agent.updates == 3
    obs = np.stack([bar_image(-0.2)] * 3).transpose(0, 3, 1, 2).reshape(9, SIZE, SIZE)
    proprio = np.full(PROPRIO, 0.5, np.float32)
    expected = agent.act(obs, proprio, 506, eval_mode=True).tolist()
    assert loaded.act(obs, proprio, 506, eval_mode=True).tolist() == expected
    for actor in (load_actor(path), load_actor(save_actor(agent, tmp_path / "actor.ckpt", step=506))):
        assert actor.act(bar_image(-0.2), proprio).tolist() == expected
    # optimizers, target critic and generator came back too: training goes on identically
    assert loaded.update(replay, 506) == agent.update(replay, 506)
    assert all(torch.equal(a, b) for a, b in zip(agent.nets.state_dict().values(),
                                                 loaded.nets.state_dict().values()))


def test_load_actor_refuses_other_files_naming_them(tmp_path):
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"\x00not a checkpoint")
    with pytest.raises(ValueError, match="garbage.ckpt is not a checkpoint file"):
        load_actor(garbage)
    rnd = RND(RNDConfig.preset("tiny"))
    other = save_checkpoint(Checkpoint(kind="rnd", preset="tiny", config=rnd.config.to_dict(),
                                       state_dict=rnd.state_dict()), tmp_path / "rnd.ckpt")
    with pytest.raises(ValueError, match="rnd.ckpt is a 'rnd' checkpoint, not a DrQ-v2 actor"):
        load_actor(other)
    actor_only = save_actor(tiny_agent(), tmp_path / "actor.ckpt")
    with pytest.raises(ValueError, match="is a 'drqv2-actor' checkpoint, expected 'drqv2'"):
        load_agent(actor_only)


def test_the_policy_node_loads_actors_through_this_loader(tmp_path):
    from robot.policy_runtime import ActorLoadError, ActorPolicy
    from robot.policy_runtime import load_actor as runtime_load_actor

    path = save_actor(tiny_agent(), tmp_path / "actor.ckpt")
    action = ActorPolicy(runtime_load_actor(path)).act({"image": bar_image(0.1), "proprio": np.zeros(PROPRIO)}, {})
    assert action.shape == (1,) and action.dtype == np.float32
    (tmp_path / "bad.ckpt").write_bytes(b"weights")
    with pytest.raises(ActorLoadError, match="bad.ckpt"):
        runtime_load_actor(tmp_path / "bad.ckpt")
