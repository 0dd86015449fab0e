"""The operator's side of a real-cell OOD session (eval/ood_operator.py): the setup sheet of a
seeded, perturbed scene, and the episode cycle (confirm, mark, timeout, safety stop, refusal,
abort) on an injected clock."""
from __future__ import annotations

import pytest

pytest.importorskip("mujoco")

from dynaflip_ros.configs.sim import SimConfig  # noqa: E402
from dynaflip_ros.eval.ood_operator import OperatorSession, Phase, PlannedEpisode, setup_sheet  # noqa: E402
from dynaflip_ros.sim.perturbations import parse_condition  # noqa: E402
from dynaflip_ros.sim.pick_into_sink import PickIntoSinkEnv  # noqa: E402


@pytest.fixture(scope="module")
def env():
    e = PickIntoSinkEnv(SimConfig(image_hw=(16, 16)))
    yield e
    e.close()


def test_sheet_places_every_object_and_names_each_condition(env):
    spec = "distractors:0.5+lighting:1+texture:0.5+camera_pose:1"
    info = env.reset(seed=100003, perturbation=parse_condition(spec))
    sheet = setup_sheet(env, info, reference_image="frames/ref.png")
    assert sheet.condition == parse_condition(spec).name and sheet.instruction == info.instruction
    roles = {o.name: o.role for o in sheet.objects}
    added = info.scene["perturbation"]["distractors"]["added"]
    assert roles[info.object_name] == "target" and all(roles[n] == "distractor" for n in added)
    assert [o.name for o in sheet.objects] == list(info.objects)
    for o in sheet.objects:
        x, y = env.object_pose(o.name)[:2]
        assert (o.x_cm, o.y_cm) == (pytest.approx(100 * x, abs=0.06), pytest.approx(100 * y, abs=0.06))
    text = sheet.text()
    for word in ("light:", "table:", "camera:", "frames/ref.png", info.instruction):
        assert word in text
    nominal = setup_sheet(env, env.reset(seed=100003))
    assert nominal.notes == () and nominal.condition == "nominal"
    assert {o.name for o in nominal.objects} < {o.name for o in sheet.objects}


class FakeCell:
    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []
        self.refuse = ""

    def start_episode(self, planned) -> None:
        if self.refuse:
            raise RuntimeError(self.refuse)
        self.calls.append(("start", planned.seed))

    def stop_episode(self, planned) -> dict:
        self.calls.append(("stop", planned.seed))
        return {"safety": {"rejected": 0}}


def session(env, seeds=(100000, 100001, 100002)):
    t = [0.0]
    cell, records, said = FakeCell(), [], []
    queue = []
    for s in seeds:
        info = env.reset(seed=s)
        queue.append(PlannedEpisode("m", "nominal", s, info, setup_sheet(env, info)))
    ses = OperatorSession(queue, cell, clock=lambda: t[0], timeout_s=30.0,
                          on_finished=lambda p, rec, tel: records.append((p.seed, rec, tel)), announce=said.append)
    return ses, cell, records, said, t


def test_cycle_confirm_mark_timeout_and_safety_stop(env):
    ses, cell, records, said, t = session(env)
    assert ses.phase is Phase.SETUP and "set up the scene" in said[-1] and "100000" in said[-1]
    assert not ses.mark("success")  # nothing running yet: no record
    assert ses.key("") and ses.phase is Phase.RUNNING and cell.calls == [("start", 100000)]
    t[0] = 4.5
    assert ses.key("s")
    assert records[-1][:2] == (100000, {"outcome": "success", "time_to_success_s": 4.5, "episode_sim_time_s": 4.5,
                                        "reason": "operator (keyboard)"})
    assert cell.calls[-1] == ("stop", 100000) and ses.phase is Phase.SETUP and ses.current.seed == 100001
    ses.confirm()
    t[0] = 34.0
    ses.tick()  # 29.5 s: still running
    assert ses.phase is Phase.RUNNING
    t[0] = 34.5
    ses.tick()
    assert records[-1][1]["outcome"] == "timeout" and records[-1][1]["time_to_success_s"] is None
    ses.confirm()
    ses.safety_stop("protective stop")
    assert records[-1][1] == {"outcome": "safety_stop", "time_to_success_s": None, "episode_sim_time_s": 0.0,
                              "reason": "protective stop"}
    assert ses.phase is Phase.DONE and "session done: 3" in said[-1] and not ses.confirm()


def test_refusal_keeps_the_setup_and_abort_records_nothing(env):
    ses, cell, records, said, t = session(env, seeds=(100000,))
    cell.refuse = "the arm is halted (rearm first)"
    assert not ses.confirm() and ses.phase is Phase.SETUP and "refused to start: the arm is halted" in said[-1]
    cell.refuse = ""
    assert ses.confirm()
    ses.abort()
    assert ses.phase is Phase.SETUP and records == [] and cell.calls == [("start", 100000), ("stop", 100000)]
    assert not ses.key("x") and "Enter confirms" in said[-1]
    with pytest.raises(ValueError, match="unknown outcome"):
        ses.mark("great")
    with pytest.raises(ValueError, match="timeout_s"):
        OperatorSession([], cell, clock=lambda: 0.0, timeout_s=0.0, on_finished=lambda *a: None)
