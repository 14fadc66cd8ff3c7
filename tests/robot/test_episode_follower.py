"""robot.episode_follower: what a per-frame node takes from the episode events."""

import pytest

from robot.episode_follower import EpisodeFollower
from robot.episodes import EVENT_CODES


def test_follows_an_episode_from_start_to_reset():
    follower = EpisodeFollower()
    assert (follower.episode, follower.running) == (0, False)
    started = follower.on_event(EVENT_CODES["STARTED"], "running", episode_id="e1", task="sim:reach")
    assert started.started and not started.stopped and follower.running and follower.episode == 1
    follower.on_event(EVENT_CODES["SUCCESS_MARKED"], "running", success=True)
    assert follower.success and follower.running
    ended = follower.on_event(EVENT_CODES["ENDED"], "ending", success=True)
    assert ended.stopped and not follower.running
    assert not follower.on_event(EVENT_CODES["RESET_STARTED"], "resetting").stopped
    follower.on_event(EVENT_CODES["RESET_DONE"], "idle")
    follower.on_event(EVENT_CODES["STARTED"], "running")
    assert follower.episode == 2 and not follower.success


def test_an_abort_while_running_stops_and_an_empty_state_is_taken_from_the_event():
    follower = EpisodeFollower()
    follower.on_event(EVENT_CODES["STARTED"])
    assert follower.running
    assert follower.on_event(EVENT_CODES["ABORTED"]).stopped and follower.state == "idle"


def test_unknown_codes_and_states_are_refused():
    follower = EpisodeFollower()
    with pytest.raises(ValueError, match="unknown EpisodeEvent.event 9"):
        follower.on_event(9, "running")
    with pytest.raises(ValueError, match="unknown EpisodeEvent.state 'paused'"):
        follower.on_event(EVENT_CODES["STARTED"], "paused")
    assert follower.episode == 0
