"""DynaFLIP pre-training losses (docs/method.md §1; DynaFLIP paper §2.1-2.2). Pure torch.

Alignment energy of a tuple of unit vectors x = z_I (image transition), y = z_L (language),
z = z_F (3D flow):

    E(x, y, z) = Area(x, y, z) + lambda_cos * (1 - <y, z>)

Area is the area of the triangle spanned by the three points. Two algebraically equal forms:

- difference-vector form: 4 Area^2 = |u|^2 |v|^2 - (u.v)^2, u = x - y, v = x - z;
- closed form from the cosines a = <x, y>, b = <x, z>, c = <y, z> (unit vectors only):
  4 Area^2 = 3 - 2(a + b + c) + 2(ab + ac + bc) - (a^2 + b^2 + c^2)
           = 4 p q - (p + q - r)^2   with p = 1 - a, q = 1 - b, r = 1 - c
  (|u|^2 = 2p, |v|^2 = 2q, u.v = p + q - r).

Numerics (measured; tests/test_encoder_losses.py): the first closed form cancels
catastrophically in float32 once the three points are within ~0.01 rad (relative error ~300 at
0.01 rad, the sign is lost below), and loses ~1e-4 relative even in float64 at 1e-3 rad. This
module therefore:

- disables autocast and computes every energy in float64, re-normalising the embeddings in
  float64 first (a float32 unit vector is unit only to ~1e-7, which the closed form would see);
- uses the difference-vector form for the matched (positive) tuples (`positive_energy =
  "difference"`, default: exact to ~1e-16 relative at any angle), and the p, q, r rewrite of the
  closed form for the B x B negative energies (float64 cosines; ~1e-9 relative at 1e-3 rad). The
  negatives therefore need only the three B x B cosine matrices S_IL, S_IF, S_LF and no
  B x B x D broadcasting;
- clamps Area^2 >= 0 and uses Area = sqrt(Area^2 + area_eps) (`area_mode = "sqrt"`) or Area^2
  itself (`area_mode = "squared"`).

InfoNCE (DynaFLIP paper eq. for L_align; van den Oord et al. 2018): for anchor i the logits are
-E(tuple) * exp(logit_scale) over the matched tuple and the negative tuples of the configured
sets (configs.encoder.NEGATIVE_SETS: one or two modalities taken from another sample j), and the
cross-entropy puts the matched tuple first. exp(logit_scale) is the inverse temperature 1/tau,
used clamped to [1, 100] as in CLIP. Negatives identical to the anchor's tuple are removed: j == i
always, and (`mask_same_language`) every language-swapped negative whose language means the same
as the anchor's: the same language group (`language_ids`: paraphrases of one phase + target) or
the identical sentence (`text_ids`); such a negative is a false negative.

Auxiliary losses (DynaFLIP paper §2.2): a time-contrastive loss (R3M, Nair et al. 2022; TCN,
Sermanet et al. 2018) with similarity = -L2 distance, and the actor loss (MSE of the predicted
flow over the valid points only). Total L = L_align + lambda_tcn L_tcn + lambda_act L_actor.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from dynaflip_ros.configs.encoder import NEGATIVE_SETS, WHOLE_TUPLE, AlignmentLossConfig

# Negative sets that take the language from sample j (subject to the same-language mask).
LANGUAGE_SWAPPED_SETS = frozenset({"language", "language_flow", "image_language", WHOLE_TUPLE})


# ------------------------------------------------------------------------------ triangle area
def triangle_area_sq_closed_form(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Area^2 of the triangle of three unit vectors from their cosines, docs/method.md's literal form.

    a = <x, y>, b = <x, z>, c = <y, z> (any broadcastable shapes, any float dtype; computed in
    the input dtype). Returns (3 - 2(a+b+c) + 2(ab+ac+bc) - (a^2+b^2+c^2)) / 4. Cancels
    catastrophically for near-identical points (see the module docstring); kept as the reference
    formula -- the losses use `triangle_area_sq_from_cosines`.
    """
    return (3.0 - 2.0 * (a + b + c) + 2.0 * (a * b + a * c + b * c) - (a * a + b * b + c * c)) / 4.0


def triangle_area_sq_from_cosines(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Area^2 from the cosines in the better-conditioned p, q, r form: (4pq - (p+q-r)^2) / 4.

    p = 1 - a, q = 1 - b, r = 1 - c are half the squared side lengths |x-y|^2/2, |x-z|^2/2,
    |y-z|^2/2. Algebraically equal to `triangle_area_sq_closed_form` (unit vectors only). Not
    clamped; computed in the input dtype (use float64).
    """
    p, q, r = 1.0 - a, 1.0 - b, 1.0 - c
    return (4.0 * p * q - (p + q - r) ** 2) / 4.0


def triangle_area_sq_from_vectors(x: torch.Tensor, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Area^2 of the triangle with vertices x, y, z (..., D): (|u|^2 |v|^2 - (u.v)^2) / 4.

    u = x - y, v = x - z. Valid for any vectors (not only unit ones); accurate for
    near-identical points because the differences are formed first. Returns shape (...,), not
    clamped (Lagrange's identity makes it >= 0 up to rounding).
    """
    u = x - y  # (..., D)
    v = x - z  # (..., D)
    uu = (u * u).sum(-1)
    vv = (v * v).sum(-1)
    uv = (u * v).sum(-1)
    return (uu * vv - uv * uv) / 4.0


def area_from_area_sq(area_sq: torch.Tensor, area_mode: str = "sqrt", area_eps: float = 1e-8) -> torch.Tensor:
    """Clamp Area^2 >= 0, then Area = sqrt(Area^2 + area_eps) ("sqrt") or Area^2 ("squared")."""
    area_sq = area_sq.clamp_min(0.0)
    if area_mode == "sqrt":
        return torch.sqrt(area_sq + area_eps)
    if area_mode == "squared":
        return area_sq
    raise ValueError(f"area_mode must be 'sqrt' or 'squared', got {area_mode!r}")


def energy_from_area_sq(area_sq: torch.Tensor, cos_yz: torch.Tensor, cfg: AlignmentLossConfig) -> torch.Tensor:
    """E = Area + lambda_cos * (1 - <y, z>) from Area^2 and the language-flow cosine c = <y, z>."""
    return area_from_area_sq(area_sq, cfg.area_mode, cfg.area_eps) + cfg.lambda_cos * (1.0 - cos_yz)


def _unit64(v: torch.Tensor) -> torch.Tensor:
    """(..., D) any float -> float64 unit vectors (normalised in float64)."""
    return F.normalize(v.to(torch.float64), dim=-1, eps=1e-30)


def alignment_energy(
    x: torch.Tensor, y: torch.Tensor, z: torch.Tensor, cfg: AlignmentLossConfig, form: str = "difference"
) -> torch.Tensor:
    """Energy E(x, y, z) of explicit tuples, float64, autocast disabled.

    x, y, z: (..., D) embeddings (normalised here in float64). form: "difference" (vector form)
    or "closed_form" (p, q, r cosine form). Returns (...,) float64. Raises ValueError on shape
    mismatch or an unknown form.
    """
    if x.shape != y.shape or x.shape != z.shape:
        raise ValueError(f"x, y, z must have the same shape, got {tuple(x.shape)}, {tuple(y.shape)}, {tuple(z.shape)}")
    with torch.autocast(device_type=x.device.type, enabled=False):
        x, y, z = _unit64(x), _unit64(y), _unit64(z)
        c = (y * z).sum(-1)
        if form == "difference":
            area_sq = triangle_area_sq_from_vectors(x, y, z)
        elif form == "closed_form":
            area_sq = triangle_area_sq_from_cosines((x * y).sum(-1), (x * z).sum(-1), c)
        else:
            raise ValueError(f"form must be 'difference' or 'closed_form', got {form!r}")
        return energy_from_area_sq(area_sq, c, cfg)


# ------------------------------------------------------------------------------ InfoNCE
def negative_cosines(
    s_il: torch.Tensor, s_if: torch.Tensor, s_lf: torch.Tensor, negative_set: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cosines (a, b, c) of the negative tuples of one set as (B, B) matrices [anchor i, sample j].

    s_il[p, q] = <z_I[p], z_L[q]>, s_if[p, q] = <z_I[p], z_F[q]>, s_lf[p, q] = <z_L[p], z_F[q]>
    (each (B, B)). a = <image, language>, b = <image, flow>, c = <language, flow> of the tuple
    described by `negative_set` (configs.encoder.NEGATIVE_SETS). Returns broadcastable tensors
    (some are (B, 1) or (1, B) diagonals).
    """
    d_il = torch.diagonal(s_il)
    d_if = torch.diagonal(s_if)
    d_lf = torch.diagonal(s_lf)
    if negative_set == "image":  # (I_j, L_i, F_i)
        return s_il.T, s_if.T, d_lf[:, None]
    if negative_set == "language":  # (I_i, L_j, F_i)
        return s_il, d_if[:, None], s_lf.T
    if negative_set == "flow":  # (I_i, L_i, F_j)
        return d_il[:, None], s_if, s_lf
    if negative_set == "language_flow":  # (I_i, L_j, F_j)
        return s_il, s_if, d_lf[None, :]
    if negative_set == "image_flow":  # (I_j, L_i, F_j)
        return s_il.T, d_if[None, :], s_lf
    if negative_set == "image_language":  # (I_j, L_j, F_i)
        return d_il[None, :], s_if.T, s_lf.T
    if negative_set == WHOLE_TUPLE:  # (I_j, L_j, F_j): another sample's matched tuple
        return d_il[None, :], d_if[None, :], d_lf[None, :]
    raise ValueError(f"unknown negative set {negative_set!r}; valid: {NEGATIVE_SETS + (WHOLE_TUPLE,)}")


def inverse_temperature(logit_scale: torch.Tensor, cfg: AlignmentLossConfig) -> torch.Tensor:
    """exp(clamp(logit_scale, 0, logit_scale_max)) = 1 / tau (CLIP's clamp), float64 scalar."""
    return logit_scale.to(torch.float64).clamp(0.0, cfg.logit_scale_max).exp()


@dataclass
class AlignmentResult:
    """loss: float64 scalar; logits (B, 1 + S*B) float64 (column 0 = matched tuple, masked
    entries -inf); valid (B, 1 + S*B) bool; positive_energy (B,) float64; negative_energy_mean:
    mean energy of the valid negatives; accuracy: fraction of anchors whose matched tuple has the
    strictly lowest energy; temperature: tau."""

    loss: torch.Tensor
    logits: torch.Tensor
    valid: torch.Tensor
    positive_energy: torch.Tensor
    negative_energy_mean: float
    accuracy: float
    temperature: float


def alignment_infonce(
    z_image: torch.Tensor,
    z_language: torch.Tensor,
    z_flow: torch.Tensor,
    logit_scale: torch.Tensor,
    cfg: AlignmentLossConfig,
    text_ids: torch.Tensor | None = None,
    language_ids: torch.Tensor | None = None,
) -> AlignmentResult:
    """L_align: InfoNCE over tuple energies built from three B x B cosine matrices.

    z_image, z_language, z_flow: (B, D) embeddings (normalised here in float64). logit_scale:
    scalar tensor (learnable log inverse temperature). text_ids: optional (B,) int ids of the
    language strings; language_ids: optional (B,) int language groups (same id = same meaning,
    e.g. paraphrases of one phase + target). With cfg.mask_same_language, language-swapped
    negatives with text_ids[j] == text_ids[i] or language_ids[j] == language_ids[i] are removed.
    Energies: matched tuples by cfg.positive_energy, negatives by the float64 closed form
    (module docstring). Autocast is disabled inside.

    Raises ValueError on mismatched shapes or B < 2.
    """
    if z_image.ndim != 2 or z_image.shape != z_language.shape or z_image.shape != z_flow.shape:
        raise ValueError(
            f"z_image, z_language, z_flow must all be (B, D), got {tuple(z_image.shape)}, "
            f"{tuple(z_language.shape)}, {tuple(z_flow.shape)}"
        )
    b = z_image.shape[0]
    if b < 2:
        raise ValueError(f"InfoNCE needs a batch of >= 2 samples, got {b}")
    for name, ids in (("text_ids", text_ids), ("language_ids", language_ids)):
        if ids is not None and tuple(ids.shape) != (b,):
            raise ValueError(f"{name} must be ({b},), got {tuple(ids.shape)}")
    with torch.autocast(device_type=z_image.device.type, enabled=False):
        x, y, z = _unit64(z_image), _unit64(z_language), _unit64(z_flow)  # (B, D) float64
        s_il = x @ y.T  # (B, B)
        s_if = x @ z.T  # (B, B)
        s_lf = y @ z.T  # (B, B)
        if cfg.positive_energy == "difference":
            area_sq_pos = triangle_area_sq_from_vectors(x, y, z)  # (B,)
        else:
            area_sq_pos = triangle_area_sq_from_cosines(torch.diagonal(s_il), torch.diagonal(s_if), torch.diagonal(s_lf))
        e_pos = energy_from_area_sq(area_sq_pos, torch.diagonal(s_lf), cfg)  # (B,)

        eye = torch.eye(b, dtype=torch.bool, device=x.device)
        same_text = _same_language(text_ids, language_ids) if cfg.mask_same_language else None
        energies, valids = [], []
        for name in cfg.negative_sets:
            a_, b_, c_ = negative_cosines(s_il, s_if, s_lf, name)
            e_neg = energy_from_area_sq(triangle_area_sq_from_cosines(a_, b_, c_), c_, cfg)  # (B, B)
            valid = ~eye
            if same_text is not None and name in LANGUAGE_SWAPPED_SETS:
                valid = valid & ~same_text
            energies.append(e_neg.expand(b, b))
            valids.append(valid)
        e_all = torch.cat([e_pos[:, None]] + energies, dim=1)  # (B, 1 + S*B)
        valid_all = torch.cat([torch.ones(b, 1, dtype=torch.bool, device=x.device)] + valids, dim=1)
        scale = inverse_temperature(logit_scale, cfg)
        logits = (-e_all * scale).masked_fill(~valid_all, float("-inf"))  # (B, 1 + S*B)
        loss = (torch.logsumexp(logits, dim=1) - logits[:, 0]).mean()

        with torch.no_grad():
            e_neg_valid = e_all[:, 1:][valid_all[:, 1:]]
            e_min_neg = e_all[:, 1:].masked_fill(~valid_all[:, 1:], float("inf")).min(dim=1).values
            accuracy = float((e_pos < e_min_neg).double().mean())
            neg_mean = float(e_neg_valid.mean()) if e_neg_valid.numel() else float("nan")
    return AlignmentResult(
        loss=loss,
        logits=logits,
        valid=valid_all,
        positive_energy=e_pos,
        negative_energy_mean=neg_mean,
        accuracy=accuracy,
        temperature=float(1.0 / scale.detach()),
    )


def pairwise_infonce(
    a: torch.Tensor,
    b: torch.Tensor,
    logit_scale: torch.Tensor,
    cfg: AlignmentLossConfig,
    same: torch.Tensor | None = None,
) -> AlignmentResult:
    """CLIP's symmetric InfoNCE between matched rows of a and b (Radford et al. 2021, "Learning
    Transferable Visual Models From Natural Language Supervision", Fig. 3): logits = cos(a_i, b_j)
    / tau over the B x B pairs, loss = mean of the cross-entropies over rows (a -> b) and columns
    (b -> a) with the matched pair as the target.

    a, b: (B, D) embeddings (normalised here in float64); logit_scale: scalar (log 1/tau, clamped
    as in `inverse_temperature`); same: optional (B, B) bool, pairs that are not negatives (e.g.
    the same language: false negatives), removed except the diagonal. The result's energies are
    1 - cos. Raises ValueError on mismatched shapes or B < 2.
    """
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"a and b must both be (B, D), got {tuple(a.shape)} and {tuple(b.shape)}")
    n = a.shape[0]
    if n < 2:
        raise ValueError(f"InfoNCE needs a batch of >= 2 samples, got {n}")
    with torch.autocast(device_type=a.device.type, enabled=False):
        s = _unit64(a) @ _unit64(b).T  # (B, B) float64 cosines
        eye = torch.eye(n, dtype=torch.bool, device=a.device)
        valid = ~(same & ~eye) if same is not None else torch.ones_like(eye)
        scale = inverse_temperature(logit_scale, cfg)
        logits = (s * scale).masked_fill(~valid, float("-inf"))  # (B, B)
        target = torch.arange(n, device=a.device)
        loss = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
        with torch.no_grad():
            off = s.masked_fill(~valid | eye, float("-inf"))
            accuracy = float((torch.diagonal(s) > off.max(dim=1).values).double().mean())
            neg = (1.0 - s)[valid & ~eye]
    return AlignmentResult(loss=loss, logits=logits, valid=valid, positive_energy=1.0 - torch.diagonal(s),
                           negative_energy_mean=float(neg.mean()) if neg.numel() else float("nan"),
                           accuracy=accuracy, temperature=float(1.0 / scale.detach()))


def _same_language(text_ids: torch.Tensor | None, language_ids: torch.Tensor | None) -> torch.Tensor | None:
    """(B, B) bool: same sentence or same language group (None: no ids given)."""
    same = None
    for ids in (text_ids, language_ids):
        if ids is not None:
            m = ids[:, None] == ids[None, :]
            same = m if same is None else same | m
    return same


def alignment_term(
    z_image: torch.Tensor,
    z_language: torch.Tensor,
    z_flow: torch.Tensor,
    logit_scale: torch.Tensor,
    cfg: AlignmentLossConfig,
    text_ids: torch.Tensor | None = None,
    language_ids: torch.Tensor | None = None,
) -> AlignmentResult | None:
    """L_align of `cfg.alignment`: the triangle InfoNCE (`alignment_infonce`), a pairwise InfoNCE
    of the image transition with language (same-language pairs masked when
    `cfg.mask_same_language`) or with flow (`pairwise_infonce`), or None ("none")."""
    if cfg.alignment == "triangle":
        return alignment_infonce(z_image, z_language, z_flow, logit_scale, cfg, text_ids, language_ids)
    if cfg.alignment == "image_language":
        same = _same_language(text_ids, language_ids) if cfg.mask_same_language else None
        return pairwise_infonce(z_image, z_language, logit_scale, cfg, same)
    if cfg.alignment == "image_flow":
        return pairwise_infonce(z_image, z_flow, logit_scale, cfg)
    return None


# ------------------------------------------------------------------------------ auxiliary losses
def _l2_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """sqrt(|a - b|^2 + 1e-12) over the last dim (finite gradient at zero distance)."""
    return torch.sqrt(((a - b) ** 2).sum(-1) + 1e-12)


def tcn_loss(
    e0: torch.Tensor,
    e1: torch.Tensor,
    e2: torch.Tensor,
    episode_ids: torch.Tensor,
    temperature: float = 1.0,
    normalize: bool = True,
) -> tuple[torch.Tensor, float]:
    """Time-contrastive loss (DynaFLIP paper §2.2; R3M eq. 1): s0 < s1 < s2 from one video.

    e0, e1, e2: (B, D) embeddings of frames s0, s1, s2 of each sample's episode; episode_ids:
    (B,) episode of each sample. Similarity S(a, b) = -||a - b||_2 (after L2 normalisation when
    `normalize`), divided by `temperature`. For anchor e0[i] the positive is e1[i] (nearer in
    time); the negatives are e2[i] (farther in time) and every frame e0/e1/e2[j] of samples j from
    another episode. Returns (cross-entropy loss (float32 scalar), accuracy = fraction of anchors
    whose positive scores strictly highest). Raises ValueError on shape mismatch.
    """
    if e0.ndim != 2 or e0.shape != e1.shape or e0.shape != e2.shape:
        raise ValueError(f"e0, e1, e2 must all be (B, D), got {tuple(e0.shape)}, {tuple(e1.shape)}, {tuple(e2.shape)}")
    b = e0.shape[0]
    if tuple(episode_ids.shape) != (b,):
        raise ValueError(f"episode_ids must be ({b},), got {tuple(episode_ids.shape)}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if normalize:
        e0, e1, e2 = (F.normalize(e, dim=-1) for e in (e0, e1, e2))
    s_pos = -_l2_distance(e0, e1)  # (B,)
    s_far = -_l2_distance(e0, e2)  # (B,)
    others = torch.cat([e0, e1, e2], dim=0)  # (3B, D)
    s_other = -_l2_distance(e0[:, None, :], others[None, :, :])  # (B, 3B)
    other_ep = episode_ids.repeat(3)  # (3B,)
    valid_other = episode_ids[:, None] != other_ep[None, :]  # (B, 3B)
    valid = torch.cat([torch.ones(b, 2, dtype=torch.bool, device=e0.device), valid_other], dim=1)  # (B, 2 + 3B)
    logits = torch.cat([s_pos[:, None], s_far[:, None], s_other], dim=1) / temperature  # (B, 2 + 3B)
    logits = logits.masked_fill(~valid, float("-inf"))
    loss = (torch.logsumexp(logits, dim=1) - logits[:, 0]).mean()
    with torch.no_grad():
        accuracy = float((logits[:, 0] > logits[:, 1:].max(dim=1).values).float().mean())
    return loss, accuracy


def actor_loss(flow_pred: torch.Tensor, flow_target: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """L_actor = mean squared error between predicted and ground-truth flow in the normalised
    (B, N, 3T) representation of `model.FlowNormalizer`, over the points where `valid` (B, N)
    bool is True (default all; the mean over every valid element, 0 when none is valid).

    Raises ValueError on a shape mismatch.
    """
    if flow_pred.shape != flow_target.shape:
        raise ValueError(f"flow_pred {tuple(flow_pred.shape)} and flow_target {tuple(flow_target.shape)} differ")
    if valid is None:
        return F.mse_loss(flow_pred, flow_target)
    if tuple(valid.shape) != tuple(flow_pred.shape[:2]):
        raise ValueError(f"valid must be {tuple(flow_pred.shape[:2])}, got {tuple(valid.shape)}")
    w = valid.to(torch.bool)[..., None].expand_as(flow_pred)  # (B, N, 3T)
    sq = torch.where(w, (flow_pred - flow_target) ** 2, torch.zeros_like(flow_pred))
    return sq.sum() / w.sum().clamp_min(1).to(flow_pred.dtype)


def covariance_loss(x: torch.Tensor) -> torch.Tensor:
    """VICReg's covariance term (Bardes et al. 2022, "VICReg", eq. 4): with C the (D, D)
    covariance of the rows of x (N, D) over the batch, sum of the squared off-diagonal entries / D.
    Raises ValueError for fewer than 2 rows."""
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"x must be (N >= 2, D), got {tuple(x.shape)}")
    xc = x - x.mean(dim=0)
    c = xc.T @ xc / (x.shape[0] - 1)  # (D, D)
    off = c - torch.diag(torch.diagonal(c))
    return (off ** 2).sum() / x.shape[1]


def dynamics_loss(next_pred: torch.Tensor, next_target: torch.Tensor, embeddings: torch.Tensor,
                  cov_weight: float) -> tuple[torch.Tensor, float]:
    """DynaMo's objective (Cui et al. 2024, "DynaMo: In-Domain Dynamics Pretraining for Visuo-Motor
    Control", §3): 1 - cos(s_hat_{t+1}, sg(s_{t+1})) averaged over the batch, + cov_weight *
    `covariance_loss(embeddings)`. next_pred / next_target: (B, D) predicted and actual next
    embeddings (the target is detached here); embeddings: (N, D) the encoder outputs the
    covariance term sees. Returns (loss, mean cosine). Raises ValueError on mismatched shapes."""
    if next_pred.shape != next_target.shape or next_pred.ndim != 2:
        raise ValueError(f"next_pred {tuple(next_pred.shape)} and next_target {tuple(next_target.shape)} must be "
                         "equal (B, D)")
    cos = F.cosine_similarity(next_pred, next_target.detach(), dim=-1)  # (B,)
    loss = (1.0 - cos).mean() + cov_weight * covariance_loss(embeddings)
    return loss, float(cos.detach().mean())


# ------------------------------------------------------------------------------ total
@dataclass
class LossTerms:
    """total = align + lambda_tcn * tcn + lambda_act * actor + lambda_dyn * dyn (float32 scalars
    with grad; dyn 0 without dynamics) and `stats`: floats for logging (loss terms, accuracies,
    energies, temperature)."""

    total: torch.Tensor
    align: torch.Tensor
    tcn: torch.Tensor
    actor: torch.Tensor
    stats: dict[str, float] = field(default_factory=dict)
    dyn: torch.Tensor | None = None


def dynaflip_loss(
    z_image: torch.Tensor,
    z_language: torch.Tensor,
    z_flow: torch.Tensor,
    logit_scale: torch.Tensor,
    tcn_embeddings: torch.Tensor,
    episode_ids: torch.Tensor,
    flow_pred: torch.Tensor,
    flow_target: torch.Tensor,
    cfg: AlignmentLossConfig,
    text_ids: torch.Tensor | None = None,
    language_ids: torch.Tensor | None = None,
    flow_valid: torch.Tensor | None = None,
    dynamics: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
) -> LossTerms:
    """Full objective L = L_align + lambda_tcn L_tcn + lambda_act L_actor (DynaFLIP paper §2.2);
    L_align as `cfg.alignment` says (`alignment_term`; 0 for "none").

    z_image, z_language, z_flow: (B, J); logit_scale: scalar; tcn_embeddings: (B, 3, D) image
    embeddings f(o) of frames s0 < s1 < s2; episode_ids, text_ids, language_ids: (B,);
    flow_pred / flow_target: (B, N, 3T) (normalised flow representation); flow_valid: (B, N)
    bool, the points the actor loss counts (default all); dynamics: (next_pred (B, D), next_target
    (B, D), embeddings (N, D)) for `dynamics_loss`, required when cfg.lambda_dyn > 0.
    Raises ValueError on bad shapes or missing dynamics.
    """
    if tcn_embeddings.ndim != 3 or tcn_embeddings.shape[1] != 3:
        raise ValueError(f"tcn_embeddings must be (B, 3, D), got {tuple(tcn_embeddings.shape)}")
    align = alignment_term(z_image, z_language, z_flow, logit_scale, cfg, text_ids, language_ids)
    l_align = align.loss.to(torch.float32) if align is not None else z_image.new_zeros(())
    l_tcn, tcn_acc = tcn_loss(
        tcn_embeddings[:, 0], tcn_embeddings[:, 1], tcn_embeddings[:, 2], episode_ids,
        temperature=cfg.tcn_temperature, normalize=cfg.tcn_normalize,
    )
    l_act = actor_loss(flow_pred, flow_target, flow_valid)
    total = l_align + cfg.lambda_tcn * l_tcn + cfg.lambda_act * l_act
    l_dyn, dyn_cos = None, None
    if cfg.lambda_dyn > 0:
        if dynamics is None:
            raise ValueError("lambda_dyn > 0 needs the dynamics predictions (the model's dynamics heads)")
        l_dyn, dyn_cos = dynamics_loss(*dynamics, cfg.dyn_cov_weight)
        total = total + cfg.lambda_dyn * l_dyn
    stats = {
        "loss": float(total.detach()),
        "loss_align": float(l_align.detach()),
        "loss_tcn": float(l_tcn.detach()),
        "loss_actor": float(l_act.detach()),
        "tcn_acc": tcn_acc,
    }
    if l_dyn is not None:
        stats.update(loss_dyn=float(l_dyn.detach()), dyn_cos=dyn_cos)
    if align is not None:  # without an alignment term (cfg.alignment "none") these do not exist
        stats.update(align_acc=align.accuracy, energy_pos=float(align.positive_energy.detach().mean()),
                     energy_neg=align.negative_energy_mean, temperature=align.temperature)
    return LossTerms(total=total, align=l_align, tcn=l_tcn, actor=l_act, stats=stats, dyn=l_dyn)
