import numpy as np
import pytest

from models.evaluation import auroc, plot_reward_curves, summarize, time_correlation


def test_auroc_extremes_and_ties():
    assert auroc(np.array([3.0, 4.0]), np.array([1.0, 2.0])) == 1.0
    assert auroc(np.array([1.0, 2.0]), np.array([3.0, 4.0])) == 0.0
    assert auroc(np.ones(5), np.ones(7)) == 0.5
    rng = np.random.default_rng(0)
    assert auroc(rng.normal(1, 1, 4000), rng.normal(0, 1, 4000)) == pytest.approx(0.76, abs=0.02)
    with pytest.raises(ValueError, match="both sides"):
        auroc(np.array([]), np.ones(3))


def test_time_correlation():
    assert time_correlation([np.arange(10.0), np.arange(5.0) ** 2]) == pytest.approx(1.0)
    assert time_correlation([np.arange(10.0)[::-1]]) == pytest.approx(-1.0)
    assert np.isnan(time_correlation([np.ones(10)]))


def test_summarize_and_plot(tmp_path):
    rewards = {"expert": [np.linspace(0, 1, 20), np.linspace(0.2, 1.2, 15)],
               "suboptimal": [np.linspace(-0.5, 0.5, 20)], "random": [np.full(20, -1.0)]}
    summary = summarize(rewards)
    assert summary["mean_expert"] > summary["mean_suboptimal"] > summary["mean_random"]
    assert summary["auroc_expert_vs_random"] == 1.0
    assert 0.5 < summary["auroc_expert_vs_suboptimal"] < 1.0
    # Frames overlap (the second expert's low start under the suboptimal's top), episode means do not.
    assert summary["episode_auroc_expert_vs_suboptimal"] == 1.0 and summary["episode_auroc_expert_vs_random"] == 1.0
    assert summary["spearman_expert_time"] == pytest.approx(1.0)
    assert summary["episodes"] == {"expert": 2, "suboptimal": 1, "random": 1}
    path = plot_reward_curves({"sim:reach": rewards, "sim:push": rewards}, tmp_path / "curves.png")
    assert path.stat().st_size > 5000


def test_a_still_arm_is_a_source_of_its_own():
    expert, still = [np.linspace(-1, 1, 10)], [np.full(10, 0.5), np.full(10, 0.7)]
    summary = summarize({"expert": expert, "zero": still})
    assert summary["mean_zero"] == pytest.approx(0.6)
    assert summary["auroc_expert_vs_zero"] == pytest.approx(0.25)  # 3 of 10 expert frames above 0.5, 2 above 0.7
    assert summary["episode_auroc_expert_vs_zero"] == 0.0  # the still arm's episodes out-score the expert's
    assert "auroc_expert_vs_random" not in summary


def test_frames_not_scored_are_left_out_of_the_figures():
    expert, random = np.array([np.nan, np.nan, 1.0, 2.0, 3.0]), np.array([np.nan, np.nan, -1.0, -2.0, -3.0])
    summary = summarize({"expert": [expert, np.full(2, np.nan)], "random": [random]})
    assert summary["mean_expert"] == 2.0 and summary["mean_random"] == -2.0
    assert summary["auroc_expert_vs_random"] == 1.0 and summary["episode_auroc_expert_vs_random"] == 1.0
    assert summary["episodes"] == {"expert": 1, "random": 1}  # an episode with no scored frame is left out
    assert summary["spearman_expert_time"] == pytest.approx(1.0)


def test_evaluation_holds_out_test_experts_and_every_other_source(tmp_path):
    from models.data import select_episodes
    from models.evaluation import evaluate_reward, evaluation_episodes
    from sim.record import record_episodes

    record_episodes("sim:reach", "expert", range(10), tmp_path, image_size=(64, 64), progress=False)
    record_episodes("sim:reach", "random", range(100, 103), tmp_path, image_size=(64, 64), progress=False)
    with pytest.raises(ValueError, match="seed_spread must be 0 .off. or at least 2"):
        evaluate_reward(tmp_path / "never-read.ckpt", tmp_path, tmp_path / "eval", seed_spread=1)
    trained_on = {e.episode_id for e in select_episodes(tmp_path, split="train")}
    chosen = evaluation_episodes(tmp_path, None, "test")
    assert trained_on and not trained_on & {e.episode_id for e in chosen}
    assert 1 <= sum(e.source == "expert" for e in chosen) == 10 - len(trained_on) <= 9  # one on each side at least
    assert sum(e.source == "random" for e in chosen) == 3
