"""Encoder recipes (encoder/recipes.py): each recipe's config and loss on small inputs, CLIP's
pairwise InfoNCE against its formula, whole-tuple negatives, the untrained baselines, the CLI."""
from __future__ import annotations

import dataclasses
import math

import pytest

torch = pytest.importorskip("torch")

from dynaflip_ros.configs.encoder import WHOLE_TUPLE, AlignmentLossConfig, EncoderConfig  # noqa: E402
from dynaflip_ros.encoder.losses import (  # noqa: E402
    alignment_energy, alignment_infonce, dynaflip_loss, pairwise_infonce,
)
from dynaflip_ros.encoder.recipes import RECIPES, apply_recipe, get_recipe, save_untrained  # noqa: E402

B, D = 6, 16


def _inputs(seed: int = 0, requires_grad: bool = True):
    g = torch.Generator().manual_seed(seed)
    z = [torch.randn(B, D, generator=g, requires_grad=requires_grad) for _ in range(3)]
    tcn = torch.randn(B, 3, 8, generator=g, requires_grad=requires_grad)
    flow_pred = torch.randn(B, 4, 9, generator=g, requires_grad=requires_grad)
    flow_target = torch.randn(B, 4, 9, generator=g)
    return z, tcn, flow_pred, flow_target


def test_every_recipe_builds_a_valid_config_and_dynaflip_is_the_default():
    base = EncoderConfig()
    assert apply_recipe(base, "dynaflip") == base
    for name, r in RECIPES.items():
        cfg = apply_recipe(base, name)
        assert dataclasses.asdict(cfg.loss) == {**dataclasses.asdict(base.loss), **r.loss}, name
        assert cfg.data == base.data and cfg.train == base.train  # same data and budget for every recipe
    with pytest.raises(ValueError, match="unknown recipe 'simclr'"):
        get_recipe("simclr")


def test_pairwise_infonce_is_clips_symmetric_loss():
    cfg = AlignmentLossConfig()
    (a, b, _), *_ = _inputs()
    scale = torch.tensor(math.log(10.0))
    res = pairwise_infonce(a, b, scale, cfg)
    with torch.no_grad():
        an, bn = (torch.nn.functional.normalize(x.double(), dim=1) for x in (a, b))
        logits = 10.0 * an @ bn.T
        want = 0.5 * (torch.nn.functional.cross_entropy(logits, torch.arange(B))
                      + torch.nn.functional.cross_entropy(logits.T, torch.arange(B)))
    assert float(res.loss.detach()) == pytest.approx(float(want), rel=1e-6)  # 1/tau from a float32 log
    assert res.temperature == pytest.approx(0.1)
    same = torch.zeros(B, B, dtype=torch.bool)
    same[0, 1] = same[1, 0] = True  # e.g. two paraphrases of one instruction: not negatives of each other
    masked = pairwise_infonce(a, b, scale, cfg, same)
    assert not masked.valid[0, 1] and masked.valid[0, 0] and float(masked.loss.detach()) != float(res.loss.detach())
    res.loss.backward()
    assert a.grad.abs().sum() > 0 and b.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="batch of >= 2"):
        pairwise_infonce(a[:1], b[:1], scale, cfg)


def test_dynamo_loss_terms():
    from dynaflip_ros.encoder.losses import covariance_loss, dynamics_loss

    g = torch.Generator().manual_seed(1)
    x = torch.randn(400, 4, generator=g, dtype=torch.float64)
    import numpy as np

    c = np.cov(x.numpy(), rowvar=False)  # (4, 4), ddof 1
    assert float(covariance_loss(x)) == pytest.approx(float((c ** 2).sum() - (np.diag(c) ** 2).sum()) / 4, rel=1e-9)
    y = torch.cat([x[:, :1], x[:, :1]], dim=1)  # two identical columns: cov 1 off the diagonal, twice
    assert float(covariance_loss(y)) == pytest.approx(2 * float(x[:, 0].var()) ** 2 / 2, rel=1e-9)
    target = torch.randn(8, 4, generator=g)
    loss, cos = dynamics_loss(target.clone(), target, x.float(), cov_weight=0.0)
    assert float(loss) == pytest.approx(0.0, abs=1e-6) and cos == pytest.approx(1.0, abs=1e-6)
    pred = torch.randn(8, 4, generator=g, requires_grad=True)
    tgt = target.clone().requires_grad_(True)
    loss, _ = dynamics_loss(pred, tgt, x.float(), cov_weight=0.04)
    loss.backward()
    assert pred.grad.abs().sum() > 0 and tgt.grad is None  # the target is a stop-gradient
    with pytest.raises(ValueError, match="must be equal"):
        dynamics_loss(pred, target[:, :3], x.float(), 0.04)


def test_whole_tuple_negatives_are_the_other_samples_matched_energies():
    cfg = AlignmentLossConfig(negative_sets=(WHOLE_TUPLE,), mask_same_language=False, positive_energy="closed_form")
    (x, y, z), *_ = _inputs(requires_grad=False)
    res = alignment_infonce(x, y, z, torch.tensor(0.0), cfg)
    e_matched = alignment_energy(*(torch.nn.functional.normalize(v.double(), dim=1) for v in (x, y, z)), cfg,
                                 form="closed_form")
    scale = float(res.logits[0, 0] / -res.positive_energy[0])
    for i in range(B):
        for j in range(B):
            if i != j:
                assert float(-res.logits[i, 1 + j] / scale) == pytest.approx(float(e_matched[j]), rel=1e-9)
    assert torch.isinf(torch.diagonal(res.logits[:, 1:])).all()  # a sample is not its own negative


def test_whole_tuple_negatives_reward_equal_energies_not_alignment():
    """With other samples' whole tuples as the only negatives (no_mismatched_negatives) every
    tuple energy E_k is the positive of its own row and a negative of every other row, so the
    mean InfoNCE is s mean(E) + logsumexp(-s E) >= ln B (Jensen), equal exactly when all energies
    are equal, however badly aligned: the term equalises energies and does not reward alignment
    (the benchmark's pre-training log: align loss at ln 32, E+ = E-; docs/method.md §7)."""
    cfg = AlignmentLossConfig(negative_sets=(WHOLE_TUPLE,), mask_same_language=False)
    (x, y, z), *_ = _inputs(requires_grad=False)
    res = alignment_infonce(x, y, z, torch.tensor(0.0), cfg)
    s = float(res.logits[0, 0] / -res.positive_energy[0])
    e = res.positive_energy
    assert float(res.loss) == pytest.approx(float(s * e.mean() + torch.logsumexp(-s * e, 0)), rel=1e-9)
    assert float(res.loss) > math.log(B)
    # Every sample the same tuple of three orthogonal unit vectors (no alignment at all): the
    # loss sits at its lower bound ln B.
    eye = torch.eye(D)
    res = alignment_infonce(eye[0].expand(B, D), eye[1].expand(B, D), eye[2].expand(B, D), torch.tensor(0.0), cfg)
    assert float(res.loss) == pytest.approx(math.log(B), rel=1e-9) and float(res.positive_energy.min()) > 1.0


@pytest.mark.parametrize("name", [n for n, r in RECIPES.items() if r.trained])
def test_each_trained_recipes_loss_on_small_inputs(name):
    cfg = apply_recipe(EncoderConfig(), name).loss
    (zi, zl, zf), tcn, flow_pred, flow_target = _inputs()
    nxt = torch.randn(B, 8, requires_grad=True)  # the dynamics heads' prediction of the next embedding
    dynamics = (nxt, tcn[:, 1], tcn[:, :2].flatten(0, 1))
    terms = dynaflip_loss(zi, zl, zf, torch.tensor(math.log(1 / 0.07)), tcn, torch.arange(B) % 3, flow_pred,
                          flow_target, cfg, text_ids=torch.arange(B), language_ids=torch.arange(B),
                          dynamics=dynamics if cfg.lambda_dyn > 0 else None)
    assert torch.isfinite(terms.total)
    dyn = cfg.lambda_dyn * float(terms.dyn) if terms.dyn is not None else 0.0
    assert float(terms.total) == pytest.approx(float(terms.align + cfg.lambda_tcn * terms.tcn
                                                     + cfg.lambda_act * terms.actor) + dyn, rel=1e-6)
    terms.total.backward()
    grads = {n: float(t.grad.abs().sum()) if t.grad is not None else 0.0
             for n, t in (("image", zi), ("language", zl), ("flow", zf), ("tcn", tcn), ("actor", flow_pred),
                          ("dynamics", nxt))}
    aligned = {"triangle": {"image", "language", "flow"}, "image_language": {"image", "language"},
               "image_flow": {"image", "flow"}, "none": set()}[cfg.alignment]
    for modality in ("image", "language", "flow"):
        assert (grads[modality] > 0) == (modality in aligned), (name, grads)
    assert (grads["tcn"] > 0) == (cfg.lambda_tcn > 0 or cfg.lambda_dyn > 0), (name, grads)  # dynamo: covariance
    assert (grads["actor"] > 0) == (cfg.lambda_act > 0) and (grads["dynamics"] > 0) == (cfg.lambda_dyn > 0), (name, grads)
    assert ("align_acc" in terms.stats) == (cfg.alignment != "none")


def test_untrained_baselines_are_saved_at_their_initialisation(tmp_path):
    from safetensors.torch import load_file

    cfg = EncoderConfig()
    m_img = save_untrained(tmp_path / "imagenet", apply_recipe(cfg, "imagenet"), "imagenet", seed=3)
    m_img2 = save_untrained(tmp_path / "imagenet2", apply_recipe(cfg, "imagenet"), "imagenet", seed=3)
    m_rand = save_untrained(tmp_path / "random", apply_recipe(cfg, "random"), "random", seed=3)
    assert m_img.weights_sha256 == m_img2.weights_sha256 != m_rand.weights_sha256  # seeded, and not the same
    assert m_img.config["run"] == {"recipe": "imagenet", "trained": False, "seed": 3, "complete": True}
    from dynaflip_ros.encoder.model import ImageEncoder

    ref = ImageEncoder(cfg.model, imagenet_init=True).state_dict()
    got_img = load_file(str(tmp_path / "imagenet" / "image_encoder.safetensors"))
    got_rand = load_file(str(tmp_path / "random" / "image_encoder.safetensors"))
    trunk = [k for k in ref if k.startswith("trunk.") and k.endswith("weight")][0]
    assert torch.equal(got_img[trunk], ref[trunk]) and not torch.equal(got_rand[trunk], ref[trunk])
    with pytest.raises(ValueError, match="is trained"):
        save_untrained(tmp_path / "x", cfg, "dynaflip")


def test_cli_recipe_flags(tmp_path, capsys):
    from dynaflip_ros.cli import main

    assert main(["train-encoder", "--recipe", "random", "--out", str(tmp_path / "r")]) == 0
    assert (tmp_path / "r" / "manifest.json").is_file()
    assert main(["train-encoder", "--recipe", "simclr", "--out", str(tmp_path / "s")]) == 2
    assert "unknown recipe 'simclr'" in capsys.readouterr().err
    assert main(["train-encoder", "--recipe", "clip", "--out", str(tmp_path / "c")]) == 2
    assert "recipe clip trains on it" in capsys.readouterr().err


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    from synthetic_dataset import write_synthetic_dataset

    return write_synthetic_dataset(tmp_path_factory.mktemp("synth") / "ds", n_episodes=4, length=24, idle_tail=4)


@pytest.mark.parametrize("name", [n for n, r in RECIPES.items() if r.trained])
def test_each_trained_recipe_runs_through_the_trainer(name, tiny_dataset, tmp_path):
    """Two steps of `train_encoder` per recipe on a tiny synthetic dataset: the run completes,
    the manifest records the recipe and the resolved loss config, the alignment term is 0 only
    for the recipe without one."""
    import json

    from dynaflip_ros.configs.encoder import EncoderModelConfig, EncoderTrainConfig
    from dynaflip_ros.encoder.train import train_encoder
    from test_encoder_train import HashTextEmbedder

    torch.set_num_threads(1)
    cfg = EncoderConfig(model=EncoderModelConfig(input_hw=(64, 64), pretrained=False),
                        train=EncoderTrainConfig(steps=2, batch_size=4, warmup_steps=0, log_every=1, save_every=0,
                                                 num_threads=1, eval_every=0, retrieval_clips=8))
    result = train_encoder(tiny_dataset, tmp_path / name, apply_recipe(cfg, name), text_embedder=HashTextEmbedder(),
                           progress=False, verbose=False, recipe=name)
    run = result.manifest.config["run"]
    assert run["recipe"] == name and run["complete"] and result.manifest.config["loss"]["alignment"] == \
        apply_recipe(cfg, name).loss.alignment
    log = [json.loads(line) for line in (tmp_path / name / "train_log.jsonl").read_text().splitlines()]
    steps = [r for r in log if "loss_align" in r]
    assert steps and all(math.isfinite(r["loss"]) for r in steps)
    no_alignment = apply_recipe(cfg, name).loss.alignment == "none"
    assert all((r["loss_align"] == 0.0) == no_alignment for r in steps)
    assert all(("loss_dyn" in r) == (name == "dynamo") for r in steps)
