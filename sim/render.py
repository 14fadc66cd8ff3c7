"""Offscreen rendering of the mirror's camera.

MuJoCo picks its OpenGL backend from MUJOCO_GL when `mujoco` is first imported, so
this module runs `select_gl_backend` on import, and every mirror module that imports
mujoco imports this first. If mujoco was loaded earlier anyway, the chosen backend is
swapped in while that is still possible.
"""

from __future__ import annotations

import ctypes.util
import importlib
import os
import sys
import warnings

GL_BACKENDS = ("egl", "osmesa")
_LIBRARIES = {"egl": "EGL", "osmesa": "OSMesa"}
_INSTALL_HINT = ("install EGL (Debian: apt-get install libegl1 libgl1-mesa-dri) "
                 "or OSMesa (Debian: apt-get install libosmesa6)")


class RenderBackendError(RuntimeError):
    """No offscreen OpenGL backend can be used on this machine."""


def _available(backend: str) -> bool:
    return ctypes.util.find_library(_LIBRARIES[backend]) is not None


def select_gl_backend() -> str:
    """Set MUJOCO_GL (and PYOPENGL_PLATFORM) before mujoco is imported; returns the backend.

    An existing MUJOCO_GL is respected. Otherwise EGL (headless, Mesa or GPU), then
    OSMesa (pure software).
    """
    backend = os.environ.get("MUJOCO_GL", "").strip().lower()
    if not backend:
        usable = [b for b in GL_BACKENDS if _available(b)]
        if not usable:
            raise RenderBackendError(
                f"no offscreen OpenGL backend: neither libEGL nor libOSMesa was found; "
                f"{_INSTALL_HINT}, or set MUJOCO_GL to a working backend")
        backend = usable[0]
        os.environ["MUJOCO_GL"] = backend
    if backend in GL_BACKENDS:
        # PyOpenGL must load the same platform that MuJoCo creates its context with.
        os.environ.setdefault("PYOPENGL_PLATFORM", backend)
    if backend in GL_BACKENDS and "mujoco.gl_context" in sys.modules:
        _adopt_in_loaded_mujoco(backend)
    return backend


def _adopt_in_loaded_mujoco(backend: str) -> None:
    """mujoco was imported first (often with MUJOCO_GL unset: GLFW, which needs a display).
    Its Renderer looks the context class up when it is made, so switching still works
    unless PyOpenGL has already bound itself to another platform."""
    gl_context = sys.modules["mujoco.gl_context"]
    loaded = getattr(getattr(gl_context, "GLContext", None), "__module__", "")
    if loaded == f"mujoco.{backend}":
        return
    if "OpenGL.platform" in sys.modules:
        warnings.warn(f"mujoco was imported before sim.render and uses {loaded or 'no GL'}; "
                      f"MUJOCO_GL={backend} takes effect only in a fresh process", stacklevel=3)
        return
    context = importlib.import_module(f"mujoco.{backend}").GLContext
    gl_context.GLContext = context
    sys.modules["mujoco"].GLContext = context


try:
    select_gl_backend()
    _BACKEND_ERROR: RenderBackendError | None = None
except RenderBackendError as exc:  # physics still works; rendering raises this
    _BACKEND_ERROR = exc

# After the backend is chosen, on purpose.
import mujoco  # noqa: E402
import numpy as np  # noqa: E402


class CameraRenderer:
    """Renders one model's fixed camera at any number of sizes, one GL context per size.

    MuJoCo's offscreen buffer must hold the largest image; it is grown on demand
    (before the context for a bigger size is made), so callers ask for any size.
    """

    def __init__(self, model: mujoco.MjModel, camera: str | int):
        self.model = model
        self.camera = camera
        self._renderers: dict[tuple[int, int], mujoco.Renderer] = {}

    def render(self, data: mujoco.MjData, height: int, width: int) -> np.ndarray:
        """uint8 (height, width, 3), row 0 at the top of the image."""
        renderer = self._renderer(int(height), int(width))
        renderer.update_scene(data, camera=self.camera)
        return renderer.render()

    def _renderer(self, height: int, width: int) -> mujoco.Renderer:
        key = (height, width)
        if key not in self._renderers:
            if height <= 0 or width <= 0:
                raise ValueError(f"render size must be positive, got {height}x{width}")
            if _BACKEND_ERROR is not None:
                raise _BACKEND_ERROR
            glob = self.model.vis.global_
            glob.offheight, glob.offwidth = max(glob.offheight, height), max(glob.offwidth, width)
            try:
                self._renderers[key] = mujoco.Renderer(self.model, height, width)
            except Exception as exc:  # the GL library loads but no context can be made
                raise RenderBackendError(
                    f"MuJoCo could not create an offscreen {os.environ.get('MUJOCO_GL')} "
                    f"context ({exc}); set MUJOCO_GL to one of {GL_BACKENDS} and "
                    f"{_INSTALL_HINT}") from exc
        return self._renderers[key]

    def close(self) -> None:
        # Explicit close: GL contexts freed by the garbage collector at exit log EGL errors.
        for renderer in self._renderers.values():
            renderer.close()
        self._renderers.clear()
