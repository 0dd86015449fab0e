"""Parameters of `dynaflip record` (data/recorder.py): where and how demonstrations are recorded.

YAML: `config/record.yaml` (loaded with `configs.io.load_yaml(RecordConfig, path)`); command-line
flags of `dynaflip record` override it. The recording rate is fixed by the dataset schema
(`data.schema.RECORD_FPS`, the policy rate) and is not a parameter. Teleoperated recording
(`dynaflip record --teleop`) has its own settings, `teleop.config.TeleopConfig`; the flags the
two share (--episodes, --seed, --image-size, --episode-timeout-s, --repo-id) fill whichever applies.
"""
from __future__ import annotations

from dataclasses import dataclass

from dynaflip_ros.configs.image import require_image_hw
from dynaflip_ros.configs.validate import require_finite, require_int, require_range, require_range_pair


@dataclass
class RecordConfig:
    """Recording of sim (scripted expert) demonstrations into a LeRobotDataset v3.0.

    Attributes:
        repo_id: LeRobot repo id stored with the dataset (local only, never pushed).
        episodes: expert episodes to attempt (seeds seed .. seed + episodes - 1).
        seed: environment seed of the first attempt.
        image_hw: rendered / recorded image (height, width), px.
        only_success: discard episodes the expert fails (else keep them with success false).
        max_episode_s: simulated-time cap of one expert episode, s.
        randomize_scene: draw lights, table / floor colours and the camera pose per episode
            (`configs.sim.SceneRandomization`; the encoder's pre-training data); False records
            the nominal scene (the policy's demos).
        action_noise_rad: > 0 perturbs the expert's joint commands during approach and descent
            by an Ornstein-Uhlenbeck process of this standard deviation, rad (DART recovery data,
            `sim.action_noise`); the recorded actions stay the expert's clean targets. 0: none.
        action_noise_tau_s: correlation time of that process, s.
        action_noise_phases: the expert phases (`data.schema.PHASES`) in which that process is
            driven; in the others it decays with action_noise_tau_s (`sim.action_noise`).
            ("approach",) with a larger action_noise_rad puts the recorded states where a
            policy's imprecise approach ends, and leaves the descent to decay back to the path.
        regrasp_fraction: share of episodes (drawn per seed) whose first grasp the expert aims
            `regrasp_offset_m` off the object, so it closes beside it, lifts, sees the object
            still on the table and re-plans the pick from there (recovery data for a policy
            whose grasp missed; `sim.rollout.SimRunner.run_expert_episode`). The frames before
            the re-plan are recorded as context, not as training targets. 0: none.
        regrasp_offset_m: (min, max) distance of that offset in the table plane, m (direction
            uniform).
        takeover_window_s: (min, max) s: with a learner's policy (`dynaflip record --sim
            --policy DIR --encoder DIR`), it drives each episode until a time drawn uniformly in
            this window (or until it commands the gripper closed), then the expert takes over
            from that state (`sim.record_demos.record_sim_episodes`).
    """

    repo_id: str = "local/pick_into_sink"
    episodes: int = 10
    seed: int = 0
    image_hw: tuple[int, int] = (224, 224)
    only_success: bool = True
    max_episode_s: float = 15.0
    randomize_scene: bool = False
    action_noise_rad: float = 0.0
    action_noise_tau_s: float = 0.3
    action_noise_phases: tuple[str, ...] = ("approach", "descend")
    regrasp_fraction: float = 0.0
    regrasp_offset_m: tuple[float, float] = (0.025, 0.05)
    takeover_window_s: tuple[float, float] = (1.0, 6.0)

    def __post_init__(self) -> None:
        if not isinstance(self.repo_id, str) or self.repo_id.count("/") != 1 or not all(self.repo_id.split("/")):
            raise ValueError(f"RecordConfig.repo_id must look like 'owner/name', got {self.repo_id!r}")
        require_int("RecordConfig", "episodes", self.episodes, 1)
        require_int("RecordConfig", "seed", self.seed, 0)
        self.image_hw = require_image_hw("RecordConfig", "image_hw", self.image_hw)  # configs/image.py
        if not isinstance(self.only_success, bool):
            raise ValueError(f"RecordConfig.only_success must be a bool, got {self.only_success!r}")
        require_finite("RecordConfig", "max_episode_s", self.max_episode_s, lo=0, lo_open=True)
        if not isinstance(self.randomize_scene, bool):
            raise ValueError(f"RecordConfig.randomize_scene must be a bool, got {self.randomize_scene!r}")
        require_range("RecordConfig", "action_noise_rad", self.action_noise_rad, 0.0, 0.2, unit="rad")
        require_finite("RecordConfig", "action_noise_tau_s", self.action_noise_tau_s, lo=0, lo_open=True)
        phases = self.action_noise_phases
        if isinstance(phases, str) or not phases or not all(isinstance(p, str) and p for p in phases) \
                or len(set(phases)) != len(phases):
            raise ValueError(f"RecordConfig.action_noise_phases must be a non-empty list of distinct expert phase "
                             f"names, got {phases!r}")
        self.action_noise_phases = tuple(phases)  # names checked against data.schema.PHASES by sim.action_noise
        require_range("RecordConfig", "regrasp_fraction", self.regrasp_fraction, 0.0, 1.0)
        self.regrasp_offset_m = require_range_pair("RecordConfig", "regrasp_offset_m", self.regrasp_offset_m)
        require_range("RecordConfig", "regrasp_offset_m[0]", self.regrasp_offset_m[0], 0.0, 0.2, lo_open=True, unit="m")
        require_range("RecordConfig", "regrasp_offset_m[1]", self.regrasp_offset_m[1], 0.0, 0.2, lo_open=True, unit="m")
        self.takeover_window_s = require_range_pair("RecordConfig", "takeover_window_s", self.takeover_window_s)
        require_range("RecordConfig", "takeover_window_s[0]", self.takeover_window_s[0], 0.0, 60.0, unit="s")
        require_range("RecordConfig", "takeover_window_s[1]", self.takeover_window_s[1], 0.0, 60.0, unit="s")
