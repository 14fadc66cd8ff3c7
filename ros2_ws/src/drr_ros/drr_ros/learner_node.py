"""learner_node: the fine-tuning session's learner: the replay buffer, DrQ-v2 updates, versioned actor weights.

When an episode stops (EpisodeEvent ENDED or ABORTED) and recorder_node has closed its MCAP file, the
node's worker thread hands every closed recording not yet in the buffer to robot.finetune.Finetuner
(converted as policy_node saw it, teleop steps flagged, labelled with the reward), runs the updates they
are owed (updates_per_episode each once learning_starts transitions are in), saves the agent and a new
actor file and publishes {"path", "version"} on ~/weights, which the finetune graph remaps to
policy_node's ~/weights. The executor never waits for any of it. The folder is also scanned every
scan_period_s, so an episode whose event was missed (the learner was down) is still taken.

Restarts: the run folder holds everything (robot.finetune: atomic writes, replay files that name their
recording); a restarted learner resumes from agent.ckpt, books the recordings that reached the buffer,
takes the ones recorded while it was down, and its versions continue. The latest version is published
again whenever a new subscriber appears on ~/weights (a restarted policy_node).

Subscribes:  episode/events   drr_interfaces/EpisodeEvent (reliable, transient local)
Publishes:   ~/weights        std_msgs/String JSON {"path": actor checkpoint, "version": N} (reliable)
             /diagnostics     buffer episodes and transitions, version, updates, update rate, last error
Parameters:  run_dir, episodes_dir (recorder_node's out_dir), preset, init_agent, reward (sparse | diffusion |
  rnd), reward_model, reward_kind, alpha, reward_crop, crop and image_size (policy_node's), max_linear_speed,
  action_repeat, proprio_dim, updates_per_episode, learning_starts, seed, keep_actors, threads, scan_period_s.
"""

from __future__ import annotations

import json
import threading
import time
import traceback

import torch
from drr_interfaces.msg import EpisodeEvent
from rclpy.node import Node
from std_msgs.msg import String

from drr_ros.episode_node import EVENTS_QOS
from drr_ros.wiring import COMMAND_QOS, ERROR, OK, WARN, ConfigError, Diagnostics, Param, declare, main_of
from models.rewards import REWARD_KINDS
from robot.finetune import REWARDS, Finetuner, LearnerConfig, PolicyView

STOPPED = (EpisodeEvent.ENDED, EpisodeEvent.ABORTED)
PARAMS = (
    Param("run_dir", "out/finetune", "run folder: replay/, agent.ckpt, actors/, learner_state.json"),
    Param("episodes_dir", "out/finetune/episodes", "the folder recorder_node writes episodes to (its out_dir)"),
    Param("preset", "tiny", "DrQ-v2 preset", choices=("tiny", "cpu", "paper")),
    Param("init_agent", "", "agent.ckpt to start from (a mirror run of `drr train policy`); '' = a new agent"),
    Param("reward", "sparse", "what labels each episode", choices=REWARDS),
    Param("reward_model", "", "reward diffusion: video.ckpt of `drr train video`"),
    Param("reward_kind", "entropy", "reward diffusion: which kind (models.rewards)", choices=REWARD_KINDS),
    Param("alpha", 0.95, "weight of the RND novelty (reward diffusion, rnd)", ge=0.0, le=1.0),
    Param("reward_crop", "center", "crop of the frames the reward model scores (its training crop)"),
    Param("crop", "center", "policy_node's crop: the buffer holds the frames the actor saw"),
    Param("image_size", 64, "policy_node's image_size", ge=15, le=1024),
    Param("max_linear_speed", 0.25, "policy_node's max_linear_speed (m/s of a full action)", gt=0.0, le=2.0),
    Param("action_repeat", 1, "recorded frames per agent step", ge=1, le=100),
    Param("proprio_dim", 18, "proprio values of a new agent (the mirror Panda's: 18)", ge=0, le=1000),
    Param("updates_per_episode", 50, "DrQ-v2 updates per episode ingested", ge=0, le=1_000_000),
    Param("learning_starts", -1, "transitions in the buffer before updates start; -1: the preset's seed_frames",
          ge=-1),
    Param("seed", 0, "agent and replay sampling seed", ge=0, le=2**31 - 1),
    Param("keep_actors", 5, "newest actor files kept in run_dir/actors", ge=1, le=10_000),
    Param("threads", 1, "torch CPU threads for labelling and updates", ge=1, le=256),
    Param("scan_period_s", 2.0, "s between scans of episodes_dir for recordings the events did not announce",
          gt=0.0, le=3600.0),
)


class LearnerNode(Node):
    NAME = "learner_node"

    def __init__(self) -> None:
        super().__init__(self.NAME)
        self._wake, self._stopping = threading.Event(), threading.Event()
        self._worker: threading.Thread | None = None  # a node refused at start has none to stop
        p = declare(self, PARAMS)
        torch.set_num_threads(p.threads)
        try:
            view = PolicyView(p.crop, p.image_size, p.max_linear_speed, p.action_repeat)
            config = LearnerConfig(p.run_dir, p.episodes_dir, p.preset, p.init_agent, p.reward, p.reward_model,
                                   p.reward_kind, p.alpha, p.reward_crop, view, p.proprio_dim, p.updates_per_episode,
                                   p.learning_starts, p.seed, p.keep_actors)
            self.learner = Finetuner(config)
        except (ValueError, OSError) as error:
            raise ConfigError(f"learner_node cannot start: {error}") from None
        self._subscribers = 0
        self._updates = {"count": 0, "seconds": 0.0, "rate": 0.0}
        self._error = ""
        self._weights = self.create_publisher(String, "~/weights", COMMAND_QOS)
        self.create_subscription(EpisodeEvent, "episode/events", self._on_event, EVENTS_QOS)
        self.create_timer(p.scan_period_s, self._wake.set)
        self.create_timer(0.5, self._republish_to_new_subscribers)
        self.diagnostics = Diagnostics(self, None, self._health)
        self._worker = threading.Thread(target=self._work, name="learner", daemon=True)
        self._worker.start()
        summary = self.learner.summary()
        recovered = f", {len(self.learner.recovered)} booked from the replay" if self.learner.recovered else ""
        self.get_logger().info(f"learning from {p.episodes_dir} into {p.run_dir} (reward {p.reward}, preset "
                               f"{p.preset}): version {summary['version']}, {summary['episodes']} episodes in the "
                               f"buffer{recovered}")

    def destroy_node(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._worker is not None:
            self._worker.join(timeout=30.0)
        super().destroy_node()

    def _on_event(self, msg: EpisodeEvent) -> None:
        if msg.event in STOPPED:
            self._wake.set()  # the recorder closes the file meanwhile; a scan that misses it runs again

    # ------------------------------------------------------------ the worker thread

    def _work(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait()
            self._wake.clear()
            try:
                self._ingest_and_train()
            except Exception as error:  # noqa: BLE001 - logged, shown on /diagnostics, tried again next scan
                self._error = f"{type(error).__name__}: {error}"
                self.get_logger().error(f"learning stopped for now: {self._error}\n{traceback.format_exc()}")

    def _ingest_and_train(self) -> None:
        for path in self.learner.new_recordings():
            if self._stopping.is_set():
                return
            episode = self.learner.ingest(path)
            if episode is None:
                self.get_logger().warning(f"not learning from {path.name}: {self.learner.state.skipped[path.name]}")
            else:
                self.get_logger().info(f"{path.name}: {len(episode)} steps into the buffer (reward "
                                       f"{float(episode.reward.sum()):.2f}, {int(episode.intervention.sum())} "
                                       f"teleop steps)")
        started, before = time.monotonic(), self.learner.agent.updates
        if self.learner.train(should_stop=self._stopping.is_set) and not self._stopping.is_set():
            seconds = time.monotonic() - started
            count = self.learner.agent.updates - before
            self._updates = {"count": self._updates["count"] + count, "seconds": self._updates["seconds"] + seconds,
                             "rate": count / max(seconds, 1e-9)}
            self._publish_weights()
        self._error = ""

    # ------------------------------------------------------------ weights

    def _publish_weights(self) -> None:
        path, version = self.learner.publishable()
        self._weights.publish(String(data=json.dumps({"path": str(path.resolve()), "version": version})))
        self.get_logger().info(f"published weights version {version} ({path.name})")

    def _republish_to_new_subscribers(self) -> None:
        """A new policy_node (or one restarted) gets the current version; volatile QoS keeps no history."""
        count = self._weights.get_subscription_count()
        if count > self._subscribers:
            self._publish_weights()
        self._subscribers = count

    def _health(self) -> tuple[bytes, str, dict]:
        summary = self.learner.summary()
        values = {**summary, "update_rate_hz": f"{self._updates['rate']:.2f}",
                  "unfinished_recordings": self.learner.unfinished_recordings(), "last_error": self._error or "none"}
        if self._error:
            return ERROR, f"learning failed: {self._error}", values
        if summary["skipped"]:
            return WARN, f"{summary['skipped']} recording(s) not usable (see learner_state.json)", values
        return OK, f"version {summary['version']}, {summary['episodes']} episodes", values


main = main_of(LearnerNode)

if __name__ == "__main__":
    main()
