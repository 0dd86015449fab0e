"""Parameters of the ROS 2 nodes of the Pick-into-Sink graph (ROS-free dataclasses).

One dataclass per node; `ros/params.py` declares each field as a ROS parameter (nested
dataclasses become dotted names, e.g. `safety.speed_scale`) and loads the node's parameters
back into the dataclass, so validation lives here in `__post_init__`. Default values of the
deployed graph: `config/pick_into_sink.yaml` (one `<node_name>: ros__parameters:` section per
node). Node names: sim_cell, camera, ur3_driver (these three share the `sim_cell_node` process
in simulation), encoder, policy, episode_manager.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from dynaflip_ros.configs.io import ConfigError
from dynaflip_ros.configs.policy import DEFAULT_SAMPLES_PER_CHUNK, MAX_SAMPLES_PER_CHUNK
from dynaflip_ros.configs.realsense import RealSenseConfig
from dynaflip_ros.configs.robot import URRtdeConfig
from dynaflip_ros.configs.safety import SafetyConfig
from dynaflip_ros.configs.sim import SimConfig
from dynaflip_ros.configs.validate import (
    require_choice, require_finite, require_int, require_non_empty, require_positive, require_range,
)

CAMERA_BACKENDS: tuple[str, ...] = ("sim", "realsense")
ARM_BACKENDS: tuple[str, ...] = ("sim", "ur_rtde")
ENCODER_BACKENDS: tuple[str, ...] = ("auto", "onnxruntime", "tensorrt", "torch")


@dataclass
class SimCellNodeConfig:
    """Node `sim_cell`: owns the MuJoCo world (`sim.pick_into_sink.PickIntoSinkEnv`) shared by
    the `camera` and `ur3_driver` nodes of the same process, advances physics in real time and
    serves /episode/command -> /episode/status.

    sim: the cell (configs/sim.py). status_rate_hz: /episode/status publish rate.
    """

    sim: SimConfig = field(default_factory=SimConfig)
    status_rate_hz: float = 5.0

    def __post_init__(self) -> None:
        if isinstance(self.sim, dict):
            self.sim = SimConfig(**self.sim)
        require_positive("SimCellNodeConfig", "status_rate_hz", self.status_rate_hz, 100.0)


@dataclass
class CameraNodeConfig:
    """Node `camera`: publishes /camera/color/image_raw (rgb8) + camera_info.

    backend: "sim" (only inside sim_cell_node: the MuJoCo world is shared with the arm) or
        "realsense" (real cell, `cameras.realsense`). rate_hz: capture/publish rate (the policy rate, 10 Hz).
    frame_id: the optical frame of the colour image (OpenCV convention, REP 103 `_optical_frame`).
    realsense: the RealSense D4xx backend (configs/realsense.py; ROS params `realsense.*`), used
        when backend == "realsense".
    """

    backend: str = "sim"
    rate_hz: float = 10.0
    frame_id: str = "camera_color_optical_frame"
    realsense: RealSenseConfig = field(default_factory=RealSenseConfig)

    def __post_init__(self) -> None:
        if isinstance(self.realsense, dict):
            self.realsense = RealSenseConfig(**self.realsense)
        require_choice("CameraNodeConfig", "backend", self.backend, CAMERA_BACKENDS)
        require_positive("CameraNodeConfig", "rate_hz", self.rate_hz, 120.0)
        require_non_empty("CameraNodeConfig", "frame_id", self.frame_id)


@dataclass
class Ur3DriverNodeConfig:
    """Node `ur3_driver`: action chunks -> interpolator -> servo loop -> SafeArm -> arm.

    backend: "sim" (inside sim_cell_node) or "ur_rtde" (real UR3, `robot.ur_rtde_arm`).
    servo_rate_hz: servo loop rate (125 Hz on a CB3 controller, 500 Hz e-Series).
    joint_state_rate_hz: /joint_states publish rate. status_rate_hz: /ur3_driver/status rate.
    max_chunk_age_s: an action chunk whose header stamp (the observation's capture time) is
        older than this on arrival is dropped (counted as stale).
    safety: limits enforced by `robot.safety.SafeArm` (configs/safety.py).
    ur_rtde: connection / servoj settings of the real arm (configs/robot.py; backend ur_rtde).
    command_lead_s: the servo loop samples action chunks this far ahead (s) to compensate the
        controller's servoj filter delay (`ServoLoop.command_lead_s`); 0 in simulation.
    dry_hold_s: when the chunk being followed ends (or expires) before the next one arrives, the
        servo loop keeps streaming the last target for this long (s): the arm holds position
        instead of being stopped by the watchdog for a late chunk; after it the loop goes quiet
        and the watchdog stops the arm (`ServoLoop.end_hold_s`; the real arm's settle hold is
        the larger of the two). 0: stop as soon as the chunk ends.
    action_ttl_s: an action is executed only while its chunk's observation is at most this old
        (s, on the loop's clock); past it the driver holds position as above (0: no limit).
    servo_in_worker: backend ur_rtde: run the interpolator, the servo loop and SafeArm inside
        the RTDE worker process (`robot.ur_rtde_servo.WorkerServoCore`), away from this node's
        GIL; false: in this node process, as teleop and calibration do (the direct layout).
    watchdog_missed_ticks, servo_jitter_s: the driver's SafeArm watchdog timeout derives from
        the servo period: `watchdog_timeout_s` = watchdog_missed_ticks / servo_rate_hz +
        servo_jitter_s (the worst lateness of a servo tick measured on the machine that runs
        the loop: benchmarks/bench_servo_layout.py reports it), capped at
        safety.watchdog_timeout_s (the bound the stale-command stop is specified against).
        A stream that misses that many ticks beyond the jitter is a fault; shorter gaps are not.
        watchdog_missed_ticks 0: safety.watchdog_timeout_s as is.
    """

    backend: str = "sim"
    servo_rate_hz: float = 125.0
    joint_state_rate_hz: float = 125.0
    status_rate_hz: float = 2.0
    max_chunk_age_s: float = 1.0
    safety: SafetyConfig = field(default_factory=SafetyConfig)
    ur_rtde: URRtdeConfig = field(default_factory=URRtdeConfig)
    command_lead_s: float = 0.0
    dry_hold_s: float = 0.5
    action_ttl_s: float = 1.5
    servo_in_worker: bool = True
    watchdog_missed_ticks: int = 3
    servo_jitter_s: float = 0.01

    @property
    def watchdog_timeout_s(self) -> float:
        """SafeArm's watchdog timeout in the driver (s): see the class docstring."""
        if self.watchdog_missed_ticks == 0:
            return self.safety.watchdog_timeout_s
        derived = self.watchdog_missed_ticks / self.servo_rate_hz + self.servo_jitter_s
        return min(derived, self.safety.watchdog_timeout_s)

    def __post_init__(self) -> None:
        if isinstance(self.safety, dict):
            self.safety = SafetyConfig(**self.safety)
        if isinstance(self.ur_rtde, dict):
            self.ur_rtde = URRtdeConfig(**self.ur_rtde)
        require_range("Ur3DriverNodeConfig", "dry_hold_s", self.dry_hold_s, 0, 1.0, kind="", unit="s")
        require_range("Ur3DriverNodeConfig", "action_ttl_s", self.action_ttl_s, 0, 10.0, kind="", unit="s")
        require_choice("Ur3DriverNodeConfig", "backend", self.backend, ARM_BACKENDS)
        require_positive("Ur3DriverNodeConfig", "servo_rate_hz", self.servo_rate_hz, 1000.0)
        require_positive("Ur3DriverNodeConfig", "joint_state_rate_hz", self.joint_state_rate_hz, 1000.0)
        require_positive("Ur3DriverNodeConfig", "status_rate_hz", self.status_rate_hz, 100.0)
        require_positive("Ur3DriverNodeConfig", "max_chunk_age_s", self.max_chunk_age_s, 10.0)
        if self.backend == "ur_rtde" and self.ur_rtde.worker_stale_command_s < self.safety.watchdog_timeout_s:
            raise ConfigError(
                f"Ur3DriverNodeConfig: ur_rtde.worker_stale_command_s ({self.ur_rtde.worker_stale_command_s} s) must be "
                f">= safety.watchdog_timeout_s ({self.safety.watchdog_timeout_s} s), so a node resuming after a stall "
                "re-anchors at the measured pose instead of chasing targets the stopped arm fell behind")
        require_range("Ur3DriverNodeConfig", "command_lead_s", self.command_lead_s, 0, 0.5, kind="", unit="s")
        require_range("Ur3DriverNodeConfig", "servo_jitter_s", self.servo_jitter_s, 0, 0.1, kind="", unit="s")
        require_int("Ur3DriverNodeConfig", "watchdog_missed_ticks", self.watchdog_missed_ticks, 0, 100)


@dataclass
class EncoderNodeConfig:
    """Node `encoder`: image -> embedding f(o_t) (sensor_msgs/Image 32FC1, source stamp).

    model_dir: encoder artifact dir (manifest.json, encoder.onnx, ...); relative paths resolve
        against the working directory, then the package share / checkout (`resources.py`).
    backend: "auto" (tensorrt if available, else onnxruntime, else torch), "onnxruntime",
        "tensorrt" or "torch" (`inference.factory.load_encoder_backend`).
    num_threads: CPU threads of the ONNX Runtime / torch backends (1: the graph's processes
        share the CPU; see PolicyNodeConfig).
    """

    model_dir: str = "models/encoder"
    backend: str = "auto"
    num_threads: int = 1

    def __post_init__(self) -> None:
        require_non_empty("EncoderNodeConfig", "model_dir", self.model_dir)
        require_choice("EncoderNodeConfig", "backend", self.backend, ENCODER_BACKENDS)
        require_int("EncoderNodeConfig", "num_threads", self.num_threads, 1, 64)


@dataclass
class PolicyNodeConfig:
    """Node `policy`: (embedding, joint state) -> action chunk (JointTrajectory) at <= 10 Hz.

    model_dir: policy checkpoint or checkpoint-ensemble dir (`policies.checkpoint_ensemble.load_policy`).
    n_action_steps: replan once this many actions of the current chunk are due (0: the
        policy's own `n_action_steps`); between replans observations only feed the policy's
        observation history.
    max_observation_age_s: embeddings older than this on arrival (ROS clock) are skipped.
    max_joint_state_age_s: no /joint_states newer than this -> no action (the arm is silent).
    num_threads: torch intra-op threads for inference on the CPU. 1 by default: with the sim,
        encoder and policy processes sharing a 2-core CPU, a 2-thread torch pool is ~10x slower
        (measured 0.5-1.0 s vs 60-80 ms per 10-step DDIM chunk of the default 1.4 M-parameter policy).
    samples_per_chunk: chunks denoised in one batch and averaged per prediction
        (`DiffusionPolicyRunner.samples_per_chunk`; 1 = the plain sampler).
    instruction: the task sentence for the real cell ("put the red cube in the sink"; "" = none
        yet), published latched on /dynaflip/instruction at start-up; a message on that topic
        replaces it at run time. In simulation every episode brings its own (the sim cell's),
        which takes precedence. A language-conditioned policy sends nothing without one.
    temporal_ensemble_coeff: None (default) executes each chunk as sampled; a number m samples a
        chunk at every observation and sends the temporal ensemble of the overlapping chunks,
        weights exp(-m * i), i = 0 the oldest prediction (ACT; `policies.ensemble`; m = 0.01 in
        the ACT paper); n_action_steps is then 1.
    real_time_chunking: each new chunk continues the actions in flight: those due before it can
        arrive (the measured observation-to-driver latency, rounded up to whole actions) are
        frozen, the rest of the previous
        chunk guides it with decaying weight (`policies.rtc`); exclusive with
        temporal_ensemble_coeff. Pays off when chunks overlap (n_action_steps below the chunk).
    encoder_in_process: the CPU-frugal layout: this node runs the image encoder itself
        (`encoder`: its settings, as the encoder node's) on /camera/color/image_raw and hands
        each embedding straight to the policy, with no encoder process and no embedding topic;
        it publishes /dynaflip/encoder_info itself. False: embeddings come from the encoder node.
    """

    model_dir: str = "models/policy"
    n_action_steps: int = 0
    max_observation_age_s: float = 0.5
    max_joint_state_age_s: float = 0.5
    num_threads: int = 1
    samples_per_chunk: int = DEFAULT_SAMPLES_PER_CHUNK
    instruction: str = ""
    temporal_ensemble_coeff: float | None = None
    real_time_chunking: bool = False
    encoder_in_process: bool = False
    encoder: EncoderNodeConfig = field(default_factory=EncoderNodeConfig)

    def __post_init__(self) -> None:
        if isinstance(self.encoder, dict):
            self.encoder = EncoderNodeConfig(**self.encoder)
        require_choice("PolicyNodeConfig", "encoder_in_process", self.encoder_in_process, (False, True))
        if self.temporal_ensemble_coeff is not None:
            require_finite("PolicyNodeConfig", "temporal_ensemble_coeff", self.temporal_ensemble_coeff)
        require_choice("PolicyNodeConfig", "real_time_chunking", self.real_time_chunking, (False, True))
        if self.real_time_chunking and self.temporal_ensemble_coeff is not None:
            raise ConfigError("PolicyNodeConfig: real_time_chunking and temporal_ensemble_coeff are two ways to "
                              "switch chunks: choose one")
        require_non_empty("PolicyNodeConfig", "model_dir", self.model_dir)
        require_int("PolicyNodeConfig", "samples_per_chunk", self.samples_per_chunk, 1, MAX_SAMPLES_PER_CHUNK)
        require_int("PolicyNodeConfig", "n_action_steps", self.n_action_steps, 0)
        require_positive("PolicyNodeConfig", "max_observation_age_s", self.max_observation_age_s, 10.0)
        require_positive("PolicyNodeConfig", "max_joint_state_age_s", self.max_joint_state_age_s, 10.0)
        require_int("PolicyNodeConfig", "num_threads", self.num_threads, 1, 64)


def check_episode_seeds(owner: str, episodes: int, seed: int, seeds) -> tuple[int, ...]:
    """Validate a node's episode seeds (episodes >= 1, seed >= 0, explicit seeds distinct and
    >= 0); returns the explicit seeds as a tuple of ints. Raises ConfigError."""
    require_int(owner, "episodes", episodes, 1)
    require_int(owner, "seed", seed, 0)
    for s in seeds:
        require_int(owner, "seeds[]", s, 0)
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"{owner}.seeds must be distinct, got {list(seeds)}")
    return tuple(int(s) for s in seeds)


@dataclass
class OodSessionNodeConfig:
    """Node `ood_session`: an OOD evaluation session on the real cell, with an operator
    (eval/ood_operator.py, `dynaflip eval-ood --real`).

    session_dir: the session directory (results, bags, report; resumed when it exists; required:
    "" is refused by the node);
    model: the name the deployed encoder / policy pair gets in the session; conditions:
    comma-separated condition specs (`sim.perturbations`; nominal is always run, checked by the
    node); episodes / seed / seeds: the episode seeds (as the episode manager); episode_timeout_s:
    wall seconds after which a running episode ends as a timeout; record_topics: topics recorded
    per episode into `bags/<model>/<condition>_seed<seed>` (MCAP); keyboard: read the operator's
    keys from the terminal (Enter confirms, s / w / f mark); startup_timeout_s: how long to wait
    for /dynaflip/encoder_info and a ready /dynaflip/policy_info.
    """

    session_dir: str = ""
    model: str = "deployed"
    conditions: str = "distractors:1,lighting:0.5"
    episodes: int = 10
    seed: int = 100_000
    seeds: tuple[int, ...] = ()
    episode_timeout_s: float = 60.0
    record_topics: tuple[str, ...] = ("/camera/color/image_raw", "/camera/color/camera_info", "/joint_states",
                                      "/dynaflip/action_chunk", "/dynaflip/instruction", "/episode/status",
                                      "/ur3_driver/status")
    keyboard: bool = False
    startup_timeout_s: float = 120.0

    def __post_init__(self) -> None:
        owner = "OodSessionNodeConfig"
        if not self.model.strip() or not all(c.isalnum() or c in "_.-" for c in self.model):
            raise ConfigError(f"{owner}.model must be a name of letters, digits, _ . -; got {self.model!r}")
        self.seeds = check_episode_seeds(owner, self.episodes, self.seed, self.seeds)
        self.record_topics = tuple(self.record_topics)
        require_positive(owner, "episode_timeout_s", self.episode_timeout_s, 3600.0)
        require_positive(owner, "startup_timeout_s", self.startup_timeout_s, 3600.0)

    @property
    def episode_seeds(self) -> list[int]:
        """The seed of each episode: `seeds`, or `episodes` seeds from `seed`."""
        return list(self.seeds) or list(range(self.seed, self.seed + self.episodes))


@dataclass
class EpisodeManagerNodeConfig:
    """Node `episode_manager`: runs `episodes` episodes and reports success and latency.

    episodes: number of episodes; seed: seed of episode 0 (episode i uses seed + i);
    object_name: target object ("" = drawn from the seed); instruction: the sentence sent with
    every reset ("" = the sim cell draws one naming the target, `task.instructions`); it is
    used as given, so it needs object_name (the object it must name); episode_timeout_s:
    wall-clock limit per episode (an episode without a decided outcome by then is a
    `timeout`); startup_timeout_s: how long to wait for the graph (sim cell, encoder, policy);
    results_path: the evaluation record, JSON ("" = outputs/eval/ros_<UTC time>.json).
    seeds: explicit episode seeds (non-empty: one episode per seed, instead of `episodes` from
    `seed`); condition: the OOD condition of every reset (`sim.perturbations` spec, "" =
    nominal; checked by the node); episodes_path: JSON lines, one `EpisodeRecord` per finished
    episode, appended as each ends ("" = none; `dynaflip eval-ood --ros` reads it, so an
    interrupted run keeps its finished episodes).
    """

    episodes: int = 20
    seed: int = 100_000
    object_name: str = ""
    instruction: str = ""
    episode_timeout_s: float = 20.0
    startup_timeout_s: float = 120.0
    results_path: str = ""
    seeds: tuple[int, ...] = ()
    condition: str = ""
    episodes_path: str = ""

    def __post_init__(self) -> None:
        if self.instruction.strip() and not self.object_name.strip():
            raise ConfigError("EpisodeManagerNodeConfig: instruction needs object_name (the object it names; "
                              "the sim cell uses the instruction as given)")
        self.seeds = check_episode_seeds("EpisodeManagerNodeConfig", self.episodes, self.seed, self.seeds)
        require_positive("EpisodeManagerNodeConfig", "episode_timeout_s", self.episode_timeout_s, 3600.0)
        require_positive("EpisodeManagerNodeConfig", "startup_timeout_s", self.startup_timeout_s, 3600.0)

    @property
    def episode_seeds(self) -> list[int]:
        """The seed of each episode: `seeds`, or `episodes` seeds from `seed`."""
        return list(self.seeds) or list(range(self.seed, self.seed + self.episodes))
