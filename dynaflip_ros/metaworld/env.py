"""MetaWorld tasks behind one small interface: environment factory, scripted expert, demos.

MetaWorld (Yu et al., "Meta-World", CoRL 2019; Farama Meta-World 3.1.1, the `metaworld` package):
a Sawyer arm in MuJoCo with 50 manipulation tasks, each with a scripted expert
(`metaworld.policies.ENV_POLICY_MAP`). Observations: 39 floats, of which [0:3] is the hand
position (m) and [3] the gripper opening (the proprioception a policy gets here); actions: 4
floats in [-1, 1] (hand displacement x, y, z and gripper effort); at most MAX_STEPS steps per
episode; `info["success"]` says whether the task is solved.

Seeding: a task environment built with seed s and reset with seed s always starts from the same
object and goal placement (`make_env`), so an episode seed names one initial scene whatever ran
before it. Images come from the task's `corner2` camera rendered offscreen (MUJOCO_GL=egl or
osmesa) at the encoder's input size by a `mujoco.Renderer` per environment, as MuJoCo renders it
(no flip), without multisampling, shadows and reflections (RENDER; on this CPU renderer about
7 ms a frame at 64 x 64 instead of 111 ms at 128 x 128 with them, measured while two other jobs ran).

Compatibility: metaworld 3.1.1 pins mujoco 3.3.0 and writes an 11-float weld-equality record,
while MuJoCo 4 stores more floats per equality; `import_metaworld` replaces that one method
(`SawyerMocapBase.reset_mocap_welds`) with one that writes the same 11 values into the first 11
slots (the rest keep MuJoCo's defaults). The package is installed without its dependency pins
(requirements/nodeps.txt); with that change the experts of the default tasks solve 200 of 207
episodes here (docs/results.md, "MetaWorld on this machine").
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import dynaflip_ros.sim  # noqa: F401  (a headless MUJOCO_GL default before mujoco is imported)
from dynaflip_ros.errors import UserError

# Tasks across MetaWorld's difficulty levels (Seo et al. 2022's easy / medium / hard / very hard split).
DEFAULT_TASKS = ("reach-v3", "button-press-topdown-v3", "drawer-open-v3", "door-open-v3", "pick-place-v3",
                 "assembly-v3", "bin-picking-v3", "peg-insert-side-v3")
MAX_STEPS = 500  # MetaWorld's max_path_length
CAMERA = "corner2"
RENDER = "own_noaa_noshadow"  # the render settings (TaskEnv); part of the demo cache's file names
PROPRIO_DIM = 4  # hand position (3, m) + gripper opening (1)
ACTION_DIM = 4
_WELD = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 5.0)  # metaworld's weld record (anchor, relpose, torquescale)


def import_metaworld():
    """The `metaworld` module with the MuJoCo 4 weld fix applied (module doc). Raises UserError
    when the package is missing."""
    try:
        import metaworld
        import metaworld.sawyer_xyz_env as sawyer
    except ImportError as e:
        raise UserError("the MetaWorld benchmark needs metaworld 3.1.1: ./scripts/setup_env.sh installs it "
                        f"(pip install --no-deps metaworld==3.1.1) ({e})") from e
    if not getattr(sawyer.SawyerMocapBase.reset_mocap_welds, "_dynaflip_mujoco4", False):
        import mujoco

        def reset_mocap_welds(self) -> None:
            if self.model.nmocap > 0 and self.model.eq_data is not None:
                for i in range(self.model.eq_data.shape[0]):
                    if self.model.eq_type[i] == mujoco.mjtEq.mjEQ_WELD:
                        self.model.eq_data[i, :len(_WELD)] = _WELD

        reset_mocap_welds._dynaflip_mujoco4 = True
        sawyer.SawyerMocapBase.reset_mocap_welds = reset_mocap_welds
    return metaworld


def task_name(name: str) -> str:
    """"reach" or "reach-v3" -> "reach-v3". Raises UserError for a task MetaWorld does not have."""
    import_metaworld()
    from metaworld.policies import ENV_POLICY_MAP

    full = name if name.endswith("-v3") else f"{name}-v3"
    if full not in ENV_POLICY_MAP:
        raise UserError(f"unknown MetaWorld task {name!r}; e.g. {', '.join(DEFAULT_TASKS)}")
    return full


class TaskEnv:
    """One MetaWorld environment with its own offscreen camera (`mujoco.Renderer` on the task's
    model: every environment renders its own scene, several at once included; gymnasium's
    shared-context renderer returned stale frames once a second environment existed). `step`,
    `close` and `unwrapped` are the gymnasium environment's; `render()` -> (H, W, 3) uint8."""

    def __init__(self, env, image_hw: tuple[int, int]):
        import mujoco

        self.env = env
        model = env.unwrapped.model
        model.vis.quality.offsamples = 0  # before the context exists: no multisampling
        self._renderer = mujoco.Renderer(model, height=int(image_hw[0]), width=int(image_hw[1]))
        self._flags = (mujoco.mjtRndFlag.mjRND_SHADOW, mujoco.mjtRndFlag.mjRND_REFLECTION)

    @property
    def unwrapped(self):
        return self.env.unwrapped

    def render(self) -> np.ndarray:
        self._renderer.update_scene(self.env.unwrapped.data, camera=CAMERA)
        for flag in self._flags:
            self._renderer.scene.flags[flag] = 0
        return self._renderer.render().copy()

    def step(self, action: np.ndarray):
        return self.env.step(action)

    def close(self) -> None:
        self._renderer.close()
        self.env.close()


def make_env(task: str, seed: int, image_hw: tuple[int, int]) -> tuple[TaskEnv, np.ndarray]:
    """A `TaskEnv` of `task` built and reset with `seed` (module doc), rendering (H, W) =
    image_hw. Returns (env, first observation (39,))."""
    import gymnasium as gym

    import_metaworld()
    env = gym.make("Meta-World/MT1", env_name=task, seed=int(seed))
    obs, _ = env.reset(seed=int(seed))
    return TaskEnv(env, image_hw), obs


def expert(task: str):
    """The task's scripted expert: `get_action(obs (39,)) -> (4,)`."""
    import_metaworld()
    from metaworld.policies import ENV_POLICY_MAP

    return ENV_POLICY_MAP[task]()


def proprio(obs: np.ndarray) -> np.ndarray:
    """(..., 39) observations -> (..., 4) float32 hand position (m) and gripper opening."""
    return np.asarray(np.asarray(obs)[..., :PROPRIO_DIM], np.float32)


@dataclass
class TaskDemos:
    """Successful expert demos of one task, frames in episode order. images (N, H, W, 3) uint8;
    observations (N, 39) float32 (module doc); actions (N, 4) float32 in [-1, 1]; episode (N,)
    int64 demo index; seeds: the episode seed of each demo; attempts: episodes run to get them."""

    task: str
    images: np.ndarray
    observations: np.ndarray
    actions: np.ndarray
    episode: np.ndarray
    seeds: list[int]
    attempts: int

    @property
    def proprio(self) -> np.ndarray:
        """(N, 4) hand position (m) and gripper opening."""
        return proprio(self.observations)


def record_demos(task: str, n_demos: int, image_hw: tuple[int, int], seed: int = 0,
                 max_attempts: int | None = None) -> TaskDemos:
    """`n_demos` successful episodes of the task's expert from episode seeds seed, seed + 1, ...
    (a failed episode is dropped); each frame: the rendered image before the step, the observation
    and the expert's action, until success (that step included) or MAX_STEPS. Raises
    RuntimeError when max_attempts (default 3 * n_demos) episodes give fewer successes."""
    max_attempts = 3 * n_demos if max_attempts is None else max_attempts
    policy = expert(task)
    images, observations, actions, episode, seeds = [], [], [], [], []
    attempts = 0
    while len(seeds) < n_demos:
        if attempts >= max_attempts:
            raise RuntimeError(f"{task}: the expert solved {len(seeds)} of {attempts} episodes; needed {n_demos}")
        s = seed + attempts
        attempts += 1
        env, obs = make_env(task, s, image_hw)
        ep_img, ep_obs, ep_act = [], [], []
        for _ in range(MAX_STEPS):
            action = np.clip(policy.get_action(obs), -1.0, 1.0).astype(np.float32)
            ep_img.append(env.render())
            ep_obs.append(np.asarray(obs, np.float32))
            ep_act.append(action)
            obs, _, _, _, info = env.step(action)
            if info["success"]:
                images += ep_img
                observations += ep_obs
                actions += ep_act
                episode += [len(seeds)] * len(ep_img)
                seeds.append(s)
                break
        env.close()
    return TaskDemos(task=task, images=np.stack(images), observations=np.stack(observations), actions=np.stack(actions),
                     episode=np.asarray(episode, np.int64), seeds=seeds, attempts=attempts)
