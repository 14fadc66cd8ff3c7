"""reward_node: the Diffusion Reward of every camera frame, streamed, and of recorded episodes, in batch.

Each color image due at frame_rate (by its stamp; robot.reward_stream.StampThinning) is checked
(robot.cameras.check_image: a wrong encoding or size is logged, throttled, and the frame dropped),
cropped and resized to the model's input (robot.cameras.crop, as the model's training frames were),
tagged with the episode it arrived in, and queued for a scoring thread (robot.frame_queue.
DropOldestQueue: beyond queue_size frames the OLDEST are dropped and counted). The thread takes every
queued frame at once and scores them in one batched call of the streaming API (StreamingReward via
robot.reward_stream.RewardScorer: the rewards they would get one by one, each frame's history
complete), then publishes one Reward per frame. Batching keeps it up: on the cpu preset one frame
took 131 ms, four 302 ms, sixteen about 1 s (1 thread). An EpisodeEvent STARTED starts the model's
history over at the first frame of the new episode, so histories never cross episodes.

Subscribes:
  camera/camera/color/image_raw   sensor_msgs/Image rgb8 or bgr8 (sensor QoS)
  episode/events                  drr_interfaces/EpisodeEvent (reliable)
Publishes:
  ~/reward       drr_interfaces/Reward (reliable): header = the scored frame's stamp and frame_id,
                 total = (1 - alpha) * standardized + alpha * novelty + sparse (alpha only with an RND;
                 without, total = standardized + sparse), sparse = success_reward once the episode was
                 marked successful, frame_index = frames scored in the episode before this one
  /diagnostics   scoring rate and latency (arrival to publish), dropped_frames (queue), rejected_frames
Services:
  ~/label_episode  drr_interfaces/LabelEpisode: reads an episode MCAP (robot.episodes.read_episode, the
                   same crop) and scores all its frames in one batch (no sparse term); errors come back
                   as success=false with the message
Parameters: model (video.ckpt), kind (entropy | likelihood), backend (torch | onnxruntime | tensorrt),
  onnx_dir, num_samples, seed, queue_size, frame_rate (Hz scored, by stamp: the training episodes' rate,
  10; a faster camera is thinned to it; 0 = every frame), crop (center | none | top,left,height,width), image_width and
  image_height (expected camera size; 0: the first frame's), rnd (RND checkpoint, '' = off), alpha,
  success_reward, threads (torch).
"""

from __future__ import annotations

import threading
import time

import torch
from drr_interfaces.msg import EpisodeEvent, Reward
from drr_interfaces.srv import LabelEpisode
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from sensor_msgs.msg import Image

from drr_ros import messages
from drr_ros.wiring import (
    COMMAND_QOS,
    OK,
    SENSOR_QOS,
    WARN,
    ConfigError,
    Diagnostics,
    Param,
    crop_of,
    declare,
    invalid,
    main_of,
)
from models.reward_model import DiffusionReward
from models.rewards import REWARD_KINDS
from robot.cameras import ImageError, check_image
from robot.cameras.crop import CROP_HELP, check_crop, crop_and_resize
from robot.episode_follower import EpisodeFollower
from robot.episodes import read_episode
from robot.frame_queue import DropOldestQueue, QueueClosed
from robot.reward_stream import RewardScorer, StampThinning, TaggedFrame, load_rnd_novelty, tag_frame

IMAGE_TOPIC, EVENTS_TOPIC = "camera/camera/color/image_raw", "episode/events"
BACKENDS = ("torch", "onnxruntime", "tensorrt")

PARAMS = (
    Param("model", "", "video.ckpt of the trained reward (drr train video)"),
    Param("kind", "entropy", "which diffusion reward", choices=REWARD_KINDS),
    Param("backend", "torch", "where the networks run", choices=BACKENDS),
    Param("onnx_dir", "", "onnxruntime/tensorrt: the folder drr export reward wrote"),
    Param("num_samples", 1, "sampled chains averaged per frame", ge=1, le=64),
    Param("seed", 0, "reward noise seed", ge=0, le=2**31 - 1),
    Param("queue_size", 16, "frames waiting to be scored (one batch); beyond it the oldest are dropped",
          ge=1, le=1000),
    Param("frame_rate", 10.0, "Hz of camera frames scored, by stamp: the rate the training episodes were "
          "recorded at (faster cameras are thinned); 0 = every frame", ge=0.0, le=1000.0),
    Param("crop", "center", f"model input crop: {CROP_HELP}"),
    Param("image_width", 0, "expected camera image width; 0: the first frame's", ge=0, le=8192),
    Param("image_height", 0, "expected camera image height; 0: the first frame's", ge=0, le=8192),
    Param("rnd", "", "RND checkpoint for the novelty term; '' = no novelty"),
    Param("alpha", 0.95, "weight of the RND novelty (with rnd only)", ge=0.0, le=1.0),
    Param("success_reward", 1.0, "sparse reward of each frame after the episode is marked successful",
          ge=-1e6, le=1e6),
    Param("threads", 1, "torch threads for scoring", ge=1, le=256),
)


class RewardNode(Node):
    NAME = "reward_node"

    def __init__(self) -> None:
        super().__init__(self.NAME)
        p = declare(self, PARAMS)
        self.crop = crop_of(p.crop)
        if (p.image_width == 0) != (p.image_height == 0):
            raise invalid("image_width", p.image_width, f"set both image_width and image_height, or neither "
                          f"(image_height = {p.image_height})")
        self.size = (p.image_height, p.image_width) if p.image_width else None
        if self.size is not None:
            try:
                check_crop(self.crop, *self.size)
            except ValueError as error:
                raise invalid("crop", p.crop, str(error)) from None
        if not p.model:
            raise invalid("model", p.model, "set it to the reward's video.ckpt (drr train video)")
        torch.set_num_threads(p.threads)
        try:
            reward = DiffusionReward.load(p.model, kind=p.kind, backend=p.backend, onnx_dir=p.onnx_dir or None,
                                          num_samples=p.num_samples, seed=p.seed)
            novelty = load_rnd_novelty(p.rnd, reward.image_size) if p.rnd else None
        except (OSError, ValueError, ImportError, RuntimeError) as error:
            raise ConfigError(f"cannot load the reward (model = {p.model!r}, kind = {p.kind!r}, backend = "
                              f"{p.backend!r}, onnx_dir = {p.onnx_dir!r}, rnd = {p.rnd!r}): {error}") from None
        self.p, self.input_size = p, (reward.image_size, reward.image_size)
        self.scorer = RewardScorer(reward, novelty=novelty, alpha=p.alpha, success_reward=p.success_reward)
        self.follower = EpisodeFollower()
        self.queue: DropOldestQueue[tuple[float, TaggedFrame]] = DropOldestQueue(p.queue_size)
        self.thinning = StampThinning(p.frame_rate)
        self._rejected, self._scored, self._failed, self._labelled = 0, 0, 0, 0
        self._dropped_reported = 0

        self._reward_out = self.create_publisher(Reward, "~/reward", COMMAND_QOS)
        self.create_subscription(Image, IMAGE_TOPIC, self._on_image, SENSOR_QOS)
        self.create_subscription(EpisodeEvent, EVENTS_TOPIC, self._on_event, COMMAND_QOS)
        # Its own group: a long labelling call must not hold up the image callbacks.
        self.create_service(LabelEpisode, "~/label_episode", self._on_label,
                            callback_group=MutuallyExclusiveCallbackGroup())
        self.diagnostics = Diagnostics(self, None, self._health)
        self._worker = threading.Thread(target=self._score_loop, name="reward_scorer", daemon=True)
        self._worker.start()
        rnd = f", RND {p.rnd} alpha {p.alpha:g}" if p.rnd else ""
        self.get_logger().info(f"scoring {IMAGE_TOPIC} with the {p.kind} reward of {p.model} ({p.backend}, "
                               f"{p.num_samples} sample(s){rnd}), crop {p.crop!r} -> "
                               f"{self.input_size[1]}x{self.input_size[0]}, queue {p.queue_size}")

    def destroy_node(self) -> None:
        # Also called by rclpy on a node whose __init__ failed half-way (a bad parameter).
        if hasattr(self, "_worker"):
            self.queue.close()
            self._worker.join(timeout=5.0)
        super().destroy_node()

    def _on_image(self, msg: Image) -> None:
        arrived = time.monotonic()
        if not self.thinning.passes(messages.stamp_ns(msg.header.stamp)):
            return
        height, width = self.size or (None, None)
        try:
            rgb = check_image(msg, width=width, height=height)
            if self.size is None:
                check_crop(self.crop, *rgb.shape[:2])
                self.size = rgb.shape[:2]  # later frames must match the first
        except (ImageError, ValueError) as error:
            self._rejected += 1
            self.get_logger().error(f"dropped a camera frame ({msg.header.frame_id or 'no frame_id'}): {error}",
                                    throttle_duration_sec=1.0)
            return
        model_input = crop_and_resize(rgb, self.crop, self.input_size)
        frame = tag_frame(model_input, messages.stamp_ns(msg.header.stamp), msg.header.frame_id, self.follower)
        self.queue.put((arrived, frame))

    def _on_event(self, msg: EpisodeEvent) -> None:
        change = messages.follow_event(self.follower, msg, self.get_logger())
        if change is None:
            return
        if change.started:
            self.get_logger().info(f"episode {msg.episode_index} ({msg.episode_id}) started: reward history "
                                   "starts over")

    def _score_loop(self) -> None:
        """The scoring thread: every frame queued meanwhile, oldest first, in one batched call."""
        while self.context.ok():
            try:
                items = self.queue.get_all(timeout_s=0.5)
            except QueueClosed:
                return
            if not items:
                continue
            try:
                scored = self.scorer.score_batch([frame for _, frame in items])
            except Exception as error:  # noqa: BLE001 - bad frames cost their rewards, not the node
                self._failed += len(items)
                self.get_logger().error(f"scoring failed: {type(error).__name__}: {error}", throttle_duration_sec=5.0)
                continue
            for (arrived, _), frame in zip(items, scored, strict=True):
                if not self._publish(frame):
                    return
                self._scored += 1
                self.diagnostics.tick(time.monotonic() - arrived)

    def _publish(self, scored) -> bool:
        msg = Reward(total=scored.total, standardized=scored.standardized, raw=scored.raw, novelty=scored.novelty,
                     sparse=scored.sparse, kind=scored.kind, frame_index=scored.frame_index)
        msg.header.stamp, msg.header.frame_id = messages.stamp(scored.stamp_ns), scored.frame_id
        try:
            self._reward_out.publish(msg)
        except Exception:  # noqa: BLE001 - rclpy's SIGTERM handler shuts the context down before destroy_node
            return False
        return True

    def _on_label(self, request: LabelEpisode.Request, response: LabelEpisode.Response) -> LabelEpisode.Response:
        path = request.episode_path
        start = time.perf_counter()
        try:
            episode = read_episode(path, image_size=self.input_size, crop=self.crop)
            labels = self.scorer.label(episode.frames)
        except Exception as error:  # noqa: BLE001 - every failure is an answer, never a dead service
            response.success, response.message = False, f"cannot label {path!r}: {type(error).__name__}: {error}"
            self.get_logger().warning(response.message)
            return response
        response.success = True
        response.stamps_ns = [int(s) for s in episode.stamps_ns]
        response.total, response.standardized = labels.total.tolist(), labels.standardized.tolist()
        response.raw = labels.raw.tolist()
        notes = "" if episode.complete else f" (incomplete file: {'; '.join(episode.problems) or 'no episode_end'})"
        response.message = (f"labelled {len(episode)} frames of {path} with the {self.p.kind} reward in "
                            f"{time.perf_counter() - start:.2f} s{notes}")
        self._labelled += 1
        self.get_logger().info(response.message)
        return response

    def _health(self) -> tuple[bytes, str, dict]:
        dropped = self.queue.dropped
        values = {"scored_frames": self._scored, "dropped_frames": dropped, "queued_frames": len(self.queue),
                  "queue_size": self.p.queue_size, "rejected_frames": self._rejected, "failed_frames": self._failed,
                  "episode": self.follower.episode, "labelled_episodes": self._labelled,
                  "stamp_resets": self.scorer.stamp_resets, "thinned_frames": self.thinning.skipped}
        new_drops, self._dropped_reported = dropped - self._dropped_reported, dropped
        if new_drops:
            return WARN, f"scoring falls behind: dropped the {new_drops} oldest queued frame(s)", values
        if self._scored == 0:
            return OK, f"waiting for {IMAGE_TOPIC}", values
        return OK, "scoring", values


main = main_of(RewardNode, executor=lambda: MultiThreadedExecutor(num_threads=2))

if __name__ == "__main__":
    main()
