#!/usr/bin/env bash
# Builds the ROS 2 interface package ros2_ws/src/drr_interfaces without a ROS install,
# from the ROS 2 Kilted wheels in .venv (pyproject.toml's `ros` extra), and makes the
# venv's Python see it. On a machine with ROS 2 installed, use colcon instead (ros2_ws/README.md).
#
# What it does, as colcon would for one ament_cmake package:
#   cmake configure + build in  ros2_ws/build/drr_interfaces   (log: ros2_ws/log/drr_interfaces/build.log)
#   cmake install into          ros2_ws/install/drr_interfaces (colcon's layout; git-ignored)
# then writes .venv/lib/python3.11/site-packages/drr_interfaces.pth, the venv's
# equivalent of sourcing install/setup.bash (see "How the venv sees the install" below),
# checks the result in a fresh interpreter, and stamps it. Re-running is a no-op while the
# stamp (a hash over the package's sources, this script and the installed ROS wheel
# versions) is current. FORCE=1 rebuilds anyway.
#
# Workaround for the wheels' hard-coded paths
# -------------------------------------------
# The wheels were built in a manylinux container whose Python lived in
# /opt/python/cp311-cp311. Their exported CMake targets for the Python typesupport
# (share/<pkg>/cmake/export_<pkg>__rosidl_generator_pyExport.cmake, e.g. std_msgs'
# and builtin_interfaces') keep that builder's Python and NumPy include directories in
# INTERFACE_INCLUDE_DIRECTORIES. Our generated Python typesupport links those targets,
# and CMake refuses to generate when an imported target names a directory that does not
# exist. We do not edit the wheels' files nor create /opt/python on the machine: cmake
# runs with CMAKE_PROJECT_INCLUDE set to a small file (written below into the build
# folder) that defers a call to the end of the package's CMakeLists.txt; it rewrites
# those two directories, on every imported target, to this build's own
# ${Python3_INCLUDE_DIRS} and ${Python3_NumPy_INCLUDE_DIRS} (the very variables
# rosidl_generator_py compiled them from). The package's CMakeLists.txt stays the plain
# one that colcon builds on a ROS machine.
#
# How the venv sees the install
# -----------------------------
# rclpy loads a message's Fast DDS typesupport at run time with dlopen() by bare library
# name (rosidl_typesupport_c's dispatch), so the install's lib/ must be on
# LD_LIBRARY_PATH when the process starts: a Python extension's RPATH does not help
# there. The wheels solve the same problem for .venv/lib with ros_wheels_bootstrapper.pth,
# which re-executes Python once with LD_LIBRARY_PATH set. drr_interfaces.pth (sorted,
# hence run, before ros_wheels_bootstrapper.pth) adds the install's site-packages to
# sys.path and, before that re-execution, puts the install's lib/ in front of
# LD_LIBRARY_PATH, which the bootstrapper keeps. Nothing else is written into the venv.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
PACKAGE=drr_interfaces
SOURCE="$ROOT/ros2_ws/src/$PACKAGE"
BUILD="$ROOT/ros2_ws/build/$PACKAGE"
INSTALL="$ROOT/ros2_ws/install/$PACKAGE"
LOG_DIR="$ROOT/ros2_ws/log/$PACKAGE"
LOG="$LOG_DIR/build.log"
STAMP="$INSTALL/.build-stamp"

log() { printf '\033[1m[interfaces]\033[0m %s\n' "$*"; }
fail() {
    printf '\033[1;31m[interfaces] error:\033[0m %s\n' "$1" >&2
    if [ -n "${2:-}" ] && [ -f "$2" ]; then
        printf '[interfaces] last lines of %s:\n' "$2" >&2
        tail -n 30 "$2" >&2
    fi
    exit 1
}

PYTHON="$VENV/bin/python"
[ -x "$PYTHON" ] || fail "no virtual environment at $VENV: run scripts/setup.sh first"
SITE_PACKAGES="$(echo "$VENV"/lib/python3.*/site-packages)"
[ -d "$SITE_PACKAGES" ] || fail "no site-packages under $VENV/lib"
[ -f "$VENV/share/rosidl_default_generators/cmake/rosidl_default_generatorsConfig.cmake" ] ||
    fail "the ROS 2 generator wheels are missing from $VENV: run scripts/setup.sh (it installs the ros extra of pyproject.toml)"
for tool in cmake make cc c++; do
    command -v "$tool" >/dev/null ||
        fail "$tool not found: building $PACKAGE needs cmake, make and a C/C++ compiler (Debian: apt-get install cmake make g++; scripts/setup.sh does)"
done

PTH="$SITE_PACKAGES/$PACKAGE.pth"
PY_SITE_REL="${SITE_PACKAGES#"$VENV"/}"  # lib/python3.11/site-packages, as the install lays it out
PTH_TEXT="$INSTALL/$PY_SITE_REL
import os; os.environ.get('_ROS_WHEELS_BOOTSTRAP_COMPLETE') or os.environ.update(LD_LIBRARY_PATH=os.pathsep.join(p for p in ['$INSTALL/lib', *os.environ.get('LD_LIBRARY_PATH', '').split(os.pathsep)] if p))"

stamp_of_inputs() {
    {
        (cd "$SOURCE" && find . -type f \( -name '*.msg' -o -name '*.srv' -o -name 'CMakeLists.txt' -o -name 'package.xml' \) \
            -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
        sha256sum "${BASH_SOURCE[0]}" | cut -d' ' -f1
        cat "$VENV/pyvenv.cfg"
        (cd "$SITE_PACKAGES" && ls -d ros_*.dist-info catkin_pkg-*.dist-info empy-*.dist-info lark*.dist-info numpy-*.dist-info 2>/dev/null || true)
        printf '%s\n' "$PTH_TEXT"
    } | sha256sum | cut -c1-16
}

STAMP_VALUE="$(stamp_of_inputs)"
if [ "${FORCE:-0}" != 1 ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$STAMP_VALUE" ] && [ -f "$PTH" ] &&
    [ "$(cat "$PTH")" = "$PTH_TEXT" ]; then
    log "$PACKAGE is up to date ($INSTALL)"
    exit 0
fi

started=$SECONDS
elapsed() { printf '%ds' $((SECONDS - started)); }
log "building $PACKAGE from the ROS 2 wheels in $VENV (log: ${LOG#"$ROOT"/})"
rm -rf "$BUILD" "$INSTALL" "$LOG_DIR"
mkdir -p "$BUILD" "$LOG_DIR"
: >"$LOG"

cat >"$BUILD/resolve_wheel_paths.cmake" <<'CMAKE'
# Written by scripts/build_interfaces.sh: see "Workaround for the wheels' hard-coded paths" there.
function(_drr_resolve_wheel_paths)
  if(NOT Python3_INCLUDE_DIRS OR NOT Python3_NumPy_INCLUDE_DIRS)
    message(FATAL_ERROR "build_interfaces: rosidl_generator_py did not set Python3_INCLUDE_DIRS / Python3_NumPy_INCLUDE_DIRS")
  endif()
  get_directory_property(_targets DIRECTORY "${CMAKE_SOURCE_DIR}" IMPORTED_TARGETS)
  foreach(_target IN LISTS _targets)
    get_target_property(_dirs ${_target} INTERFACE_INCLUDE_DIRECTORIES)
    if(_dirs AND _dirs MATCHES "^/opt/python/|;/opt/python/")
      list(TRANSFORM _dirs REPLACE "^/opt/python/[^/]+/include/python3\\.[0-9]+$" "${Python3_INCLUDE_DIRS}")
      list(TRANSFORM _dirs REPLACE "^/opt/python/[^/]+/.*/numpy/_core/include$" "${Python3_NumPy_INCLUDE_DIRS}")
      set_target_properties(${_target} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${_dirs}")
    endif()
  endforeach()
endfunction()
cmake_language(DEFER DIRECTORY "${CMAKE_SOURCE_DIR}" CALL _drr_resolve_wheel_paths)
CMAKE

log "configuring (cmake)"
AMENT_PREFIX_PATH="$VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}" nice cmake -S "$SOURCE" -B "$BUILD" \
    -DCMAKE_BUILD_TYPE=Release \
    -DBUILD_TESTING=OFF \
    -DCMAKE_PREFIX_PATH="$VENV" \
    -DCMAKE_INSTALL_PREFIX="$INSTALL" \
    -DPython3_EXECUTABLE="$PYTHON" \
    -DCMAKE_PROJECT_INCLUDE="$BUILD/resolve_wheel_paths.cmake" >>"$LOG" 2>&1 ||
    fail "cmake could not configure $PACKAGE" "$LOG"

log "generating and compiling the C, C++ and Python typesupport ($(elapsed))"
# Progress in steps of 10%, from make's "[ NN%]" prefixes; the full output goes to the log.
AMENT_PREFIX_PATH="$VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}" nice cmake --build "$BUILD" -j "$(nproc)" 2>&1 |
    tee -a "$LOG" |
    awk -v started="$started" '
        match($0, /^\[ *[0-9]+%\]/) {
            percent = substr($0, 2, RLENGTH - 3) + 0
            if (percent >= shown + 10) {
                shown = percent - percent % 10
                printf "\033[1m[interfaces]\033[0m   %3d%%\n", shown
                fflush()
            }
        }' ||
    fail "compiling $PACKAGE failed" "$LOG"

log "installing into ${INSTALL#"$ROOT"/} ($(elapsed))"
cmake --install "$BUILD" >>"$LOG" 2>&1 || fail "cmake --install failed" "$LOG"
printf '%s\n' "$PTH_TEXT" >"$PTH"

log "checking it in a fresh interpreter"
# A clean environment, as a new shell would start it: the .pth hook must set everything up,
# and the serialisation round trip dlopen()s the Fast DDS typesupport library.
env -u LD_LIBRARY_PATH -u _ROS_WHEELS_BOOTSTRAP_COMPLETE -u PYTHONPATH "$PYTHON" - >>"$LOG" 2>&1 <<'PY' ||
from rclpy.serialization import deserialize_message, serialize_message

from drr_interfaces.msg import EpisodeEvent, Reward, SafetyStatus
from drr_interfaces.srv import LabelEpisode

reward = Reward(total=1.5, kind="entropy", frame_index=7)
assert deserialize_message(serialize_message(reward), Reward) == reward
for message in (EpisodeEvent(event=EpisodeEvent.STARTED), SafetyStatus(), LabelEpisode.Request(episode_path="a.mcap"),
                LabelEpisode.Response(stamps_ns=[1, 2])):
    assert deserialize_message(serialize_message(message), type(message)) == message
print("drr_interfaces: import and serialisation round trip ok")
PY
    fail "the installed $PACKAGE does not import or serialise in $PYTHON" "$LOG"

printf '%s\n' "$STAMP_VALUE" >"$STAMP"
log "$PACKAGE built and installed in $(elapsed): from drr_interfaces.msg import Reward"
