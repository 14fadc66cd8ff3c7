import json

import pytest

from models.rl.compare import compare_runs
from models.rl.train import append_eval_row, check_or_write_settings


def _run(folder, reward, successes, alpha=None):
    """A run folder as `drr train policy` writes it (its own writers), with evaluations every 1000 frames."""
    folder.mkdir()
    check_or_write_settings(folder, {"env": "sim:reach", "reward": reward, "reward_kind": None, "alpha": alpha,
                                     "preset": "tiny", "seed": 3, "reward_fingerprint": "x"})
    for i, success in enumerate(successes, 1):
        append_eval_row(folder / "eval.csv", {"frames": 1000 * i, "episodes": 10 * i, "success_rate": success,
                                              "mean_return": 0.0, "wall_s": 50.0 * i})
    return folder


def test_runs_compare_side_by_side(tmp_path):
    a = _run(tmp_path / "a", "diffusion", [0.0, 0.3, 0.6])
    b = _run(tmp_path / "b", "sparse", [0.0, 0.1])
    result = compare_runs([a, b], tmp_path / "curves.png")
    first, second = result["runs"]
    assert first["frames"] == [1000, 2000, 3000] and first["success_rate"] == [0.0, 0.3, 0.6]
    assert (first["final_success_rate"], second["final_success_rate"]) == (0.6, 0.1)
    assert first["frames_per_s"] == pytest.approx(20.0) and first["label"] == "diffusion, seed 3"
    assert (tmp_path / "curves.png").stat().st_size > 5000
    json.dumps(result)  # the CLI prints it as its last line

    again = _run(tmp_path / "c", "diffusion", [0.1])  # same settings, another reward model
    labels = [run["label"] for run in compare_runs([a, b, again], tmp_path / "curves.png")["runs"]]
    assert labels == [f"diffusion, seed 3 ({a})", "sparse, seed 3", f"diffusion, seed 3 ({again})"]


def test_a_folder_that_is_not_a_run_is_named(tmp_path):
    with pytest.raises(ValueError, match=r"not a `drr train policy` run folder.*lacks run.json, eval.csv"):
        compare_runs([tmp_path], tmp_path / "curves.png")
    empty = _run(tmp_path / "empty", "sparse", [])
    (empty / "eval.csv").write_text("frames,episodes,success_rate,mean_return,wall_s\n")
    with pytest.raises(ValueError, match="holds no evaluation yet"):
        compare_runs([empty], tmp_path / "curves.png")


def test_labels_name_a_novelty_weight_other_than_the_papers(tmp_path):
    runs = [_run(tmp_path / "paper", "diffusion", [0.1], alpha=0.95),
            _run(tmp_path / "half", "diffusion", [0.2], alpha=0.5),
            _run(tmp_path / "sparse", "sparse", [0.0])]
    labels = [run["label"] for run in compare_runs(runs, tmp_path / "curves.png")["runs"]]
    assert labels == ["diffusion, seed 3", "diffusion, alpha 0.5, seed 3", "sparse, seed 3"]
