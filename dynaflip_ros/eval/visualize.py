"""What an encoder's patch features separate and where a policy looks (`dynaflip visualize`).

Two pictures per camera frame, for any exported encoder (and policy trained on it):

- PCA of patch features: the encoder's feature map (B, C, h, w) - the token map the policy reads
  (`ImageEncoder.features_and_map`: the stride-8 stage of an export with --token-stages 3, else the
  trunk's last map) - of all frames shown, projected on its first three principal components
  (fitted jointly over every cell of every frame, so colours compare across frames), each scaled
  to [0, 1] between its 1st and 99th percentile and shown as RGB. Cells with similar features get
  similar colours; how the encoder groups the scene (objects, gripper, table) becomes visible.
  The usual picture of DINO / DINOv2 features (Oquab et al. 2023, "DINOv2", Fig. 1).
- Grad-CAM of the policy (Selvaraju et al., ICCV 2017): the scalar S is the squared norm of the
  arm-joint motion (rad^2) of the action chunk the policy's denoiser predicts in one step from
  `noise_samples` seeded pure-noise samples (the first DDIM step; prediction_type "sample", so its
  output is the clean chunk), summed over the executed steps, the arm joints and the samples -
  "how far the policy wants to move". With A the feature map and w_c = mean over cells of
  dS/dA_c, the map is ReLU(sum_c w_c A_c), divided by its maximum (all zero when S does not
  depend on the image). The gradient flows from the action through the policy's readout of the
  patch tokens and its pooled embedding back into the map, so the picture says which cells move
  the predicted action.

Frames come from a recorded dataset (image, joint state and instruction of the episode), resized
to the encoder's input like at run time. Everything is deterministic for a given seed.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np


@dataclass
class FrameAnalysis:
    """One frame: episode row and frame index, its instruction, the Grad-CAM scalar S (rad^2,
    None without a policy) and the file written."""

    episode: int
    frame_index: int
    instruction: str
    saliency_s: float | None
    image: str


def pca_rgb(token_maps: np.ndarray, components: int = 3) -> np.ndarray:
    """(N, C, h, w) feature maps -> (N, h, w, components) in [0, 1]: the projections of every cell
    on the first principal components of all N*h*w cells (centred), each clipped to its 1st..99th
    percentile and scaled to [0, 1]; a component's sign is fixed so that its largest-magnitude
    loading is positive (deterministic colours). Raises ValueError for another shape or C < components."""
    x = np.asarray(token_maps, np.float64)
    if x.ndim != 4 or x.shape[1] < components:
        raise ValueError(f"token_maps must be (N, C >= {components}, h, w), got {x.shape}")
    n, c, h, w = x.shape
    cells = x.transpose(0, 2, 3, 1).reshape(-1, c)
    cells = cells - cells.mean(0)
    _, _, vt = np.linalg.svd(cells, full_matrices=False)
    basis = vt[:components]  # (k, C)
    basis *= np.sign(basis[np.arange(components), np.abs(basis).argmax(1)])[:, None]
    proj = cells @ basis.T  # (N*h*w, k)
    lo, hi = np.percentile(proj, 1, axis=0), np.percentile(proj, 99, axis=0)
    rgb = np.clip((proj - lo) / np.maximum(hi - lo, 1e-12), 0.0, 1.0)
    return rgb.reshape(n, h, w, components)


def grad_cam(activation: np.ndarray, gradient: np.ndarray) -> np.ndarray:
    """Grad-CAM of one map: activation, gradient (C, h, w) -> (h, w) in [0, 1]:
    ReLU(sum_c mean_cells(gradient_c) activation_c) / max (zeros when the maximum is 0)."""
    a, g = np.asarray(activation, np.float64), np.asarray(gradient, np.float64)
    if a.shape != g.shape or a.ndim != 3:
        raise ValueError(f"activation and gradient must both be (C, h, w), got {a.shape} and {g.shape}")
    cam = np.maximum((g.mean(axis=(1, 2))[:, None, None] * a).sum(0), 0.0)
    top = cam.max()
    return cam / top if top > 0 else cam


def policy_saliency(runner, encoder, image, state: np.ndarray, instruction: str, noise_samples: int = 4,
                    seed: int = 0) -> tuple[np.ndarray, np.ndarray, float]:
    """Grad-CAM inputs of one frame (module doc). runner: a `policies.diffusion.DiffusionPolicyRunner`
    trained on `encoder`'s output (an `encoder.model.ImageEncoder`); image: (1, 3, H, W) float32
    normalised like `encoder.preprocess.preprocess`; state: (7,) joints (rad) + gripper.
    Returns (activation (C, h, w), dS/dactivation (C, h, w), S (rad^2)). The window is the first
    observation repeated (an episode's start, as the runner fills it)."""
    import torch

    from dynaflip_ros.policies.diffusion import OBS_EMBEDDING, OBS_STATE, model_state
    from dynaflip_ros.policies.rtc import action_affine

    emb, fmap = encoder.features_and_map(image)  # (1, D), (1, C, h, w)
    fmap.retain_grad()
    env = encoder.run_time_output(emb, fmap)[0]  # what the policy was trained on: (D,) or (D + h*w*C,)
    if runner.language_conditioned:
        env = torch.cat([env, torch.from_numpy(runner.embed_instruction(instruction))])
    raw = {OBS_STATE: torch.from_numpy(model_state(np.asarray(state, np.float32), runner.model_config)),
           OBS_EMBEDDING: env}
    proc = runner.preprocessor(raw)  # differentiable normalisation, (1, S) and (1, D + T)
    n_obs = runner.model_config.n_obs_steps
    window = {k: proc[k][:, None].expand(noise_samples, n_obs, proc[k].shape[-1]) for k in (OBS_STATE, OBS_EMBEDDING)}
    diffusion = runner.policy.diffusion
    cond = diffusion._prepare_global_conditioning(window)  # (K, cond)
    scheduler = diffusion.noise_scheduler
    scheduler.set_timesteps(diffusion.num_inference_steps)
    t0 = scheduler.timesteps[0]
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn((noise_samples, diffusion.config.horizon, diffusion.config.action_feature.shape[0]),
                        generator=generator)
    chunk = diffusion.unet(noise, torch.full((noise_samples,), int(t0), dtype=torch.long), global_cond=cond)
    scale, offset = action_affine(runner)
    start = n_obs - 1
    motion = (chunk * scale + offset)[:, start:start + runner.model_config.n_action_steps, :6]  # model frame (rad)
    s = (motion ** 2).sum()
    s.backward()
    return fmap[0].detach().numpy(), fmap.grad[0].numpy(), float(s)


def _policy_runner(policy_dir: str | Path, encoder_sha256: str):
    """The runner of a single policy; the first member of a checkpoint ensemble."""
    from dynaflip_ros.policies.checkpoint_ensemble import load_policy

    policy = load_policy(policy_dir, encoder_sha256=encoder_sha256, seed=0)
    return policy.members[0] if hasattr(policy, "members") else policy


def visualize(dataset: str | Path, encoder_dir: str | Path, out_dir: str | Path, policy_dir: str | Path | None = None,
              episodes: list[int] | None = None, frame_index: int = 10, noise_samples: int = 4,
              seed: int = 0) -> list[FrameAnalysis]:
    """Write `frame_<episode>_<frame>.png` (camera image | patch-feature PCA | policy Grad-CAM over
    the image, or two panels without a policy), `overview.png` (all frames, one row each) and
    `analysis.json` into out_dir. episodes: dataset episode rows (default the first four);
    frame_index: the frame of each (clipped to the episode). Raises FileNotFoundError /
    EncoderArtifactError / EncoderMismatchError from the loaders, ValueError for an episode row
    outside the dataset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from dynaflip_ros.data.triplets import load_episode_frames
    from dynaflip_ros.encoder.model import load_image_encoder
    from dynaflip_ros.encoder.train import images_to_tensor

    encoder, manifest = load_image_encoder(encoder_dir)
    frames = load_episode_frames(dataset, tuple(manifest.input_hw), progress=False)
    episodes = list(range(min(4, len(frames.episode_ids)))) if episodes is None else list(episodes)
    bad = [e for e in episodes if not 0 <= e < len(frames.episode_ids)]
    if bad:
        raise ValueError(f"episode rows {bad} outside the dataset's 0..{len(frames.episode_ids) - 1}")
    rows = [int(frames.episode_start[e] + min(frame_index, frames.episode_length[e] - 1)) for e in episodes]
    images = images_to_tensor(frames.images[rows])  # (N, 3, H, W)
    with torch.no_grad():
        maps = encoder.features_and_map(images)[1].numpy()  # (N, C, h, w)
    pca = pca_rgb(maps)
    runner = _policy_runner(policy_dir, manifest.weights_sha256) if policy_dir is not None else None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    panels = 3 if runner is not None else 2
    results, overview = [], []
    for i, (e, row) in enumerate(zip(episodes, rows)):
        cam, s = None, None
        if runner is not None:
            act, grad, s = policy_saliency(runner, encoder, images[i:i + 1], frames.state[row], frames.episode_task[e],
                                           noise_samples=noise_samples, seed=seed)
            cam = grad_cam(act, grad)
        overview.append((frames.images[row], pca[i], cam, frames.episode_task[e], s))
        fig = _frame_figure(plt, *overview[-1], panels=panels)
        name = f"frame_e{e}_f{int(frames.frame_index[row])}.png"
        fig.savefig(out / name, dpi=100)
        plt.close(fig)
        results.append(FrameAnalysis(episode=e, frame_index=int(frames.frame_index[row]),
                                     instruction=frames.episode_task[e], saliency_s=s, image=name))
    fig, axes = plt.subplots(len(overview), panels, figsize=(3.2 * panels, 3.2 * len(overview)), squeeze=False)
    for ax_row, item in zip(axes, overview):
        _draw(ax_row, *item)
    fig.tight_layout()
    fig.savefig(out / "overview.png", dpi=80)
    plt.close(fig)
    (out / "analysis.json").write_text(json.dumps({
        "encoder": str(encoder_dir), "encoder_sha256": manifest.weights_sha256, "policy": None if policy_dir is None
        else str(policy_dir), "dataset": str(dataset), "feature_map": list(maps.shape[1:]),
        "noise_samples": noise_samples, "seed": seed, "frames": [asdict(r) for r in results]}, indent=1) + "\n")
    return results


def _draw(axes, image, pca, cam, instruction: str, s: float | None) -> None:
    h, w = image.shape[:2]
    axes[0].imshow(image)
    axes[0].set_title(instruction, fontsize=7)
    axes[1].imshow(pca, interpolation="nearest", extent=(0, w, h, 0))
    axes[1].set_title("patch features, PCA 1-3", fontsize=7)
    if cam is not None:
        axes[2].imshow(image)
        axes[2].imshow(cam, cmap="jet", alpha=0.45, interpolation="bilinear", extent=(0, w, h, 0))
        axes[2].set_title(f"policy Grad-CAM (S = {s:.3g} rad²)", fontsize=7)
    for ax in axes:
        ax.axis("off")


def _frame_figure(plt, image, pca, cam, instruction, s, panels: int):
    fig, axes = plt.subplots(1, panels, figsize=(3.2 * panels, 3.4))
    _draw(axes, image, pca, cam, instruction, s)
    fig.tight_layout()
    return fig
