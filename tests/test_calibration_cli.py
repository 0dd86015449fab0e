"""`dynaflip calibrate` end to end in simulation: hand-eye (record + solve + YAML/report), offline
re-solve from the recorded views, latency (into the YAML), intrinsics check, usage errors."""
from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import yaml

from dynaflip_ros.calibration import cli


def run(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="dynaflip")
    sub = p.add_subparsers(dest="verb")
    cli.register(sub)
    args = p.parse_args(argv)
    return int(args.func(args) or 0)


def test_help_has_examples(capsys):
    for argv in (["calibrate", "--help"], ["calibrate", "hand-eye", "--help"], ["calibrate", "latency", "--help"]):
        with pytest.raises(SystemExit) as e:
            run(argv)
        assert e.value.code == 0
        out = capsys.readouterr().out
        assert "examples:" in out and "dynaflip calibrate hand-eye --mode eye-to-hand --sim" in out
    assert run(["calibrate", "hand-eye"]) == 2  # neither --sim nor --robot-ip nor --from-views
    assert run(["calibrate", "latency"]) == 2


def test_real_cell_without_devices_fails_cleanly(capsys):
    pytest.importorskip("pyrealsense2")
    rc = run(["calibrate", "hand-eye", "--robot-ip", "127.0.0.1", "--camera-serial", "000000000000"])
    assert rc == 1
    assert "cannot open the devices" in capsys.readouterr().out


def test_sim_hand_eye_then_offline_latency_intrinsics(tmp_path, capsys):
    pytest.importorskip("mujoco")
    out = tmp_path / "calibration" / "sim_calib_eye-to-hand.yaml"
    views = tmp_path / "views"
    rc = run(["calibrate", "hand-eye", "--mode", "eye-to-hand", "--sim", "--views", "6", "--out", str(out),
              "--views-dir", str(views)])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "[1/" in text and "view 6:" in text  # progress lines
    summary = json.loads(text[text.index("{"):])
    x_err_deg, x_err_mm = summary["ground_truth"]["x_error_deg_mm"]
    assert x_err_deg < 0.2 and x_err_mm < 2.0
    cal = yaml.safe_load(out.read_text())
    assert cal["extrinsics"]["parent_frame"] == "base" and cal["hand_eye"]["n_views"] == 6
    assert (views / "views.json").is_file() and len(list(views.glob("view_*.png"))) == 6
    assert out.with_name(out.stem + ".report.md").is_file()
    # Offline re-solve of the recorded views.
    out2 = tmp_path / "again.yaml"
    assert run(["calibrate", "hand-eye", "--from-views", str(views), "--out", str(out2)]) == 0
    capsys.readouterr()
    cal2 = yaml.safe_load(out2.read_text())
    np.testing.assert_allclose(cal2["extrinsics"]["matrix"], cal["extrinsics"]["matrix"], atol=1e-7)
    # Latency in sim, stored into the calibration YAML.
    lat = tmp_path / "lat.json"
    rc = run(["calibrate", "latency", "--sim", "--inject-delay-s", "0.03", "--duration-s", "3.75", "--fps", "15",
              "--out", str(lat), "--calibration-yaml", str(out)])
    assert rc == 0, capsys.readouterr().out
    capsys.readouterr()
    res = json.loads(lat.read_text())
    assert abs(res["error_frames"]) < 0.1
    assert yaml.safe_load(out.read_text())["latency"]["latency_s"] == pytest.approx(res["latency_s"])
    # Intrinsics check from the recorded views.
    rc = run(["calibrate", "intrinsics", "--from-views", str(views), "--out", str(tmp_path / "intr.json")])
    assert rc == 0
    rep = json.loads((tmp_path / "intr.json").read_text())
    assert rep["n_views"] == 6 and rep["factory_pnp_rms_px"] < 0.3
