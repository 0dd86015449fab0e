"""DynaFLIP loss numerics (docs/method.md §1): triangle area, energy, InfoNCE, TCN, actor, total."""
import itertools
import math

import mpmath
import pytest
import torch

from dynaflip_ros.configs.encoder import NEGATIVE_SETS, AlignmentLossConfig
from dynaflip_ros.encoder import losses as L

torch.set_num_threads(2)


def _unit(*shape, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(*shape, generator=g, dtype=dtype), dim=-1)


# ------------------------------------------------------------------------------ area / energy
def test_known_triangle_area():
    x, y, z = torch.eye(3, dtype=torch.float64)  # equilateral, side sqrt(2): area sqrt(3)/2
    expected = 0.75
    assert L.triangle_area_sq_from_vectors(x, y, z).item() == pytest.approx(expected, abs=1e-15)
    a, b, c = x @ y, x @ z, y @ z
    assert L.triangle_area_sq_closed_form(a, b, c).item() == pytest.approx(expected, abs=1e-15)
    assert L.triangle_area_sq_from_cosines(a, b, c).item() == pytest.approx(expected, abs=1e-15)
    cfg = AlignmentLossConfig(lambda_cos=0.0, area_eps=0.0)
    assert L.alignment_energy(x, y, z, cfg).item() == pytest.approx(math.sqrt(expected), abs=1e-12)


def test_zero_area_for_identical_points():
    x = _unit(5, 16)
    cfg = AlignmentLossConfig(lambda_cos=1.0, area_eps=1e-8)
    assert torch.all(L.triangle_area_sq_from_vectors(x, x, x) == 0.0)
    ones = torch.ones(5, dtype=torch.float64)
    assert torch.all(L.triangle_area_sq_closed_form(ones, ones, ones) == 0.0)
    for form in ("difference", "closed_form"):
        e = L.alignment_energy(x, x, x, cfg, form=form)
        # Area = sqrt(0 + eps) = 1e-4, cosine term 1 - <y, z> = 0
        assert torch.allclose(e, torch.full_like(e, 1e-4), atol=1e-10), form


def test_two_coincident_points_zero_area_but_cosine_term_positive():
    x = _unit(4, 8, seed=1)
    far = -x  # antipodal: as far as possible
    cfg = AlignmentLossConfig(lambda_cos=0.5, area_eps=0.0)
    # Two of the three points coincide -> the triangle is degenerate (area 0) however far the
    # third is (three distinct points on a sphere are never collinear: this is the degeneracy).
    for xyz in ((x, x, far), (x, far, x), (far, x, x)):
        assert torch.allclose(L.triangle_area_sq_from_vectors(*xyz), torch.zeros(4, dtype=torch.float64), atol=1e-15)
    # language == image, flow far: the cosine regulariser 1 - <y, z> = 2 makes E > 0
    e = L.alignment_energy(x, x, far, cfg)
    assert torch.allclose(e, torch.full((4,), 0.5 * 2.0, dtype=torch.float64), atol=1e-12)
    # flow == image, language far: likewise
    e = L.alignment_energy(x, far, x, cfg)
    assert torch.allclose(e, torch.full((4,), 0.5 * 2.0, dtype=torch.float64), atol=1e-12)
    # language == flow with the image far: area 0 and cosine term 0 -> E = 0. The regulariser
    # acts on (language, flow) only (DynaFLIP paper eq. 2); this case is left to the contrastive term.
    e = L.alignment_energy(far, x, x, cfg)
    assert torch.allclose(e, torch.zeros(4, dtype=torch.float64), atol=1e-12)


def test_closed_form_equals_difference_form_on_random_unit_vectors():
    x, y, z = (_unit(2000, 32, seed=s) for s in (1, 2, 3))
    diff = L.triangle_area_sq_from_vectors(x, y, z)
    a, b, c = (x * y).sum(-1), (x * z).sum(-1), (y * z).sum(-1)
    assert torch.allclose(L.triangle_area_sq_closed_form(a, b, c), diff, rtol=0, atol=1e-10)
    assert torch.allclose(L.triangle_area_sq_from_cosines(a, b, c), diff, rtol=0, atol=1e-10)
    cfg = AlignmentLossConfig()
    assert torch.allclose(L.alignment_energy(x, y, z, cfg, "closed_form"), L.alignment_energy(x, y, z, cfg, "difference"), atol=1e-10)


def _near_triangle(theta: float, dtype):
    """x = e1, y = cos t e1 + sin t e2, z = cos t e1 + sin t e3, and the exact Area^2:
    |u|^2 = |v|^2 = 4 sin^2(t/2), u.v = 4 sin^4(t/2) -> 4 Area^2 = 16 s^4 (1 - s^4), s = sin(t/2)."""
    mpmath.mp.dps = 50
    t = mpmath.mpf(theta)
    s = mpmath.sin(t / 2)
    exact = float(16 * s**4 * (1 - s**4) / 4)
    c, sn = math.cos(theta), math.sin(theta)
    x = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    y = torch.tensor([c, sn, 0.0], dtype=torch.float64)
    z = torch.tensor([c, 0.0, sn], dtype=torch.float64)
    return x.to(dtype), y.to(dtype), z.to(dtype), exact


@pytest.mark.parametrize("theta", [1e-2, 3e-3])
def test_float32_closed_form_cancels_but_implementation_is_accurate(theta):
    # The catastrophic cancellation (docs/method.md "Numerics"): the closed form in float32 from
    # float32 cosines loses the area entirely (here it returns 0; elsewhere it is off by orders of
    # magnitude or negative) within ~0.01 rad.
    x32, y32, z32, exact = _near_triangle(theta, torch.float32)
    a, b, c = x32 @ y32, x32 @ z32, y32 @ z32
    naive32 = L.triangle_area_sq_closed_form(a, b, c).item()
    assert abs(naive32 - exact) / exact > 0.5, (naive32, exact)

    # The implementation (float64, difference-vector form) from float64 inputs: ~1e-16 relative.
    x, y, z, _ = _near_triangle(theta, torch.float64)
    cfg = AlignmentLossConfig(lambda_cos=0.0, area_mode="squared")
    got = L.alignment_energy(x, y, z, cfg).item()
    assert abs(got - exact) / exact < 1e-9
    # The float64 closed form the negatives use (p, q, r rewrite) is accurate too.
    got_cf = L.alignment_energy(x, y, z, cfg, form="closed_form").item()
    assert abs(got_cf - exact) / exact < 1e-6
    # From float32 embeddings (what a network emits) the implementation stays accurate up to the
    # rounding of the inputs themselves (~1e-5 relative here), unlike the naive float32 path.
    got32 = L.alignment_energy(x32, y32, z32, cfg).item()
    assert abs(got32 - exact) / exact < 1e-3
    # ... and the InfoNCE positives (difference form) see the same value.
    zi, zl, zf = (torch.stack([v, -v]) for v in (x32, y32, z32))
    res = L.alignment_infonce(zi, zl, zf, torch.tensor(0.0), cfg)
    assert abs(res.positive_energy[0].item() - got32) < 1e-18


# ------------------------------------------------------------------------------ InfoNCE
def _matched_batch(b=8, d=16, noise=0.02, seed=0):
    g = torch.Generator().manual_seed(seed)
    base = torch.nn.functional.normalize(torch.randn(b, d, generator=g, dtype=torch.float64), dim=-1)
    zi, zl, zf = (
        torch.nn.functional.normalize(base + noise * torch.randn(b, d, generator=g, dtype=torch.float64), dim=-1)
        for _ in range(3)
    )
    return zi, zl, zf


def test_negatives_ranking_matched_low_shuffled_high_and_gradients_finite():
    cfg = AlignmentLossConfig()
    logit_scale = torch.tensor(math.log(100.0), requires_grad=True)
    zi, zl, zf = (t.float().requires_grad_(True) for t in _matched_batch())
    res = L.alignment_infonce(zi, zl, zf, logit_scale, cfg)
    assert res.accuracy == 1.0
    assert res.loss.item() < 0.05
    assert res.positive_energy.max().item() < res.negative_energy_mean
    res.loss.backward()
    for t in (zi, zl, zf, logit_scale):
        assert t.grad is not None and torch.isfinite(t.grad).all()

    perm = torch.roll(torch.arange(8), 1)  # every flow belongs to another sample
    shuffled = L.alignment_infonce(zi.detach(), zl.detach(), zf.detach()[perm], logit_scale.detach(), cfg)
    assert shuffled.accuracy == 0.0
    assert shuffled.loss.item() > 10 * max(res.loss.item(), 0.1)

    # Gradients stay finite at the exact degeneracy (identical points: area 0 under the sqrt).
    same = _unit(4, 8).float().requires_grad_(True)
    res = L.alignment_infonce(same, same, same, torch.tensor(2.0), cfg)
    res.loss.backward()
    assert torch.isfinite(same.grad).all()


def _brute_force_loss(zi, zl, zf, scale, cfg, text_ids):
    """Explicit tuples, one energy at a time (difference form, float64)."""
    b = zi.shape[0]
    pick = {
        "image": lambda i, j: (zi[j], zl[i], zf[i]),
        "language": lambda i, j: (zi[i], zl[j], zf[i]),
        "flow": lambda i, j: (zi[i], zl[i], zf[j]),
        "language_flow": lambda i, j: (zi[i], zl[j], zf[j]),
        "image_flow": lambda i, j: (zi[j], zl[i], zf[j]),
        "image_language": lambda i, j: (zi[j], zl[j], zf[i]),
    }
    losses, all_logits = [], []
    for i in range(b):
        row = [-L.alignment_energy(zi[i], zl[i], zf[i], cfg) * scale]
        for name in cfg.negative_sets:
            for j in range(b):
                if j == i:
                    continue
                if cfg.mask_same_language and text_ids is not None and name in L.LANGUAGE_SWAPPED_SETS and text_ids[j] == text_ids[i]:
                    continue
                row.append(-L.alignment_energy(*pick[name](i, j), cfg) * scale)
        row = torch.stack(row)
        all_logits.append(row)
        losses.append(torch.logsumexp(row, 0) - row[0])
    return torch.stack(losses).mean(), all_logits


@pytest.mark.parametrize(
    "negative_sets,area_mode,use_text",
    [(NEGATIVE_SETS, "sqrt", True), (NEGATIVE_SETS, "squared", False), (("image", "language_flow"), "sqrt", True)],
)
def test_bxb_path_equals_brute_force_over_explicit_tuples(negative_sets, area_mode, use_text):
    cfg = AlignmentLossConfig(negative_sets=negative_sets, area_mode=area_mode, lambda_cos=0.7)
    b, d = 6, 5
    zi, zl, zf = (_unit(b, d, seed=s).requires_grad_(True) for s in (11, 12, 13))
    text_ids = torch.tensor([0, 1, 0, 2, 1, 0]) if use_text else None
    logit_scale = torch.tensor(1.3, dtype=torch.float64)
    fast = L.alignment_infonce(zi, zl, zf, logit_scale, cfg, text_ids)
    ref, ref_logits = _brute_force_loss(zi, zl, zf, math.exp(1.3), cfg, text_ids)
    assert fast.loss.item() == pytest.approx(ref.item(), abs=1e-10)
    for i in range(b):  # the valid logits of each row, in the same order
        assert torch.allclose(fast.logits[i][fast.valid[i]], ref_logits[i], atol=1e-10)
    g_fast = torch.autograd.grad(fast.loss, (zi, zl, zf))
    g_ref = torch.autograd.grad(ref, (zi, zl, zf))
    for gf, gr in zip(g_fast, g_ref):
        assert torch.allclose(gf, gr, atol=1e-8)


def test_same_language_negatives_are_masked():
    cfg = AlignmentLossConfig()
    zi, zl, zf = _matched_batch(b=4)
    text_ids = torch.tensor([0, 0, 1, 1])
    res = L.alignment_infonce(zi, zl, zf, torch.tensor(1.0), cfg, text_ids)
    # per anchor: 3 non-language sets x 3 others + 3 language-swapped sets x 2 other-text samples
    assert res.valid.sum(1).tolist() == [1 + 3 * 3 + 3 * 2] * 4
    res_nomask = L.alignment_infonce(zi, zl, zf, torch.tensor(1.0), AlignmentLossConfig(mask_same_language=False), text_ids)
    assert res_nomask.valid.sum(1).tolist() == [1 + 6 * 3] * 4


def test_same_meaning_paraphrases_are_not_negatives():
    """Language groups (paraphrases of one phase + target): a language-swapped negative of the same
    group is dropped even when its sentence differs; the identical sentence across groups too."""
    cfg = AlignmentLossConfig()
    zi, zl, zf = _matched_batch(b=4)
    text_ids = torch.tensor([0, 1, 2, 3])  # four different sentences ...
    language_ids = torch.tensor([0, 0, 1, 1])  # ... two meanings
    res = L.alignment_infonce(zi, zl, zf, torch.tensor(1.0), cfg, text_ids, language_ids)
    assert res.valid.sum(1).tolist() == [1 + 3 * 3 + 3 * 2] * 4
    # sample 3 drew the same sentence as sample 0 (e.g. "move the gripper away from the sink"
    # for two targets' retreat groups): masked as well
    res2 = L.alignment_infonce(zi, zl, zf, torch.tensor(1.0), cfg, torch.tensor([0, 1, 2, 0]), language_ids)
    assert res2.valid.sum(1).tolist() == [1 + 9 + 3 * 1, 1 + 9 + 3 * 2, 1 + 9 + 3 * 2, 1 + 9 + 3 * 1]
    # the mask only removes columns: the loss equals the one over the remaining negatives
    no_mask = L.alignment_infonce(zi, zl, zf, torch.tensor(1.0), AlignmentLossConfig(mask_same_language=False), text_ids, language_ids)
    assert no_mask.valid.sum(1).tolist() == [1 + 6 * 3] * 4
    with pytest.raises(ValueError, match="language_ids"):
        L.alignment_infonce(zi, zl, zf, torch.tensor(1.0), cfg, text_ids, torch.tensor([0, 1]))


def test_temperature_clamped_like_clip():
    cfg = AlignmentLossConfig()
    assert L.inverse_temperature(torch.tensor(10.0), cfg).item() == pytest.approx(100.0)
    assert L.inverse_temperature(torch.tensor(-3.0), cfg).item() == pytest.approx(1.0)
    zi, zl, zf = _matched_batch(b=4)
    assert L.alignment_infonce(zi, zl, zf, torch.tensor(10.0), cfg).temperature == pytest.approx(0.01)


@pytest.mark.parametrize("input_dtype", [torch.float32, torch.bfloat16])
def test_energy_is_float64_and_ignores_autocast(input_dtype):
    # Embeddings as a mixed-precision network emits them (float32, or bfloat16 under autocast), close
    # to each other as after training: the loss under bf16 autocast must equal the float64 brute-force
    # reference computed from the same input values. A loss computed in bf16 (unit vectors or cosines
    # rounded to 8 mantissa bits) is off by ~1e-2 here, float32 cosines by ~1e-6: both exceed 1e-9.
    cfg = AlignmentLossConfig(lambda_cos=0.7)
    zi, zl, zf = (t.to(input_dtype) for t in _matched_batch(b=6, d=32, noise=0.02))
    scale = math.log(100.0)  # 1/tau = 100 (CLIP's clamp): logits magnify energy errors 100x
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = L.alignment_infonce(zi, zl, zf, torch.tensor(scale), cfg)
    assert auto.loss.dtype == torch.float64 and auto.positive_energy.dtype == torch.float64
    ref, _ = _brute_force_loss(*(t.to(torch.float64) for t in (zi, zl, zf)), math.exp(scale), cfg, None)
    assert abs(auto.loss.item() - ref.item()) <= 1e-9 * max(1.0, abs(ref.item())), (auto.loss.item(), ref.item())
    plain = L.alignment_infonce(zi, zl, zf, torch.tensor(scale), cfg)
    assert auto.loss.item() == plain.loss.item()


def test_bad_shapes_raise():
    cfg = AlignmentLossConfig()
    z = _unit(4, 8)
    with pytest.raises(ValueError):
        L.alignment_infonce(z, z, z[:, :4], torch.tensor(1.0), cfg)
    with pytest.raises(ValueError):
        L.alignment_infonce(z[:1], z[:1], z[:1], torch.tensor(1.0), cfg)
    with pytest.raises(ValueError):
        L.alignment_infonce(z, z, z, torch.tensor(1.0), cfg, text_ids=torch.tensor([0, 1]))
    with pytest.raises(ValueError):
        L.negative_cosines(z @ z.T, z @ z.T, z @ z.T, "images")
    with pytest.raises(ValueError):
        L.actor_loss(torch.zeros(2, 3), torch.zeros(2, 4))


# ------------------------------------------------------------------------------ TCN / actor / total
def test_tcn_loss_prefers_nearer_frame_over_farther_and_other_videos():
    g = torch.Generator().manual_seed(0)
    b, d = 6, 16
    centres = torch.randn(b, d, generator=g) * 3.0  # each video its own region
    step = torch.nn.functional.normalize(torch.randn(b, d, generator=g), dim=-1)
    e0 = centres
    e1 = centres + 0.1 * step  # near in time -> near in embedding
    e2 = centres + 0.6 * step  # far in time -> farther
    episodes = torch.arange(b)
    good, acc_good = L.tcn_loss(e0, e1, e2, episodes, temperature=0.1, normalize=False)
    bad, acc_bad = L.tcn_loss(e0, e2, e1, episodes, temperature=0.1, normalize=False)  # order violated
    assert acc_good == 1.0 and acc_bad == 0.0
    assert good.item() < 0.1 < bad.item()
    # another video's frame close to the anchor is a violated negative
    crowd = e0.clone()
    crowd[1] = e0[0] + 0.01 * step[0]  # video 1's s0 sits right next to video 0's s0
    loss_crowd, acc_crowd = L.tcn_loss(crowd, e1, e2, episodes, temperature=0.1, normalize=False)
    assert acc_crowd < 1.0 and loss_crowd.item() > good.item()
    # frames of the same episode (duplicated in the batch) are not negatives of each other
    same_ep = torch.zeros(b, dtype=torch.long)
    loss_same, _ = L.tcn_loss(e0, e1, e2, same_ep, temperature=0.1, normalize=False)
    assert loss_same.item() <= good.item() + 1e-6
    # finite gradients, also at zero distance
    e = torch.zeros(b, d, requires_grad=True)
    loss0, _ = L.tcn_loss(e, e, e + 1.0, episodes, temperature=0.5, normalize=True)
    loss0.backward()
    assert torch.isfinite(e.grad).all()


def test_tcn_distance_form_pinned_by_hand():
    # The similarity is -(plain, not squared) Euclidean distance / temperature (docs/method.md
    # "Auxiliary losses"; R3M eq. 1). Points on 3-4-5 triangles make every distance exact:
    # squared distance, cosine similarity or a missing temperature give other numbers.
    e0 = torch.tensor([[0.0, 0.0], [10.0, 0.0]])
    e1 = torch.tensor([[3.0, 4.0], [10.0, 1.0]])  # positives: distance 5 and 1
    e2 = torch.tensor([[6.0, 8.0], [10.0, 3.0]])  # farther in time: distance 10 and 3
    t = 2.0
    loss, acc = L.tcn_loss(e0, e1, e2, torch.tensor([0, 1]), temperature=t, normalize=False)
    # anchor 0: positive 5, far 10, other episode's frames (10, 0) (10, 1) (10, 3): 10, sqrt(101), sqrt(109)
    logits0 = [-5 / t, -10 / t, -10 / t, -math.sqrt(101) / t, -math.sqrt(109) / t]
    # anchor 1: positive 1, far 3, other episode's frames (0, 0) (3, 4) (6, 8): 10, sqrt(65), sqrt(80)
    logits1 = [-1 / t, -3 / t, -10 / t, -math.sqrt(65) / t, -math.sqrt(80) / t]
    expected = sum(math.log(sum(math.exp(v) for v in row)) - row[0] for row in (logits0, logits1)) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert acc == 1.0
    # normalize=True: the same form on unit vectors. Angles 0, 90, 180 deg: chords 0, sqrt(2), 2.
    u0 = torch.tensor([[2.0, 0.0], [0.0, 3.0]])  # -> (1, 0), (0, 1)
    u1 = torch.tensor([[0.0, 5.0], [0.0, 7.0]])  # -> (0, 1), (0, 1): distance sqrt(2), 0
    u2 = torch.tensor([[-4.0, 0.0], [0.0, -1.0]])  # -> (-1, 0), (0, -1): distance 2, 2
    loss_n, _ = L.tcn_loss(u0, u1, u2, torch.tensor([0, 1]), temperature=1.0, normalize=True)
    r2 = math.sqrt(2.0)  # a zero distance reads sqrt(0 + 1e-12) = 1e-6 (losses._l2_distance)
    rows = ([-r2, -2.0, -r2, -r2, -r2],  # anchor (1, 0); other episode: (0, 1) (0, 1) (0, -1)
            [-1e-6, -2.0, -r2, -1e-6, -r2])  # anchor (0, 1); other episode: (1, 0) (0, 1) (-1, 0)
    expected_n = sum(math.log(sum(math.exp(v) for v in row)) - row[0] for row in rows) / 2
    assert loss_n.item() == pytest.approx(expected_n, rel=1e-5)

def test_total_loss_combines_terms_with_weights():
    cfg = AlignmentLossConfig(lambda_tcn=0.3, lambda_act=2.0)
    b, d = 6, 8
    zi, zl, zf = (t.float() for t in _matched_batch(b=b, d=d))
    tcn = torch.randn(b, 3, 12)
    pred, target = torch.randn(b, 4, 9), torch.randn(b, 4, 9)
    terms = L.dynaflip_loss(zi, zl, zf, torch.tensor(2.0), tcn, torch.arange(b), pred, target, cfg, torch.arange(b))
    expected = terms.align + 0.3 * terms.tcn + 2.0 * terms.actor
    assert terms.total.item() == pytest.approx(expected.item(), rel=1e-6)
    assert terms.actor.item() == pytest.approx(torch.mean((pred - target) ** 2).item(), rel=1e-6)
    for key in ("loss", "loss_align", "loss_tcn", "loss_actor", "align_acc", "tcn_acc", "energy_pos", "energy_neg", "temperature"):
        assert math.isfinite(terms.stats[key]), key
    assert terms.total.dtype == torch.float32


def test_negative_cosines_cover_every_set():
    b = 4
    zi, zl, zf = (_unit(b, 6, seed=s) for s in (1, 2, 3))
    pick = {
        "image": lambda i, j: (zi[j], zl[i], zf[i]),
        "language": lambda i, j: (zi[i], zl[j], zf[i]),
        "flow": lambda i, j: (zi[i], zl[i], zf[j]),
        "language_flow": lambda i, j: (zi[i], zl[j], zf[j]),
        "image_flow": lambda i, j: (zi[j], zl[i], zf[j]),
        "image_language": lambda i, j: (zi[j], zl[j], zf[i]),
    }
    for name in NEGATIVE_SETS:
        a, bb, c = (t.expand(b, b) for t in L.negative_cosines(zi @ zl.T, zi @ zf.T, zl @ zf.T, name))
        for i, j in itertools.product(range(b), range(b)):
            x, y, z = pick[name](i, j)
            assert torch.allclose(torch.stack([a[i, j], bb[i, j], c[i, j]]), torch.stack([x @ y, x @ z, y @ z]), atol=1e-12), name
