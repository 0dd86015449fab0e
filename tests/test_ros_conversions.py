"""ROS message <-> numpy / core-type conversions (dynaflip_ros/ros/conversions.py)."""
import numpy as np
import pytest

pytest.importorskip("rclpy")

from builtin_interfaces.msg import Time  # noqa: E402
from sensor_msgs.msg import Image, JointState  # noqa: E402
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint  # noqa: E402

from dynaflip_ros.cameras.base import CameraIntrinsics  # noqa: E402
from dynaflip_ros.policies.base import ActionChunk  # noqa: E402
from dynaflip_ros.robot.arm import UR_JOINT_NAMES, ArmState  # noqa: E402
from dynaflip_ros.ros import conversions as cv  # noqa: E402


def test_stamp_round_trip_and_errors():
    for t in (0.0, 1.5, 1_700_000_000.123456789, 12.999999999):
        st = cv.s_to_stamp(t)
        assert 0 <= st.nanosec < 1_000_000_000
        assert cv.stamp_to_s(st) == pytest.approx(t, abs=1e-9 * max(1.0, t) * 2)
    assert cv.stamp_to_s(Time(sec=3, nanosec=250_000_000)) == 3.25
    with pytest.raises(ValueError):
        cv.s_to_stamp(-0.1)
    with pytest.raises(ValueError):
        cv.s_to_stamp(float("nan"))
    assert cv.duration_to_s(cv.s_to_duration(-0.25)) == pytest.approx(-0.25)
    assert cv.duration_to_s(cv.s_to_duration(0.3)) == pytest.approx(0.3)


def test_rgb_image_round_trip_and_bgr_and_padding():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    msg = cv.rgb_to_image(rgb, 12.5, "cam_optical")
    assert (msg.encoding, msg.height, msg.width, msg.step) == ("rgb8", 5, 7, 21)
    assert msg.header.frame_id == "cam_optical" and cv.stamp_to_s(msg.header.stamp) == 12.5
    np.testing.assert_array_equal(cv.image_to_rgb(msg), rgb)
    # bgr8 with row padding (step > 3 * width), as some drivers publish
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    padded = np.zeros((5, 24), np.uint8)
    padded[:, :21] = bgr.reshape(5, 21)
    m2 = Image(height=5, width=7, encoding="bgr8", step=24)
    m2.data = padded.tobytes()
    np.testing.assert_array_equal(cv.image_to_rgb(m2), rgb)


def test_rgb_image_errors():
    with pytest.raises(ValueError, match="uint8"):
        cv.rgb_to_image(np.zeros((4, 4, 3), np.float32), 0.0, "f")
    with pytest.raises(ValueError, match="uint8"):
        cv.rgb_to_image(np.zeros((4, 4), np.uint8), 0.0, "f")
    m = cv.rgb_to_image(np.zeros((4, 4, 3), np.uint8), 0.0, "f")
    m.encoding = "mono8"
    with pytest.raises(ValueError, match="encoding"):
        cv.image_to_rgb(m)
    m = cv.rgb_to_image(np.zeros((4, 4, 3), np.uint8), 0.0, "f")
    m.height = 5
    with pytest.raises(ValueError, match="size"):
        cv.image_to_rgb(m)


def test_embedding_round_trip_keeps_header():
    e = np.random.default_rng(1).standard_normal(384).astype(np.float32)
    src = cv.rgb_to_image(np.zeros((2, 2, 3), np.uint8), 101.25, "cam")
    msg = cv.embedding_to_image(e, src.header)
    assert (msg.encoding, msg.height, msg.width, msg.step) == ("32FC1", 1, 384, 1536)
    assert cv.stamp_to_s(msg.header.stamp) == 101.25 and msg.header.frame_id == "cam"
    out = cv.image_to_embedding(msg)
    assert out.dtype == np.float32 and out.shape == (384,)
    np.testing.assert_array_equal(out, e)
    # big-endian payloads are decoded too
    big = Image(height=1, width=3, encoding="32FC1", is_bigendian=1, step=12)
    big.data = np.array([1.0, -2.0, 3.5], dtype=">f4").tobytes()
    np.testing.assert_array_equal(cv.image_to_embedding(big), [1.0, -2.0, 3.5])


def test_embedding_errors():
    h = cv.make_header(0.0)
    with pytest.raises(ValueError, match="NaN"):
        cv.embedding_to_image(np.array([1.0, np.nan], np.float32), h)
    with pytest.raises(ValueError, match=r"\(D,\)"):
        cv.embedding_to_image(np.zeros((2, 3), np.float32), h)
    m = cv.embedding_to_image(np.ones(4, np.float32), h)
    m.height = 2
    with pytest.raises(ValueError, match="height 1"):
        cv.image_to_embedding(m)
    m = cv.rgb_to_image(np.zeros((1, 4, 3), np.uint8), 0.0, "f")
    with pytest.raises(ValueError, match="32FC1"):
        cv.image_to_embedding(m)


def test_camera_info_round_trip():
    intr = CameraIntrinsics(width=640, height=480, fx=600.5, fy=601.0, cx=320.2, cy=239.8,
                            distortion=(0.1, -0.2, 0.001, 0.002, 0.05))
    msg = cv.camera_info_from_intrinsics(intr, 3.0, "cam_optical")
    assert msg.distortion_model == "plumb_bob" and (msg.width, msg.height) == (640, 480)
    np.testing.assert_allclose(np.reshape(msg.k, (3, 3)), intr.matrix())
    np.testing.assert_allclose(np.reshape(msg.p, (3, 4))[:, :3], intr.matrix())
    assert cv.intrinsics_from_camera_info(msg) == intr


def _arm_state(q, g=0.3, stamp=5.0):
    return ArmState(q=np.asarray(q, float), dq=np.arange(6) * 0.1, tcp_pose=np.array([0, 0, 0, 1, 0, 0, 0.0]),
                    gripper=g, stamp_s=stamp)


def test_joint_state_round_trip_and_reordering():
    q = np.array([0.1, -1.2, 1.3, -1.5, -1.6, 0.7])
    msg = cv.joint_state_from_arm_state(_arm_state(q), 42.0)
    assert list(msg.name) == list(UR_JOINT_NAMES) + [cv.GRIPPER_JOINT_NAME]
    x = cv.state_vector_from_joint_state(msg)
    assert x.dtype == np.float32 and x.shape == (7,)
    np.testing.assert_allclose(x, np.r_[q, 0.3], atol=1e-6)
    # shuffled joint order (as a real driver may publish) and extra joints
    order = [6, 3, 0, 5, 1, 4, 2]
    shuffled = JointState(name=[msg.name[i] for i in order] + ["finger_left"],
                          position=[msg.position[i] for i in order] + [9.0],
                          velocity=[msg.velocity[i] for i in order] + [0.0])
    np.testing.assert_allclose(cv.state_vector_from_joint_state(shuffled), np.r_[q, 0.3], atol=1e-6)
    st = cv.arm_state_from_joint_state(shuffled)
    np.testing.assert_allclose(st.q, q, atol=1e-6)
    np.testing.assert_allclose(st.dq, np.arange(6) * 0.1, atol=1e-9)
    assert st.gripper == pytest.approx(0.3) and st.tcp_pose.shape == (7,)
    # forward kinematics of q = 0 (kinematics.py check value): flange at (-0.4569, -0.1943, 0.0666)
    zero = cv.arm_state_from_joint_state(cv.joint_state_from_arm_state(_arm_state(np.zeros(6)), 1.0))
    np.testing.assert_allclose(zero.tcp_pose[:3], [-0.4569, -0.1943, 0.0666], atol=1e-3)


def test_joint_state_missing_joint():
    msg = JointState(name=list(UR_JOINT_NAMES), position=[0.0] * 6)
    with pytest.raises(ValueError, match="gripper"):
        cv.state_vector_from_joint_state(msg)
    msg = JointState(name=list(cv.ACTION_JOINT_NAMES), position=[0.0] * 6)
    with pytest.raises(ValueError, match="positions"):
        cv.state_vector_from_joint_state(msg)


def test_action_chunk_trajectory_round_trip():
    rng = np.random.default_rng(2)
    actions = rng.uniform(-1, 1, size=(8, 7)).astype(np.float32)
    chunk = ActionChunk(actions=actions, t0_s=1000.2, dt_s=0.1)
    msg = cv.action_chunk_to_trajectory(chunk)
    assert list(msg.joint_names) == list(cv.ACTION_JOINT_NAMES) and len(msg.points) == 8
    assert cv.stamp_to_s(msg.header.stamp) == pytest.approx(1000.2)
    assert [cv.duration_to_s(p.time_from_start) for p in msg.points] == pytest.approx(np.arange(8) * 0.1)
    back = cv.trajectory_to_action_chunk(msg)
    np.testing.assert_allclose(back.actions, actions, atol=1e-6)
    assert back.t0_s == pytest.approx(1000.2) and back.dt_s == pytest.approx(0.1)
    times, targets = cv.trajectory_to_times_targets(msg)
    np.testing.assert_allclose(times, chunk.times_s(), atol=1e-6)
    # header stamp earlier than the first action: the offsets move, absolute times don't
    msg2 = cv.action_chunk_to_trajectory(chunk, stamp_s=1000.0)
    assert cv.duration_to_s(msg2.points[0].time_from_start) == pytest.approx(0.2)
    np.testing.assert_allclose(cv.trajectory_to_times_targets(msg2)[0], chunk.times_s(), atol=1e-6)


def test_trajectory_reorders_joints_and_rejects_bad_input():
    names = list(reversed(cv.ACTION_JOINT_NAMES))
    msg = JointTrajectory(joint_names=names)
    msg.header.stamp = cv.s_to_stamp(10.0)
    for i in range(3):
        msg.points.append(JointTrajectoryPoint(positions=[float(i * 10 + j) for j in range(7)],
                                               time_from_start=cv.s_to_duration(0.1 * i)))
    times, targets = cv.trajectory_to_times_targets(msg)
    np.testing.assert_allclose(targets[1], [16, 15, 14, 13, 12, 11, 10])
    np.testing.assert_allclose(times, [10.0, 10.1, 10.2])
    msg.points[2].time_from_start = cv.s_to_duration(0.05)
    with pytest.raises(ValueError, match="increase"):
        cv.trajectory_to_times_targets(msg)
    msg.points[2].time_from_start = cv.s_to_duration(0.35)
    with pytest.raises(ValueError, match="uniformly"):
        cv.trajectory_to_action_chunk(msg)
    msg.points[0].positions[0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        cv.trajectory_to_times_targets(msg)
    with pytest.raises(ValueError, match="no points"):
        cv.trajectory_to_times_targets(JointTrajectory(joint_names=names))
    with pytest.raises(ValueError, match="lacks"):
        cv.trajectory_to_times_targets(JointTrajectory(joint_names=names[:6], points=[JointTrajectoryPoint()]))
    with pytest.raises(ValueError, match="NaN"):
        cv.action_chunk_to_trajectory(ActionChunk(np.full((2, 7), np.nan), 0.0, 0.1))
    with pytest.raises(ValueError, match=r"\(H, 7\)"):
        cv.action_chunk_to_trajectory(ActionChunk(np.zeros((2, 6)), 0.0, 0.1))
    with pytest.raises(ValueError, match="before the header"):
        cv.action_chunk_to_trajectory(ActionChunk(np.zeros((2, 7)), 5.0, 0.1), stamp_s=6.0)
