"""RealSense backend through the real librealsense pipeline: synthetic D435 recordings written
with `rs.software_device()` -> `rs.recorder` (.db3) are played back by `RealSenseCamera`
(`rs.config.enable_device_from_file`, one `rs.align(rs.stream.color)` block).

Checked against the recording's ground truth: frame count and order, exact colour pixels, depth
aligned to colour (a tilted plane seen through D435-like intrinsics and depth->colour extrinsics)
in metres, colour intrinsics and distortion, timestamps on the host monotonic clock, dropped
frames from frame-number gaps, fixed settings read back (and the write path on software
sensors), settings() provenance, config validation, clear errors without a device.
"""
import json
import logging
import math
import time

import numpy as np
import pytest

rs = pytest.importorskip("pyrealsense2")

from dynaflip_ros.cameras.base import Camera, CameraError  # noqa: E402
from dynaflip_ros.cameras.realsense import (  # noqa: E402
    DeviceClockMapper, RealSenseCamera, apply_fixed_settings, fixed_setting_targets,
)
from dynaflip_ros.cameras.realsense_playback import (  # noqa: E402
    synthetic_rgb, write_synthetic_recording,
)
from dynaflip_ros.configs.io import ConfigError, from_dict  # noqa: E402
from dynaflip_ros.configs.realsense import RealSenseConfig  # noqa: E402
from dynaflip_ros.configs.ros import CameraNodeConfig  # noqa: E402

N_FRAMES = 12
SKIPPED = (5, 6)  # frame numbers left out of the recording: a 2-frame drop


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    return write_synthetic_recording(tmp_path_factory.mktemp("rs") / "d435.db3", n_frames=N_FRAMES,
                                     skip_frame_numbers=SKIPPED)


@pytest.fixture(scope="module")
def played(recording):
    """Every frame of the recording read through RealSenseCamera (non-real-time playback)."""
    cam = RealSenseCamera(RealSenseConfig(playback_path=str(recording.path)))
    assert isinstance(cam, Camera)
    cam.connect()
    frames, infos, read_times = [], [], []
    t_start = time.monotonic()
    try:
        while True:
            try:
                frames.append(cam.read())
            except CameraError as e:
                end_error = str(e)
                break
            read_times.append(time.monotonic())
            infos.append(dict(cam.last_frame_info))
        t_end = time.monotonic()
        settings = cam.settings()
        yield {"cam": cam, "frames": frames, "infos": infos, "end_error": end_error, "settings": settings,
               "t_start": t_start, "t_end": t_end, "read_times": read_times}
    finally:
        cam.disconnect()


def test_playback_frame_count_order_and_exact_pixels(recording, played):
    frames = played["frames"]
    assert [f.sequence for f in frames] == list(recording.frame_numbers)
    assert len(frames) == N_FRAMES - len(SKIPPED)
    for f in frames:
        assert f.rgb.dtype == np.uint8 and f.rgb.shape == (480, 640, 3)
        np.testing.assert_array_equal(f.rgb, synthetic_rgb(f.sequence, 480, 640))
        assert f.frame_id == "camera_color_optical_frame"
    assert "ended" in played["end_error"]


def test_dropped_frames_from_frame_number_gaps(played):
    cam = played["cam"]
    assert cam.dropped_frames == len(SKIPPED)
    assert cam.dropped_depth_frames == len(SKIPPED)
    infos = played["infos"]
    assert [i["dropped_frames"] for i in infos][:5] == [0] * 5  # frames 0..4
    assert infos[5]["frame_number"] == 7 and infos[5]["dropped_frames"] == 2
    assert all(i["depth_frame_number"] == i["frame_number"] for i in infos)  # paired framesets only


def test_depth_aligned_to_colour_in_metres(recording, played):
    expected = recording.scene.expected_color_z_m(recording.color_intrinsics)  # (H, W) m
    for f in played["frames"]:
        d = f.depth
        assert d.dtype == np.float32 and d.shape == (480, 640)
        valid = d > 0
        assert valid.mean() > 0.95  # the plane covers the colour FOV except the hole
        err = np.abs(d[valid] - expected[valid])
        # 1 mm depth units + the align block's per-depth-pixel boxes on a tilted plane
        assert float(np.median(err)) < 1.5e-3 and float(err.max()) < 5e-3, (np.median(err), err.max())
    # the depth hole (no data in the depth image) stays 0 in the aligned image, where expected:
    # project the hole's centre depth pixel into colour
    di, ci = recording.depth_intrinsics, recording.color_intrinsics
    u0, v0, u1, v1 = recording.scene.hole_px
    uc, vc = (u0 + u1) / 2, (v0 + v1) / 2
    z = recording.scene.plane_z_m(di, recording.scene.normal(), recording.scene.plane_distance_m)[int(vc), int(uc)]
    p = np.array([(uc - di.cx) / di.fx * z, (vc - di.cy) / di.fy * z, z])
    q = recording.depth_to_color_rotation @ p + recording.depth_to_color_translation_m
    u, v = ci.fx * q[0] / q[2] + ci.cx, ci.fy * q[1] / q[2] + ci.cy
    assert played["frames"][0].depth[int(round(v)), int(round(u))] == 0.0


def test_intrinsics_and_extrinsics_round_trip(recording, played):
    cam = played["cam"]
    ci = recording.color_intrinsics
    got = cam.intrinsics
    assert (got.width, got.height) == (ci.width, ci.height)
    for k in ("fx", "fy", "cx", "cy"):
        assert getattr(got, k) == pytest.approx(getattr(ci, k), rel=1e-6)
    assert got.distortion == (0.0,) * 5
    assert played["frames"][0].intrinsics == got
    assert cam.rs_distortion_model == "inverse_brown_conrady" and cam.distortion_model == "plumb_bob"
    s = played["settings"]
    assert s["depth_intrinsics"]["fx"] == pytest.approx(recording.depth_intrinsics.fx, rel=1e-6)
    assert s["depth_intrinsics"]["model"] == "brown_conrady"
    np.testing.assert_allclose(np.reshape(s["depth_to_color_extrinsics"]["rotation_row_major"], (3, 3)),
                               recording.depth_to_color_rotation, atol=1e-6)
    np.testing.assert_allclose(s["depth_to_color_extrinsics"]["translation_m"],
                               recording.depth_to_color_translation_m, atol=1e-7)


def test_distortion_coefficients_round_trip(tmp_path):
    coeffs = (0.12, -0.25, 0.001, -0.002, 0.08)
    rec = write_synthetic_recording(tmp_path / "dist.db3", n_frames=2, enable_depth=False, color_distortion=coeffs)
    cam = RealSenseCamera(RealSenseConfig(playback_path=str(rec.path), enable_depth=False))
    cam.connect()
    try:
        f = cam.read()
        assert f.depth is None
        np.testing.assert_allclose(cam.intrinsics.distortion, coeffs, rtol=1e-6)
        np.testing.assert_array_equal(f.rgb, synthetic_rgb(0, 480, 640))
        assert cam.settings()["depth_scale_m"] is None
    finally:
        cam.disconnect()


def test_timestamps_on_host_monotonic_clock(recording, played):
    frames, infos = played["frames"], played["infos"]
    stamps = np.array([f.stamp_s for f in frames])
    assert np.all(np.diff(stamps) > 0)
    # playback keeps the recorded spacing exactly (device ms -> s), incl. the dropped-frame gap
    np.testing.assert_allclose(np.diff(stamps), np.diff(recording.timestamps_ms) * 1e-3, atol=1e-6)
    # the first frame is anchored at the monotonic time it was read
    assert played["t_start"] <= stamps[0] <= played["read_times"][0] + 1e-6
    assert all(i["timestamp_domain"] == "global_time" for i in infos)
    assert [i["timestamp_ms"] for i in infos] == pytest.approx(list(recording.timestamps_ms), abs=1e-3)
    assert infos[3]["metadata"]["frame_counter"] == 3
    assert played["settings"]["clock_mapping"]["mode"] == "playback"


def test_clock_mapper_live_global_time_follows_wall_clock_steps():
    t = {"mono": 100.0, "wall": 1_700_000_000.0}
    m = DeviceClockMapper("live", monotonic=lambda: t["mono"], wall=lambda: t["wall"], refresh_s=1.0)
    offset = t["wall"] - t["mono"]
    assert m.wall_minus_mono_s == pytest.approx(offset)
    # a frame captured 40 ms before "now" in global time (host wall-clock ms)
    capture_wall_ms = (t["wall"] - 0.040) * 1e3
    assert m.to_monotonic(capture_wall_ms, "global_time", t["mono"]) == pytest.approx(t["mono"] - 0.040, abs=1e-6)
    # NTP steps the wall clock by +0.5 s; within refresh_s the old offset is kept, after it the new one
    t["mono"] += 0.5
    t["wall"] += 0.5 + 0.5
    stale = m.to_monotonic(t["wall"] * 1e3, "system_time", t["mono"])  # < refresh_s since the sample
    assert stale == pytest.approx(t["mono"] + 0.5)  # still the old offset: off by the step
    t["mono"] += 0.6
    t["wall"] += 0.6
    got = m.to_monotonic((t["wall"] - 0.010) * 1e3, "global_time", t["mono"])
    assert got == pytest.approx(t["mono"] - 0.010, abs=1e-6)
    assert m.describe()["domain"] == "global_time"


def test_clock_mapper_hardware_clock_min_latency_and_wrap():
    m = DeviceClockMapper("live", monotonic=lambda: 0.0, wall=lambda: 0.0)
    # device clock 5000 ms; arrivals with 30, 12, 50 ms latency: the offset keeps the smallest
    s1 = m.to_monotonic(5000.0, "hardware_clock", 50.030)
    assert s1 == pytest.approx(50.030)
    s2 = m.to_monotonic(5033.0, "hardware_clock", 50.045)  # latency 12 ms -> new minimum
    assert s2 == pytest.approx(50.045)
    s3 = m.to_monotonic(5066.0, "hardware_clock", 50.116)  # latency 50 ms: stamp uses the 12 ms offset
    assert s3 == pytest.approx(50.045 + 0.033)
    # 32-bit wrap: the device clock jumps back -> the estimate restarts
    s4 = m.to_monotonic(10.0, "hardware_clock", 60.020)
    assert s4 == pytest.approx(60.020)
    with pytest.raises(ValueError, match="mode"):
        DeviceClockMapper("bogus")
    with pytest.raises(CameraError, match="domain"):
        m.to_monotonic(1.0, "martian_time", 1.0)


def test_settings_provenance(recording, played):
    s = played["settings"]
    json.dumps(s)  # serialisable for the per-episode provenance log
    assert s["source"] == "playback" and s["playback_path"] == str(recording.path)
    assert s["device"]["serial_number"] == recording.serial
    assert s["device"]["name"] == recording.name
    assert s["device"]["firmware_version"] == recording.firmware_version
    assert s["device"]["usb_type_descriptor"] == "3.2"
    assert s["streams"]["color"] == {"width": 640, "height": 480, "fps": 30, "format": "rgb8"}
    assert s["streams"]["depth"]["format"] == "z16"
    assert s["depth_scale_m"] == pytest.approx(0.001)
    fixed = s["fixed_settings"]
    assert fixed["auto_exposure"] is False and fixed["auto_white_balance"] is False
    assert fixed["exposure_us"] == 15600.0 and fixed["exposure_device_units"] == 156.0 and fixed["exposure_unit_us"] == 100.0
    assert fixed["white_balance_k"] == 4600.0 and fixed["gain"] == 64.0 and fixed["power_line_frequency"] == 1.0
    assert s["settings_problems"] == []
    assert s["options"]["color"]["Exposure"] == 156.0
    assert s["requested"]["exposure_us"] == 15600.0
    assert s["frames_read"] == N_FRAMES - len(SKIPPED) and s["dropped_frames"] == 2
    assert s["librealsense_version"].startswith("2.")


def test_recording_with_other_settings_warns_and_reports(tmp_path, caplog):
    rec = write_synthetic_recording(tmp_path / "bright.db3", n_frames=2, exposure_us=8000, white_balance_k=3200)
    cam = RealSenseCamera(RealSenseConfig(playback_path=str(rec.path)))
    with caplog.at_level(logging.WARNING, logger="dynaflip_ros.cameras.realsense"):
        cam.connect()
    try:
        problems = cam.settings()["settings_problems"]
        assert any("exposure reads back 80, expected 156" in p for p in problems), problems
        assert any("white_balance reads back 3200" in p for p in problems), problems
        assert "fixed settings" in caplog.text
        assert cam.settings()["fixed_settings"]["exposure_us"] == 8000.0
    finally:
        cam.disconnect()


def test_fixed_settings_write_path_on_software_sensors():
    """The live-device write + read-back path, on librealsense software sensors."""
    from dynaflip_ros.cameras.realsense_playback import _add_option

    dev = rs.software_device()
    s = dev.add_sensor("RGB Camera")
    _add_option(s, rs.option.enable_auto_exposure, 0, 1, 1, 1, 1)
    _add_option(s, rs.option.enable_auto_white_balance, 0, 1, 1, 1, 1)
    _add_option(s, rs.option.exposure, 1, 10000, 1, 156, 156)
    _add_option(s, rs.option.white_balance, 2800, 6500, 10, 4600, 4600)
    _add_option(s, rs.option.gain, 0, 128, 1, 64, 64)
    _add_option(s, rs.option.power_line_frequency, 0, 3, 1, 3, 3)
    cfg = RealSenseConfig(exposure_us=8300, white_balance_k=3500, gain=20, power_line_frequency="60hz")
    readback, problems = apply_fixed_settings(s, fixed_setting_targets(cfg)["color"], True, "colour")
    assert problems == []
    assert readback == {"enable_auto_exposure": 0.0, "enable_auto_white_balance": 0.0, "exposure": 83.0,
                        "white_balance": 3500.0, "gain": 20.0, "power_line_frequency": 2.0}
    assert s.get_option(rs.option.exposure) == 83.0  # 100 us units on the device
    # refusals: value outside the device range, option missing, read-only option
    s2 = dev.add_sensor("Limited RGB")
    _add_option(s2, rs.option.gain, 0, 16, 1, 8, 8)
    s2.add_read_only_option(rs.option.exposure, 156)
    _, problems = apply_fixed_settings(s2, [("gain", 64.0), ("exposure", 83.0), ("white_balance", 3500.0)],
                                       True, "colour")
    text = " | ".join(problems)
    assert "gain = 64 is outside the device range [0, 16]" in text
    assert "exposure is read-only" in text and "exposure reads back 156, expected 83" in text
    assert "does not support option white_balance" in text


def _software_d4xx(usb="3.2", d405=False, color_fps=(30,), exposure_range=(1, 10000, 1, 156)):
    """A librealsense software device shaped like a D435 (RGB sensor + stereo module) or a D405
    (colour streamed by the stereo module, exposure in us)."""
    from dynaflip_ros.cameras.realsense_playback import _add_option, _rs_intrinsics, d435_color_intrinsics

    dev = rs.software_device()
    dev.register_info(rs.camera_info.serial_number, "000000000405" if d405 else "000000000435")
    dev.register_info(rs.camera_info.usb_type_descriptor, usb)
    stereo = dev.add_sensor("Stereo Module")
    rgb = stereo if d405 else dev.add_sensor("RGB Camera")
    uid = 0
    for sensor, stream, fmt, bpp, fps_list in ((stereo, rs.stream.depth, rs.format.z16, 2, (15, 30)),
                                                (rgb, rs.stream.color, rs.format.rgb8, 3, color_fps)):
        for fps in fps_list:
            vs = rs.video_stream()
            vs.type, vs.index, vs.uid, vs.width, vs.height, vs.fps, vs.bpp, vs.fmt = stream, 0, uid, 640, 480, fps, bpp, fmt
            vs.intrinsics = _rs_intrinsics(d435_color_intrinsics(640, 480), rs.distortion.brown_conrady)
            sensor.add_video_stream(vs)
            uid += 1
    _add_option(stereo, rs.option.enable_auto_exposure, 0, 1, 1, 1, 1)
    _add_option(stereo, rs.option.exposure, 1, 200000, 1, 8500, 8500)
    _add_option(rgb, rs.option.enable_auto_white_balance, 0, 1, 1, 1, 1)
    _add_option(rgb, rs.option.white_balance, 2800, 6500, 10, 4600, 4600)
    _add_option(rgb, rs.option.gain, 0, 128, 1, 64, 64)
    _add_option(rgb, rs.option.power_line_frequency, 0, 3, 1, 3, 3)
    if not d405:
        _add_option(rgb, rs.option.enable_auto_exposure, 0, 1, 1, 1, 1)
        _add_option(rgb, rs.option.exposure, *exposure_range, exposure_range[3])
    return dev, rgb, stereo


def test_live_configure_path_on_software_devices():
    """configure_fixed_settings (what connect() runs on a live device) and check_live_modes on
    librealsense software devices shaped like a D435 and a D405."""
    from dynaflip_ros.cameras.realsense import check_live_modes, configure_fixed_settings

    cfg = RealSenseConfig(exposure_us=8300, white_balance_k=3500, gain=20, power_line_frequency="60hz",
                          depth_exposure_us=5000)
    dev, rgb, stereo = _software_d4xx()
    check_live_modes(rs, dev, cfg)
    readback, problems, unit_us = configure_fixed_settings(rs, dev, cfg, write=True)
    assert problems == [] and unit_us == 100.0
    assert rgb.get_option(rs.option.exposure) == 83.0  # 100 us units on the RGB sensor
    assert rgb.get_option(rs.option.enable_auto_exposure) == 0.0
    assert rgb.get_option(rs.option.enable_auto_white_balance) == 0.0
    assert readback["color"]["white_balance"] == 3500.0 and readback["color"]["power_line_frequency"] == 2.0
    assert stereo.get_option(rs.option.exposure) == 5000.0 and stereo.get_option(rs.option.enable_auto_exposure) == 0.0
    # D405: colour from the stereo module, whose exposure is in us
    dev5, rgb5, stereo5 = _software_d4xx(d405=True)
    readback, problems, unit_us = configure_fixed_settings(rs, dev5, cfg, write=True)
    assert unit_us == 1.0 and stereo5.get_option(rs.option.exposure) == 8300.0
    assert problems == ["colour and depth share one imager (D405): depth_exposure_us 5000 cannot differ from "
                        "exposure_us 8300"]
    # a device whose RGB exposure range is narrower than the request refuses it: strict -> CameraError
    dev_n, _, _ = _software_d4xx(exposure_range=(1, 50, 1, 20))
    _, problems, _ = configure_fixed_settings(rs, dev_n, cfg, write=True)
    assert problems == ["colour option exposure = 83 is outside the device range [1, 50]",
                        "colour option exposure reads back 20, expected 83"]
    cam = RealSenseCamera(cfg)
    with pytest.raises(CameraError, match="fixed settings not applied.*outside the device range"):
        cam._report_problems(problems, live=True)
    # USB 2: the 30 fps colour mode is missing -> the error names USB 2 and lists what is offered
    dev2, _, _ = _software_d4xx(usb="2.1", color_fps=(6, 15))
    with pytest.raises(CameraError, match=r"color mode 640x480 @ 30 fps RGB8 is not offered.*USB 2.1.*"
                                          r"offered: 640x480@6, 640x480@15"):
        check_live_modes(rs, dev2, cfg)


def test_realtime_playback_returns_newest_frames(tmp_path):
    rec = write_synthetic_recording(tmp_path / "rt.db3", n_frames=15, pace_s=1 / 30)
    cam = RealSenseCamera(RealSenseConfig(playback_path=str(rec.path), playback_realtime=True, frame_timeout_s=1.0))
    cam.connect()
    seqs = []
    try:
        while True:
            try:
                f = cam.read()
            except CameraError:
                break
            seqs.append(f.sequence)
            np.testing.assert_array_equal(f.rgb, synthetic_rgb(f.sequence, 480, 640))
            time.sleep(0.1)  # a 10 Hz reader of a 30 fps stream: the slow reader IS what is tested
    finally:
        cam.disconnect()
    assert len(seqs) >= 3 and all(b > a for a, b in zip(seqs, seqs[1:]))
    assert max(np.diff(seqs)) >= 2  # frames were skipped by the reader ...
    assert cam.dropped_frames == 0  # ... which is not a device drop


def test_playback_errors(tmp_path, recording):
    with pytest.raises(CameraError, match="does not exist"):
        RealSenseCamera(RealSenseConfig(playback_path=str(tmp_path / "missing.db3"))).connect()
    cam = RealSenseCamera(RealSenseConfig(playback_path=str(recording.path), width=1280, height=720))
    with pytest.raises(CameraError, match=r"cannot play colour 1280x720.*color 640x480 RGB8 @ 30"):
        cam.connect()
    with pytest.raises(CameraError, match="not connected"):
        cam.read()
    with pytest.raises(CameraError, match="not connected"):
        cam.settings()


@pytest.mark.timeout(120)  # hang guard only: one device query, no retry loop
def test_live_unknown_serial_is_a_clear_error():
    """Live mode with a serial that does not exist: no device here ('no RealSense device
    connected'); with a D4xx plugged in, 'not found' with the connected serials."""
    with pytest.raises(CameraError, match=r"no RealSense device connected|serial '000000000001' not found"):
        RealSenseCamera(RealSenseConfig(serial="000000000001")).connect()


def test_config_validation():
    c = RealSenseConfig()
    assert c.exposure_units == 156 and c.power_line_frequency_value == 1 and c.depth_mode() == (640, 480)
    assert RealSenseConfig(width=1920, height=1080, fps=30).depth_mode() == (848, 480)
    assert RealSenseConfig(width=320, height=240, fps=60, exposure_us=10000).depth_mode() == (848, 480)
    bad = [
        (dict(width=641), "not a D4xx colour mode"),
        (dict(width=1280, height=720, fps=60), "not a D4xx colour mode"),
        (dict(exposure_us=15650), "multiple of 100"),
        (dict(exposure_us=0), "multiple of 100"),
        (dict(exposure_us=40000), "longer than the frame period"),
        (dict(white_balance_k=2000), "white_balance_k"),
        (dict(power_line_frequency="55hz"), "power_line_frequency"),
        (dict(serial="12 34"), "serial"),
        (dict(gain=True), "gain"),
        (dict(enable_depth=True, align_depth_to_color=False), "align_depth_to_color"),
        (dict(frame_timeout_s=0), "frame_timeout_s"),
        (dict(depth_exposure_us=-1), "depth_exposure_us"),
        (dict(exposure_us=math.nan), "exposure_us"),
        (dict(fps=6, width=320, height=180, exposure_us=10000, enable_depth=True, playback_path=""), None),
    ]
    for kwargs, match in bad:
        if match is None:
            RealSenseConfig(**kwargs)  # valid
            continue
        with pytest.raises(ValueError, match=match):
            RealSenseConfig(**kwargs)
    # a recording may hold any mode (the file decides; it must match width/height/fps)
    RealSenseConfig(width=100, height=80, fps=25, playback_path="x.db3", exposure_us=10000)
    # nested in the camera node config (ROS params camera.realsense.*) and loaded from dicts
    node = from_dict(CameraNodeConfig, {"backend": "realsense", "realsense": {"serial": "123456789012", "fps": 15,
                                                                            "exposure_us": 20000}})
    assert node.realsense.serial == "123456789012" and node.realsense.exposure_units == 200
    with pytest.raises(ConfigError, match="exposur"):
        from_dict(CameraNodeConfig, {"realsense": {"exposur_us": 100}})
    with pytest.raises(ConfigError, match="white_balance_k"):
        from_dict(CameraNodeConfig, {"realsense": {"white_balance_k": 9000}})


def test_recording_helper_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match=".db3"):
        write_synthetic_recording(tmp_path / "x.bag")
    with pytest.raises(ValueError, match="timestamp_domain"):
        write_synthetic_recording(tmp_path / "x.db3", timestamp_domain="tai")
    with pytest.raises(ValueError, match="multiple of 100"):
        write_synthetic_recording(tmp_path / "x.db3", exposure_us=150)
