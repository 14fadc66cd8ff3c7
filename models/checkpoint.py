"""One self-describing file per trained model: config, weights, EMA weights, reward statistics,
the codec it was trained with, a fingerprint of the training data and the code version.

The payload holds only tensors and plain Python types (dict, list, tuple, str, int, float,
bool, None), so it loads with torch.load(weights_only=True): opening a checkpoint never runs
pickled code. Configs go in as dicts (dataclasses.asdict), never as dataclass objects.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
import os
import pickle
import subprocess
import tempfile
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from torch import nn

CHECKPOINT_FORMAT = 1
_MAGIC = "diffusion-reward-robot checkpoint"  # tells our files from any other torch.save output
_PACKAGE = "diffusion-reward-robot"


def check_config_keys(config_class: type, stored: dict[str, Any], what: str,
                      added_later: dict[str, Any] | None = None) -> dict[str, Any]:
    """A stored config dict must have exactly the dataclass's fields: a config from another code
    version says which keys it lacks or has too many, instead of loading half right. The one
    exception, `added_later`: fields added after files were first written, each with the value
    that reproduces how older files were trained, which a file without them gets. Returns the
    completed dict."""
    stored = {**(added_later or {}), **stored}
    names = {f.name for f in dataclasses.fields(config_class)}
    unknown, missing = sorted(set(stored) - names), sorted(names - set(stored))
    if unknown or missing:
        raise ValueError(f"{what} config: unknown keys {unknown}, missing keys {missing}")
    return stored


@functools.cache
def code_version() -> str:
    """'0.1.0+g1a2b3c4' (with '.dirty' for uncommitted changes); just the version outside git."""
    try:
        version = metadata.version(_PACKAGE)
    except metadata.PackageNotFoundError:
        version = "unknown"
    repo = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True,
                                text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--"], cwd=repo, capture_output=True,
                               timeout=5).returncode == 1
    except (OSError, subprocess.SubprocessError):
        return version
    return f"{version}+g{commit}{'.dirty' if dirty else ''}" if commit else version


def data_fingerprint(paths_or_ids: Iterable[str | os.PathLike]) -> str:
    """sha256 over the sorted items: an existing file counts as name + size, a folder as the
    relative names + sizes of its files, anything else as an id string. Base names only, so the
    same data copied to another machine or folder keeps its fingerprint."""
    items = []
    for item in paths_or_ids:
        p = Path(item)
        if p.is_file():
            items.append(f"{p.name}:{p.stat().st_size}")
        elif p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file())
            items.append(p.name + "/{" + ",".join(f"{f.relative_to(p).as_posix()}:{f.stat().st_size}"
                                                  for f in files) + "}")
        else:
            items.append(str(item))
    if not items:
        raise ValueError("data_fingerprint: no episodes given")
    return hashlib.sha256("\n".join(sorted(items)).encode()).hexdigest()


@dataclass
class Checkpoint:
    kind: str  # "codec" | "video" | "rnd" | ...
    preset: str
    config: dict
    state_dict: dict[str, Any]
    ema_state_dict: dict[str, Any] | None = None
    stats: dict | None = None  # {reward kind: RewardStats.to_dict()}
    codec: dict | None = None  # the codec's Checkpoint.to_dict(): a video model file is self-contained
    data_fingerprint: str = ""
    code_version: str = field(default_factory=code_version)
    step: int = 0
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("kind", "preset"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"Checkpoint.{name} must be a non-empty string, got {getattr(self, name)!r}")
        if not isinstance(self.state_dict, dict):
            raise ValueError(f"Checkpoint.state_dict must be a dict, got {type(self.state_dict).__name__}")
        if isinstance(self.step, bool) or not isinstance(self.step, int) or self.step < 0:
            raise ValueError(f"Checkpoint.step must be an int >= 0, got {self.step!r}")

    def to_dict(self) -> dict[str, Any]:
        # not dataclasses.asdict: it deep-copies every tensor
        return {"magic": _MAGIC, "format": CHECKPOINT_FORMAT,
                **{f.name: getattr(self, f.name) for f in dataclasses.fields(self)}}

    @classmethod
    def from_dict(cls, payload: dict, where: str = "checkpoint") -> Checkpoint:
        if not isinstance(payload, dict) or payload.get("magic") != _MAGIC:
            raise ValueError(f"{where} is not a {_PACKAGE} checkpoint")
        if payload.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{where} has checkpoint format {payload.get('format')!r} (written by code "
                             f"{payload.get('code_version', '?')}); this code ({code_version()}) reads format "
                             f"{CHECKPOINT_FORMAT}")
        names = [f.name for f in dataclasses.fields(cls)]
        missing = [n for n in names if n not in payload]
        if missing:
            raise ValueError(f"{where} lacks the field(s) {missing}")
        return cls(**{n: payload[n] for n in names})


def _tensors(obj: Any, prefix: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _tensors(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _tensors(v, f"{prefix}[{i}]")


def _nonfinite(ckpt: Checkpoint) -> list[str]:
    parts = {"state_dict": ckpt.state_dict, "ema_state_dict": ckpt.ema_state_dict,
             "codec.state_dict": (ckpt.codec or {}).get("state_dict"),
             "codec.ema_state_dict": (ckpt.codec or {}).get("ema_state_dict")}
    bad = [name for part, tree in parts.items() for name, t in _tensors(tree, part)
           if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    for kind, kind_stats in (ckpt.stats or {}).items():
        for key, value in (kind_stats.items() if isinstance(kind_stats, dict) else ()):
            if isinstance(value, float) and not math.isfinite(value):
                bad.append(f"stats.{kind}.{key}")
    return bad


def save_checkpoint(ckpt: Checkpoint, path: str | os.PathLike) -> Path:
    """Write atomically: temp file in the same folder, fsync, reload and check, then os.replace.

    Refuses (ValueError, the file at `path` untouched) weights or statistics that are NaN/inf:
    training never overwrites the last good checkpoint with a broken one.
    """
    path = Path(path)
    bad = _nonfinite(ckpt)
    if bad:
        shown = ", ".join(bad[:8]) + (f" and {len(bad) - 8} more" if len(bad) > 8 else "")
        raise ValueError(f"refusing to save {path}: non-finite values in {shown}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(ckpt.to_dict(), f)
            f.flush()
            os.fsync(f.fileno())
        try:  # also proves weights_only loading works on this payload
            load_checkpoint(tmp, expect_kind=ckpt.kind, expect_preset=ckpt.preset)
        except ValueError as e:
            raise ValueError(f"refusing to save {path}: the written file does not load back: {e}") from e
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable; not every platform can open a folder
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return path
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def load_checkpoint(path: str | os.PathLike, expect_kind: str | None = None,
                    expect_preset: str | None = None) -> Checkpoint:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file at {path}")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive; anything else is not ours
        raise ValueError(f"{path} is not a checkpoint file (not a torch.save archive; truncated or another format)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch's message is long; the line naming the offending class is the useful one
        why = next((ln.strip() for ln in str(e).splitlines() if "Unsupported" in ln), str(e).splitlines()[0])
        why = why.split(" Please use")[0]  # torch suggests allowlisting; the fix is plain types in the payload
        raise ValueError(f"{path} holds objects other than tensors and plain Python types; "
                         f"not unpickling it ({why})") from e
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as e:
        raise ValueError(f"{path} is not a checkpoint file (truncated or another format): {e}") from e
    ckpt = Checkpoint.from_dict(payload, where=str(path))
    if expect_kind is not None and ckpt.kind != expect_kind:
        raise ValueError(f"{path} is a {ckpt.kind!r} checkpoint, expected {expect_kind!r}")
    if expect_preset is not None and ckpt.preset != expect_preset:
        raise ValueError(f"{path} was trained with preset {ckpt.preset!r}, expected preset {expect_preset!r}")
    return ckpt


def _listed(names: list[str], limit: int = 10) -> str:
    return ", ".join(names[:limit]) + (f", ... and {len(names) - limit} more" if len(names) > limit else "")


def load_state_checked(module: nn.Module, state_dict: dict[str, Any], what: str) -> None:
    """load_state_dict(strict=True) after a readable comparison: missing keys, unexpected keys and
    shape mismatches (file shape vs model shape) in one ValueError instead of torch's raw error."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    shapes = [f"{k}: file {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state_dict and isinstance(own[k], torch.Tensor)
              and isinstance(state_dict[k], torch.Tensor) and state_dict[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        lines = [f"{what}: the saved weights do not fit the model"]
        if shapes:
            lines.append(f"  shape mismatches: {_listed(shapes)}")
        if missing:
            lines.append(f"  missing keys (in the model, not in the file): {_listed(missing)}")
        if unexpected:
            lines.append(f"  unexpected keys (in the file, not in the model): {_listed(unexpected)}")
        raise ValueError("\n".join(lines))
    module.load_state_dict(state_dict, strict=True)
