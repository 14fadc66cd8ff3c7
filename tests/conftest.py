"""Session-wide settings: headless rendering, an isolated ROS 2 domain, and no skips under CI."""

import os
import random

# Offscreen rendering without a display; EGL runs on Mesa's software renderer here.
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])
# ROS 2 traffic of one test session stays on loopback and in its own domain.
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_DOMAIN_ID", str(random.Random(os.getpid()).randint(1, 100)))


def pytest_sessionfinish(session, exitstatus):
    """Under CI the set-up installs every extra, so a skip (a module whose package is missing)
    would hide a missing install step: CI fails the run and names the skipped tests."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if os.environ.get("CI") and skipped and exitstatus == 0:
        reporter.ensure_newline()
        reporter.write_line(f"CI: {len(skipped)} skipped test(s); every package is installed here, so a skip "
                            "means a missing install step:", red=True)
        for report in skipped:
            reporter.write_line(f"  {report.nodeid}: {report.longrepr[-1] if report.longrepr else ''}", red=True)
        session.exitstatus = 1
