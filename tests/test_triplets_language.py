"""The language of a training clip (data/triplets.py, docs/method.md §1 "Inputs"): derived from the
episode's target and the clip's expert phases, several paraphrases per meaning, one drawn per use.

In-memory `EpisodeFrames` (no dataset on disk): fast.
"""
import numpy as np
import pytest

from dynaflip_ros.configs.encoder import TripletDataConfig
from dynaflip_ros.data import schema
from dynaflip_ros.task.instructions import STILL_SENTENCES, clip_sentences


def _frames(phases, targets, tasks=None, idle_tail=0):
    """Episodes with the given per-frame phases; the arm moves every frame except the last
    `idle_tail` frames of each episode; 48 valid points."""
    from dynaflip_ros.data.triplets import EpisodeFrames

    lengths = [len(p) for p in phases]
    m = sum(lengths)
    state, tracks = [], []
    for n in lengths:
        arm = np.minimum(np.arange(n), n - 1 - idle_tail) * 0.05
        state.append(np.repeat(arm[:, None], 7, axis=1))
        tr = np.zeros((n, schema.N_TRACK, 3))
        tr[:, :48, 2] = 0.8
        tr[:, 32:48, 0] = arm[:, None]  # finger pads follow the arm
        tracks.append(tr)
    valid = np.zeros((m, schema.N_TRACK), bool)
    valid[:, :48] = True
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    return EpisodeFrames(
        images=np.zeros((m, 8, 8, 3), np.uint8),
        state=np.concatenate(state).astype(np.float32),
        tracks=np.concatenate(tracks).astype(np.float32),
        valid=valid,
        phase=np.concatenate([np.asarray(p, np.int64) for p in phases]),
        episode_index=np.repeat(np.arange(len(lengths)), lengths),
        frame_index=np.concatenate([np.arange(n) for n in lengths]),
        episode_ids=np.arange(len(lengths)),
        episode_start=starts.astype(np.int64),
        episode_length=np.asarray(lengths, np.int64),
        episode_task=list(tasks or [f"put the {t or 'thing'} in the sink" for t in targets]),
        episode_target=list(targets),
        fps=10.0,
        root="memory",
    )


def _sampler(frames, **kw):
    from dynaflip_ros.data.triplets import TripletSampler

    kw.setdefault("heldout_fraction", 0.0)
    kw.setdefault("frame_offset", 2)
    kw.setdefault("flow_window", 3)
    return TripletSampler(frames, TripletDataConfig(**kw))


def test_paraphrases_vary_across_draws_and_belong_to_the_clip():
    frames = _frames([[3] * 12], ["red cube"])  # lift for the whole episode
    sampler = _sampler(frames)
    rng = np.random.default_rng(0)
    drawn = set()
    for _ in range(20):
        batch = sampler.sample(4, rng)
        drawn.update(sampler.texts[i] for i in batch.text_ids)
        assert len(set(batch.language_ids.tolist())) == 1
    assert drawn <= set(clip_sentences("lift", "red cube"))
    assert len(drawn) >= 5  # 9 paraphrases (3 templates x 3 synonyms of "cube")
    # every distinct sentence once in `texts` (embedded once), each group's paraphrases complete
    assert len(sampler.texts) == len(set(sampler.texts)) == len(clip_sentences("lift", "red cube"))
    assert [sampler.texts[i] for i in sampler.group_text_ids(0)] == list(clip_sentences("lift", "red cube"))


def test_same_meaning_is_one_language_group():
    """Same phase + same target = one group (whatever paraphrase is drawn); another target or
    phase = another group; a sentence shared by two groups is stored once."""
    phases = [[0] * 6 + [6] * 6, [0] * 6 + [6] * 6, [0] * 6 + [6] * 6]
    frames = _frames(phases, ["red cube", "red cube", "blue bar"])
    sampler = _sampler(frames)
    assert set(sampler.group_keys) == {("approach", "red cube"), ("retreat", "red cube"),
                                       ("approach", "blue bar"), ("retreat", "blue bar")}
    first = {e: {} for e in range(3)}  # episode -> phase of the clip's first frame -> groups
    for row, g in zip(sampler.clip_rows, sampler.clip_group):
        if frames.phase[row] == frames.phase[row + 2]:  # clips inside one phase
            first[int(frames.episode_index[row])].setdefault(int(frames.phase[row]), set()).add(int(g))
    assert all(len(gs) == 1 for e in first.values() for gs in e.values())
    first = {e: {p: gs.pop() for p, gs in d.items()} for e, d in first.items()}
    assert first[0] == first[1]  # episodes 0 and 1: same target, same groups
    assert first[0][0] != first[2][0] and first[0][0] != first[0][6]
    # "move the gripper away from the sink" describes the retreat of both targets: one text id
    shared = "move the gripper away from the sink"
    assert sampler.texts.count(shared) == 1
    ids = [set(sampler.group_text_ids(g).tolist()) for g in (first[0][6], first[2][6])]
    assert sampler.texts.index(shared) in ids[0] & ids[1]


def test_dominant_phase_or_start_phase():
    # clip at t = 0 with k = 3: frames 0..3 have phases (0, 1, 1, 1): start "approach", dominant "descend"
    frames = _frames([[0, 1, 1, 1, 1, 1, 1, 1]], ["red cube"])
    row0 = lambda s: int(np.flatnonzero(s.clip_rows == 0)[0])  # noqa: E731
    dominant = _sampler(frames, frame_offset=3, flow_window=4)
    assert dominant.group_keys[dominant.clip_group[row0(dominant)]] == ("descend", "red cube")
    start = _sampler(frames, frame_offset=3, flow_window=4, clip_phase="start")
    assert start.group_keys[start.clip_group[row0(start)]] == ("approach", "red cube")
    # a tie goes to the earlier phase: frames 0..3 = (0, 0, 1, 1)
    tie = _sampler(_frames([[0, 0, 1, 1, 1, 1, 1, 1]], ["red cube"]), frame_offset=3, flow_window=4)
    assert tie.group_keys[tie.clip_group[row0(tie)]] == ("approach", "red cube")


def test_episodes_without_phase_fall_back_to_the_task_and_unknown_targets_to_the_object():
    frames = _frames([[-1] * 8, [2] * 8], ["red cube", None], tasks=["drop the red block into the basin", "x"])
    sampler = _sampler(frames)
    assert set(sampler.group_keys) == {("task", "drop the red block into the basin"), ("grasp", None)}
    g_task = sampler.group_keys.index(("task", "drop the red block into the basin"))
    assert [sampler.texts[i] for i in sampler.group_text_ids(g_task)] == ["drop the red block into the basin"]
    g_obj = sampler.group_keys.index(("grasp", None))
    assert all("the object" in sampler.texts[i] for i in sampler.group_text_ids(g_obj))


def test_still_clips_get_the_still_language():
    frames = _frames([[4] * 14], ["red cube"], idle_tail=6)
    sampler = _sampler(frames, still_keep_fraction=1.0)
    assert sampler.clips_kept_still > 0
    g = sampler.group_keys.index(("still", None))
    assert [sampler.texts[i] for i in sampler.group_text_ids(g)] == list(STILL_SENTENCES)
    assert all(sampler.clip_group[sampler.clip_still] == g)
    assert not (sampler.clip_group[~sampler.clip_still] == g).any()
    batch = sampler.sample(64, np.random.default_rng(0))
    assert set(sampler.texts[i] for i, s in zip(batch.text_ids, batch.still) if s) <= set(STILL_SENTENCES)


def test_no_valid_clip_is_a_clear_error():
    from dynaflip_ros.data.triplets import TripletDataError

    frames = _frames([[4] * 10], ["red cube"], idle_tail=10)  # nothing ever moves
    with pytest.raises(TripletDataError, match="no valid clips"):
        _sampler(frames, still_keep_fraction=0.0)
