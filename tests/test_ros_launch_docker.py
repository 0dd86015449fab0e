"""Static checks of docker/ (no Docker engine on the development machines: nothing is built or
run here). compose.yaml: YAML structure, the real-cell runtime settings (host network/IPC, USB,
real-time limits), commands that name existing launch files and declared arguments, paths that
exist; `docker-compose config` (Compose v1 schema, Debian package) where installed. Dockerfiles:
files they COPY exist and are not .dockerignored, one torch / torchvision / onnxruntime pin
shared with requirements/, the CUDA variant's single CUDA major, libhidapi installed.
entrypoint.sh: `bash -n`, shellcheck where installed, and run for real against a stand-in ROS
setup: the package's executables on PATH, and every compose command, rendered with its variables
unset and set, reaching a stand-in `ros2` as arguments of the ROS 2 launch-argument grammar.
"""
import os
import re
import shlex
import shutil
import subprocess
from fnmatch import fnmatch
from pathlib import Path

import launch_static as ls
import pytest
import yaml

ROOT = ls.ROOT
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "compose.yaml"
DOCKERFILES = {"cpu": DOCKER / "Dockerfile", "cuda": DOCKER / "Dockerfile.cuda"}
ENTRYPOINT = DOCKER / "entrypoint.sh"
HARDWARE_SERVICES = ("real", "gpu", "record")
SHARE = "/ws/install/dynaflip_ros/share/dynaflip_ros/"


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())  # PyYAML resolves the `<<: *anchor` merge keys


def interpolate(text: str, env: dict[str, str] | None = None) -> str:
    """Compose interpolation of ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:+alt}, ${VAR+alt}
    (no nesting) with `env` (default: empty). Source: Compose specification, "Interpolation",
    https://github.com/compose-spec/compose-spec/blob/main/12-interpolation.md"""
    env = env or {}

    def sub(m: re.Match) -> str:
        name, op, word = m.group(1), m.group(2) or "", m.group(3) or ""
        value = env.get(name)
        if op == ":-":
            return value if value else word
        if op == "-":
            return word if value is None else value
        if op == ":+":
            return word if value else ""
        if op == "+":
            return "" if value is None else word
        return value or ""

    return re.sub(r"\$\{([A-Z_][A-Z0-9_]*)(?:(:?[-+])([^}]*))?\}", sub, text)


# ROS 2 launch-argument grammar: `name:=value`, name a valid identifier (launch argument names
# are launch configuration names), value non-empty unless quoted ('' / ""). ros2launch itself
# rejects "", a missing ':=', a leading ':=' and a single trailing ':=' ("malformed launch
# argument", ros2launch/api/api.py parse_launch_arguments, https://github.com/ros2/launch_ros).
LAUNCH_ARGUMENT = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*):=(?P<value>.+)$", re.DOTALL)


def launch_argument_error(arg: str) -> str:
    """'' when `arg` is a valid `ros2 launch` argument, else why not."""
    m = LAUNCH_ARGUMENT.match(arg)
    if m is None:
        return f"malformed launch argument {arg!r}, expected format '<name>:=<value>'"
    if m["value"].strip() == "":
        return f"blank value in {arg!r}"
    return ""


def pins(path: Path) -> dict[str, str]:
    """name -> specifier of a requirements / constraints file."""
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        m = re.match(r"^([A-Za-z0-9_.\-\[\]]+?)(\[[^\]]*\])?\s*([<>=!~].*)?$", line)
        if line and m:
            out[m.group(1).lower().replace("_", "-")] = (m.group(3) or "").strip()
    return out


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    lines, buf = [], ""
    for raw in dockerfile.read_text().splitlines():
        if raw.lstrip().startswith("#") and not buf:
            continue
        if raw.lstrip().startswith("#"):
            continue
        buf += raw.rstrip()
        if buf.endswith("\\"):
            buf = buf[:-1] + " "
            continue
        if buf.strip():
            word, _, rest = buf.strip().partition(" ")
            lines.append((word.upper(), rest.strip()))
        buf = ""
    return lines


def dockerignore() -> list[str]:
    return [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()
            if ln.strip() and not ln.startswith("#")]


def ignored(rel: str) -> bool:
    parts = Path(rel).parts
    for pat in dockerignore():
        pat = pat.rstrip("/")
        for i in range(1, len(parts) + 1):
            prefix = "/".join(parts[:i])
            if fnmatch(prefix, pat) or fnmatch(prefix, pat.removeprefix("**/")) or fnmatch(parts[i - 1], pat.removeprefix("**/")):
                return True
    return False


# ----------------------------------------------------------------------------- compose
def test_compose_services_and_images():
    c = compose()
    assert set(c["services"]) == {"sim", "real", "gpu", "record"}
    s = c["services"]
    assert s["sim"]["build"] == {"context": "..", "dockerfile": "docker/Dockerfile"}
    assert s["gpu"]["build"] == {"context": "..", "dockerfile": "docker/Dockerfile.cuda"}
    assert s["sim"]["image"] == s["real"]["image"] == s["record"]["image"] == "dynaflip_ros:jazzy"
    assert s["gpu"]["image"] == "dynaflip_ros:jazzy-cuda"
    for name, svc in s.items():
        env = svc["environment"]
        assert {"ROS_DOMAIN_ID", "RMW_IMPLEMENTATION"} <= set(env), name
        assert interpolate(str(env["RMW_IMPLEMENTATION"])) in {"rmw_fastrtps_cpp", "rmw_cyclonedds_cpp"}
        assert 0 <= int(interpolate(str(env["ROS_DOMAIN_ID"]))) <= 101
        assert svc.get("stop_signal") == "SIGINT", f"{name}: ros2 launch shuts down cleanly on SIGINT"


@pytest.mark.parametrize("name", HARDWARE_SERVICES)
def test_real_cell_services_have_host_network_usb_and_realtime_limits(name):
    svc = compose()["services"][name]
    assert svc["network_mode"] == "host" and svc["ipc"] == "host"
    assert "SYS_NICE" in svc["cap_add"]
    assert svc["ulimits"]["rtprio"] == {"soft": 99, "hard": 99}
    assert svc["ulimits"]["memlock"] == {"soft": -1, "hard": -1}
    assert "c 189:* rmw" in svc["device_cgroup_rules"]  # USB character devices (RealSense via libusb)
    assert "/dev/bus/usb:/dev/bus/usb" in svc["volumes"]
    assert svc["restart"] == "no", "an arm driver must never be restarted automatically"
    assert svc.get("init") is True
    targets = {v.split(":")[1] for v in svc["volumes"]}
    assert {"/data/models", "/data/outputs", "/data/calibration", "/data/config"} <= targets


def test_gpu_service_reserves_an_nvidia_gpu_and_uses_tensorrt():
    svc = compose()["services"]["gpu"]
    devices = svc["deploy"]["resources"]["reservations"]["devices"]
    assert devices and devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert "encoder_backend:=tensorrt" in svc["command"]
    assert svc["environment"]["DYNAFLIP_TRT_CACHE"] == "/cache/tensorrt"
    assert any(v.endswith(":/cache/tensorrt") for v in svc["volumes"])
    assert "trt-cache" in compose()["volumes"]


def _launch_graph_arguments(launch_file: str) -> set[str]:
    """Arguments declared by a launch file and every file it includes (any condition)."""
    seen, todo, declared = set(), [launch_file], set()
    while todo:
        f = todo.pop()
        if f in seen:
            continue
        seen.add(f)
        lf = ls.parse(ls.LAUNCH_DIR / f)
        declared |= lf.declared
        todo += [i.target for i in lf.includes]
    return declared


@pytest.mark.parametrize("name", ["sim", "real", "gpu", "record"])
def test_compose_commands_launch_existing_files_with_declared_arguments(name):
    svc = compose()["services"][name]
    cmd = [interpolate(str(a)) for a in svc["command"]]
    assert cmd[:3] == ["ros2", "launch", "dynaflip_ros"]
    launch_file = cmd[3]
    assert (ls.LAUNCH_DIR / launch_file).is_file()
    declared = _launch_graph_arguments(launch_file)
    mounts = {v.split(":")[1]: v.split(":")[0] for v in svc["volumes"]}
    for arg in cmd[4:]:
        key, sep, value = arg.partition(":=")
        assert sep and key in declared, f"{name}: {arg!r} is not an argument of {launch_file}"
        if value.startswith(SHARE):  # installed by colcon from the checkout
            assert (ROOT / value.removeprefix(SHARE)).exists(), value
        for target, source in mounts.items():
            if value.startswith(target + "/") and source.startswith(".."):
                rel = value.removeprefix(target + "/")
                host = (DOCKER / source / rel).resolve()
                if source != "../outputs":
                    assert host.exists(), f"{name}: {value} -> {host} does not exist"


def test_compose_mounts_exist_in_the_checkout():
    gitignored = {ln.strip().strip("/") for ln in (ROOT / ".gitignore").read_text().splitlines()}
    for name, svc in compose()["services"].items():
        for v in svc.get("volumes", []):
            source = v.split(":")[0]
            if source.startswith(".."):
                path = (DOCKER / source).resolve()
                assert path.exists() or path.name in gitignored, f"{name}: volume source {source} missing"


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose (Compose v1) not installed")
def test_docker_compose_v1_validates_the_file(tmp_path):
    """Compose v1 (Debian's docker-compose 1.29) validates services against its schema without a
    Docker engine. It predates the top-level `name:` key (Compose v2), which is dropped for it."""
    text = "\n".join(ln for ln in COMPOSE.read_text().splitlines() if not ln.startswith("name:"))
    check = DOCKER / f".compose_check_{os.getpid()}.yaml"  # next to the original: same relative paths
    check.write_text(text)
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ROBOT_IP", "UR_TYPE", "CAMERA_SERIAL"))}
        r = subprocess.run(["docker-compose", "-f", str(check), "config"], cwd=DOCKER, env=env,
                           capture_output=True, text=True, timeout=120)
    finally:
        check.unlink()
    assert r.returncode == 0, r.stderr
    rendered = yaml.safe_load(r.stdout)
    assert rendered["services"]["real"]["network_mode"] == "host"
    assert "robot_ip:=" in rendered["services"]["real"]["command"]  # unset ROBOT_IP -> the launch's clear error


# ----------------------------------------------------------------------------- Dockerfiles
@pytest.mark.parametrize("kind", DOCKERFILES)
def test_dockerfile_copies_existing_files_that_the_context_keeps(kind):
    ins = instructions(DOCKERFILES[kind])
    assert ins[0][0] in ("FROM", "ARG")
    copies = [args for word, args in ins if word == "COPY"]
    assert copies
    for args in copies:
        *sources, _dest = shlex.split(args)
        for src in sources:
            if src == ".":
                continue
            assert (ROOT / src).exists(), f"{kind}: COPY {src} does not exist"
            assert not ignored(src.rstrip("/")), f"{kind}: COPY {src} is excluded by .dockerignore"
    entry = [args for word, args in ins if word == "ENTRYPOINT"]
    assert entry == ['["/entrypoint.sh"]']
    text = DOCKERFILES[kind].read_text()
    assert "colcon build" in text and "rosdep install --from-paths src" in text
    assert "python3 -m venv --system-site-packages /opt/venv" in text


def test_dockerignore_keeps_the_source_and_drops_the_heavy_dirs():
    for rel in (".venv", "outputs", ".git", "dynaflip_ros/__pycache__", "x.egg-info", ".pytest_cache"):
        assert ignored(rel), rel
    for rel in ("models/encoder/encoder.onnx", "launch/real_cell.launch.py", "config/real_cell.yaml",
                "requirements/base.txt", "docker/entrypoint.sh", "package.xml", "resource/dynaflip_ros",
                "calibration", "setup.py", "setup.cfg"):
        assert not ignored(rel), rel


@pytest.mark.parametrize("kind", DOCKERFILES)
def test_dockerfiles_pin_torch_like_the_project(kind):
    text = DOCKERFILES[kind].read_text()
    constraints = pins(ROOT / "requirements" / "constraints.txt")
    base = pins(ROOT / "requirements" / "base.txt")
    args = dict(re.findall(r"^ARG ([A-Z_]+)=(\S+)$", text, re.MULTILINE))
    assert constraints["torch"] == f"=={args['TORCH_VERSION']}"
    assert constraints["torchvision"] == f"=={args['TORCHVISION_VERSION']}"
    assert '"torch==${TORCH_VERSION}"' in text and '"torchvision==${TORCHVISION_VERSION}"' in text
    assert "-c requirements/constraints.txt -c docker/constraints-jazzy.txt" in text
    assert "requirements/nodeps.txt" in text
    # the grep that turns base.txt into the image's requirement list
    pattern = re.search(r"grep -v -E '([^']+)' requirements/base.txt", text).group(1)
    kept = [ln for ln in (ROOT / "requirements" / "base.txt").read_text().splitlines() if not re.search(pattern, ln)]
    assert not [ln for ln in kept if ln.startswith("ros-kilted-")], "Jazzy's rclpy comes from apt"
    assert not [ln for ln in kept if ln.startswith("torchvision==")], "installed with torch"
    if kind == "cpu":
        assert args["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
        assert "onnxruntime==" + base["onnxruntime"].removeprefix("==") in kept
    else:
        assert not [ln for ln in kept if ln.startswith("onnxruntime==")], "onnxruntime-gpu replaces it"
        assert f"=={args['ONNXRUNTIME_GPU_VERSION']}" == base["onnxruntime"], "GPU and CPU ONNX Runtime releases differ"
        cuda_major = re.search(r"nvidia/cuda:(\d+)\.", args["CUDA_IMAGE"]).group(1)
        assert f'"tensorrt-cu{cuda_major}==${{TENSORRT_VERSION}}"' in text, "TensorRT must match the image's CUDA major"
        assert cuda_major == "13", "torch 2.13.0 and onnxruntime-gpu 1.31.1 on PyPI are CUDA 13.0 builds"


def test_jazzy_constraints_keep_numpy_1_and_agree_with_the_project_pins():
    """Versions resolved for cp312/manylinux with both constraint files (pip --dry-run, 2026-11-21)
    satisfy both files; numpy stays 1.x for Jazzy's apt message packages."""
    from packaging.specifiers import SpecifierSet

    project = pins(ROOT / "requirements" / "constraints.txt")
    jazzy = pins(DOCKER / "constraints-jazzy.txt")
    assert jazzy["numpy"].startswith("==1.")
    resolved = {"numpy": "1.26.4", "opencv-python-headless": "4.11.0.86", "pandas": "2.3.3", "ml-dtypes": "0.5.4"}
    assert set(jazzy) == set(resolved)
    for name, version in resolved.items():
        assert version in SpecifierSet(jazzy[name]), (name, version)
        if name in project:
            assert version in SpecifierSet(project[name]), (name, version)


# ----------------------------------------------------------------------------- entrypoint
def test_entrypoint_is_valid_bash_and_executable():
    r = subprocess.run(["bash", "-n", str(ENTRYPOINT)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert os.access(ENTRYPOINT, os.X_OK)
    assert ENTRYPOINT.read_text().startswith("#!/usr/bin/env bash")


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
def test_entrypoint_passes_shellcheck():
    r = subprocess.run(["shellcheck", str(ENTRYPOINT)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_entrypoint_sources_both_setups_and_execs_the_command(tmp_path):
    ros = tmp_path / "ros_setup.bash"
    ros.write_text("export FAKE_ROS=jazzy\nexport AMENT_PREFIX_PATH=/opt/ros/jazzy\n")
    overlay = tmp_path / "install"
    overlay.mkdir()
    (overlay / "setup.bash").write_text('export AMENT_PREFIX_PATH="/ws/install/dynaflip_ros:$AMENT_PREFIX_PATH"\n')
    env = {"PATH": os.environ["PATH"], "DYNAFLIP_ROS_SETUP": str(ros), "DYNAFLIP_OVERLAY": str(overlay)}
    r = subprocess.run([str(ENTRYPOINT), "bash", "-c", 'echo "$FAKE_ROS $AMENT_PREFIX_PATH $$"'], env=env,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[:2] == ["jazzy", "/ws/install/dynaflip_ros:/opt/ros/jazzy"]
    r = subprocess.run([str(ENTRYPOINT), "sh", "-c", "exit 7"], env=env, capture_output=True, timeout=30)
    assert r.returncode == 7, "the command's exit code must come through (exec)"
    r = subprocess.run([str(ENTRYPOINT), "true"], env={**env, "DYNAFLIP_OVERLAY": str(tmp_path / "none")},
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "not found" in r.stderr


# ----------------------------------------------------------------------------- compose -> ros2 launch argv
ALL_SET = {"ROBOT_IP": "192.168.1.102", "UR_TYPE": "e-series", "CAMERA_SERIAL": "012345678901",
           "GRIPPER": "none", "PARAMS_FILE": "/data/config/my_cell.yaml", "TELEOP_DEVICE": "gamepad",
           "DEMOS_DIR": "/data/outputs/demos_2", "EPISODES": "5"}


def _ros2_argv_through_entrypoint(tmp_path: Path, command: list[str]) -> tuple[list[str], str]:
    """The argv `ros2` receives when the image runs `command` (docker/entrypoint.sh with a
    stand-in ROS setup and a stand-in `ros2` that writes its argv NUL-separated), and stderr."""
    ros = tmp_path / "ros_setup.bash"
    ros.write_text("# stand-in for /opt/ros/jazzy/setup.bash\n")
    overlay = tmp_path / "install"
    (overlay / "dynaflip_ros" / "lib" / "dynaflip_ros").mkdir(parents=True, exist_ok=True)
    (overlay / "setup.bash").write_text("# stand-in colcon overlay\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    out = tmp_path / "argv.bin"
    stub = bin_dir / "ros2"
    stub.write_text(f'#!/usr/bin/env bash\nprintf "%s\\0" "$@" > "{out}"\n')
    stub.chmod(0o755)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "DYNAFLIP_ROS_SETUP": str(ros), "DYNAFLIP_OVERLAY": str(overlay)}
    r = subprocess.run([str(ENTRYPOINT), *command], env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return out.read_bytes().decode().split("\0")[:-1], r.stderr


@pytest.mark.parametrize("variables", ["unset", "set"])
@pytest.mark.parametrize("name", ["sim", "real", "gpu", "record"])
def test_compose_commands_reach_ros2_launch_as_valid_launch_arguments(name, variables, tmp_path):
    """With the compose variables unset, `robot_ip:=${ROBOT_IP:-}` renders as `robot_ip:=`, which
    ros2 launch rejects before loading anything; the entrypoint drops such arguments (the launch
    file's default "" applies). With them set, every value arrives unchanged."""
    env = ALL_SET if variables == "set" else {}
    cmd = [interpolate(str(a), env) for a in compose()["services"][name]["command"]]
    argv, stderr = _ros2_argv_through_entrypoint(tmp_path, cmd)
    assert argv[:3] == ["launch", "dynaflip_ros", cmd[3]]
    errors = [e for e in map(launch_argument_error, argv[3:]) if e]
    assert not errors, errors
    given = dict(a.split(":=", 1) for a in argv[3:])
    rendered = dict(a.split(":=", 1) for a in cmd[4:])
    assert given == {k: v for k, v in rendered.items() if v}, "a non-empty argument was changed or lost"
    if variables == "set":
        assert given.items() >= {k: v for k, v in rendered.items()}.items() and "dropped" not in stderr
        if name in HARDWARE_SERVICES:
            assert given["robot_ip"] == "192.168.1.102" and given["camera_serial"] == "012345678901"
    elif name in HARDWARE_SERVICES:
        assert "robot_ip" not in given and "dropped empty launch argument 'robot_ip:='" in stderr


@pytest.mark.parametrize("arg,ok", [("robot_ip:=10.0.0.2", True), ("robot_ip:=", False), ("", False),
                                    (":=x", False), ("robot_ip", False), ("1ip:=x", False), ("a-b:=x", False),
                                    ("a:=''", True), ('a:=""', True), ("a:= ", False), ("a:=b:=c", True)])
def test_launch_argument_grammar(arg, ok):
    assert (launch_argument_error(arg) == "") is ok


def test_entrypoint_drops_only_empty_launch_arguments_and_only_for_ros2_launch(tmp_path):
    argv, _ = _ros2_argv_through_entrypoint(
        tmp_path, ["ros2", "launch", "dynaflip_ros", "x.launch.py", "a:=", "", "b:=1", "c:=''", "--show-args"])
    assert argv == ["launch", "dynaflip_ros", "x.launch.py", "b:=1", "c:=''", "--show-args"]
    argv, stderr = _ros2_argv_through_entrypoint(tmp_path, ["ros2", "run", "dynaflip_ros", "camera_node", "a:="])
    assert argv == ["run", "dynaflip_ros", "camera_node", "a:="] and "dropped" not in stderr


def test_entrypoint_puts_the_package_executables_on_path(tmp_path):
    """colcon installs console scripts into <overlay>/dynaflip_ros/lib/dynaflip_ros (setup.cfg),
    which the overlay's setup.bash does not put on PATH: `docker run IMAGE dynaflip ...` needs
    the entrypoint to."""
    _ros2_argv_through_entrypoint(tmp_path, ["ros2", "launch", "p", "f"])  # builds the stand-in overlay
    exe = tmp_path / "install" / "dynaflip_ros" / "lib" / "dynaflip_ros" / "dynaflip"
    exe.write_text("#!/usr/bin/env bash\necho dynaflip-stub \"$@\"\n")
    exe.chmod(0o755)
    env = {"PATH": os.environ["PATH"], "DYNAFLIP_ROS_SETUP": str(tmp_path / "ros_setup.bash"),
           "DYNAFLIP_OVERLAY": str(tmp_path / "install")}
    r = subprocess.run([str(ENTRYPOINT), "dynaflip", "--help"], env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stdout.strip() == "dynaflip-stub --help", r.stderr


@pytest.mark.parametrize("kind", DOCKERFILES)
def test_images_have_hidapi_and_check_dynaflip_runs_by_name(kind):
    text = DOCKERFILES[kind].read_text()
    apt = " ".join(args for word, args in instructions(DOCKERFILES[kind]) if word == "RUN" and "apt-get install" in args)
    assert "libhidapi-hidraw0" in apt.split(), "the SpaceMouse device (pyspacemouse -> easyhid) needs libhidapi"
    assert "/entrypoint.sh dynaflip --help" in text
