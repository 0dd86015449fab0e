"""Per-episode provenance of teleop recordings: code version, models, camera settings.

Stored in every episode's record of `meta/dynaflip_episodes.jsonl` (key "extra", committed
atomically with the episode by `data.recorder.EpisodeRecorder`).
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

_MANIFEST_NAMES = ("manifest.json", "policy.json", "config.json")


def git_commit(start: str | Path | None = None) -> str | None:
    """Commit hash of the checkout containing `start` (default: this package), read from the
    .git directory (HEAD -> ref file or packed-refs); git itself is not run. None when not in a
    git checkout or the ref cannot be resolved."""
    p = Path(start if start is not None else __file__).resolve()
    for d in [p, *p.parents]:
        git = d / ".git"
        if git.is_file():  # worktree / submodule: "gitdir: <path>"
            text = git.read_text(encoding="utf-8").strip()
            if text.startswith("gitdir:"):
                git = (d / text.split(":", 1)[1].strip()).resolve()
        if git.is_dir() and (git / "HEAD").exists():
            head = (git / "HEAD").read_text(encoding="utf-8").strip()
            if not head.startswith("ref:"):
                return head or None
            ref = head.split(":", 1)[1].strip()
            bases = [git]
            if (git / "commondir").is_file():  # linked worktree: refs live in the common dir
                bases.append((git / (git / "commondir").read_text(encoding="utf-8").strip()).resolve())
            for base in bases:
                ref_file = base / ref
                if ref_file.exists():
                    return ref_file.read_text(encoding="utf-8").strip() or None
                packed = base / "packed-refs"
                if packed.exists():
                    for line in packed.read_text(encoding="utf-8").splitlines():
                        parts = line.split()
                        if len(parts) == 2 and parts[1] == ref:
                            return parts[0]
            return None
    return None


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def model_manifest_sha256(model_dir: str | Path) -> dict[str, Any]:
    """{"dir", "manifest", "sha256"} of a model directory's manifest (manifest.json for an
    encoder, policy.json / config.json for a policy). Raises FileNotFoundError when none exists."""
    d = Path(model_dir)
    for name in _MANIFEST_NAMES:
        if (d / name).is_file():
            return {"dir": str(d), "manifest": name, "sha256": sha256_file(d / name)}
    raise FileNotFoundError(f"{d}: no model manifest ({', '.join(_MANIFEST_NAMES)})")


def camera_settings(camera: Any, env: Any = None) -> dict[str, Any]:
    """Settings of the recording camera: `camera.settings()` when it has one (RealSenseCamera:
    serial, firmware, exposure, white balance, ...); for the sim camera its render settings
    (image size, fovy, intrinsics, shadows, reflections, camera placement) from the env's
    SimConfig; else the type name."""
    fn = getattr(camera, "settings", None)
    if callable(fn):
        return {"type": type(camera).__name__, **dict(fn())}
    out: dict[str, Any] = {"type": type(camera).__name__}
    intr = getattr(camera, "intrinsics", None)
    if intr is not None:
        out["intrinsics"] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(intr).items()}
    if env is not None and hasattr(env, "config"):
        c = env.config
        out.update({
            "camera_name": getattr(camera, "camera_name", None),
            "image_hw": list(c.image_hw), "fovy_deg": c.camera_fovy_deg,
            "target_m": list(c.camera_target_m), "range_m": c.camera_range_m, "tilt_deg": c.camera_tilt_deg,
            "azimuth_deg": c.camera_azimuth_deg, "znear_m": c.camera_znear_m, "zfar_m": c.camera_zfar_m,
            "shadows": c.shadows, "reflections": c.reflections,
            "depth": bool(getattr(camera, "depth_enabled", False)),
        })
    return out


def session_provenance(encoder_dir: str | Path | None = None, policy_dir: str | Path | None = None,
                       operator: str = "", note: str = "") -> dict[str, Any]:
    """Code and model provenance of a session: dynaflip_ros version, git commit of the code,
    encoder / policy manifest sha256 (when given), operator and note."""
    import dynaflip_ros

    out: dict[str, Any] = {"dynaflip_ros_version": dynaflip_ros.__version__, "git_commit": git_commit()}
    if encoder_dir:
        out["encoder"] = model_manifest_sha256(encoder_dir)
    if policy_dir:
        out["policy"] = model_manifest_sha256(policy_dir)
    if operator:
        out["operator"] = operator
    if note:
        out["operator_note"] = note
    return out
