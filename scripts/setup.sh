#!/usr/bin/env bash
# Installs everything the stack needs on a fresh Debian machine, idempotently:
# system libraries (offscreen GL, libusb for RealSense), a virtual environment in
# .venv, the pinned Python packages (MuJoCo, MetaWorld, ROS 2 wheels, ...), and the
# ROS 2 interface package drr_interfaces built from those wheels (scripts/build_interfaces.sh), and the
# ROS 2 nodes (ros2_ws/src/drr_ros) installed editable so their executables are in .venv/bin.
# Re-running is cheap: each step is skipped when already done.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
# EGL/OSMesa: headless MuJoCo rendering. libusb: pyrealsense2. python3-venv: the venv.
# cmake, make, g++, python3.11-dev: scripts/build_interfaces.sh compiles the drr_interfaces
# messages' C/C++/Python typesupport from the ROS 2 wheels (python3.11-dev: Python.h for Debian's Python).
APT_PACKAGES=(libegl1 libgl1 libgl1-mesa-dri libosmesa6 libglib2.0-0 libusb-1.0-0 python3-venv
    cmake make g++ python3.11-dev)

log() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

install_system_packages() {
    command -v dpkg-query >/dev/null || { log "not a Debian system: install ${APT_PACKAGES[*]} yourself"; return; }
    local missing=()
    for package in "${APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
    done
    [ ${#missing[@]} -eq 0 ] && return
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    log "installing Debian packages: ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

pick_python() {
    # The ROS 2 wheels and the local torch wheel are built for CPython 3.11.
    for candidate in python3.11 python3; do
        if command -v "$candidate" >/dev/null &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
            echo "$candidate"; return
        fi
    done
    echo "error: Python 3.11 is required (ROS 2 Kilted wheels are cp311); found: $(python3 --version 2>&1)" >&2
    exit 1
}

install_python_packages() {
    local stamp="$VENV/.installed-$(sha256sum "$ROOT/pyproject.toml" | cut -c1-16)"
    [ -f "$stamp" ] && return
    [ -x "$VENV/bin/python" ] || { log "creating $VENV"; "$(pick_python)" -m venv "$VENV"; }
    log "installing pinned Python packages into $VENV (first run takes a few minutes)"
    "$VENV/bin/pip" install -q -e "$ROOT[dev,metaworld,realsense,ros,teleop]"
    rm -f "$VENV"/.installed-*
    touch "$stamp"
}

install_drr_ros() {
    # The ROS 2 nodes (ament_python) as an editable install: their executables land in .venv/bin,
    # as `ros2 run drr_ros <node>` finds them after colcon build on a ROS machine. Re-installed when
    # the package's metadata (entry points) changes; code changes need nothing (editable).
    local package="$ROOT/ros2_ws/src/drr_ros"
    local stamp="$VENV/.drr_ros-$(cat "$package/setup.py" "$package/setup.cfg" "$package/package.xml" | sha256sum | cut -c1-16)"
    [ -f "$stamp" ] && return
    log "installing ros2_ws/src/drr_ros (the ROS 2 nodes) into $VENV"
    "$VENV/bin/pip" install -q --no-deps --no-build-isolation -e "$package"
    rm -f "$VENV"/.drr_ros-*
    touch "$stamp"
}

install_system_packages
install_python_packages
VENV="$VENV" bash "$ROOT/scripts/build_interfaces.sh"
install_drr_ros
log "ready: $VENV"
