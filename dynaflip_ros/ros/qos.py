"""Named QoS profiles and topic names of the Pick-into-Sink graph (docs/architecture.md "Messages").

Measured on the project machines (docs/environment.md, gotcha 3): across processes BEST_EFFORT loses
most large images, so images go RELIABLE with keep-last 1 (a slow subscriber gets the newest
frame, never a backlog). Commands are RELIABLE keep-last 1 (only the newest action chunk
matters). Provenance topics are latched (TRANSIENT_LOCAL) so a late subscriber (a recorder, the
policy node) still receives the encoder manifest. Source: ROS 2 docs, "Quality of Service
settings" (docs.ros.org/en/jazzy/Concepts/Intermediate/About-Quality-of-Service-Settings.html).
"""
from __future__ import annotations

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

# ---- topics (remap with --ros-args -r old:=new)
IMAGE_TOPIC = "/camera/color/image_raw"            # sensor_msgs/Image rgb8
CAMERA_INFO_TOPIC = "/camera/color/camera_info"    # sensor_msgs/CameraInfo
DEPTH_TOPIC = "/camera/aligned_depth_to_color/image_raw"  # sensor_msgs/Image 32FC1 m (REP 118)
DEPTH_INFO_TOPIC = "/camera/aligned_depth_to_color/camera_info"  # = colour CameraInfo
EMBEDDING_TOPIC = "/dynaflip/embedding"            # sensor_msgs/Image 32FC1, 1 x D, image stamp
ENCODER_INFO_TOPIC = "/dynaflip/encoder_info"      # std_msgs/String JSON (latched)
POLICY_INFO_TOPIC = "/dynaflip/policy_info"        # std_msgs/String JSON (latched)
INSTRUCTION_TOPIC = "/dynaflip/instruction"        # std_msgs/String: the task sentence (latched)
ACTION_CHUNK_TOPIC = "/dynaflip/action_chunk"      # trajectory_msgs/JointTrajectory
LATENCY_TOPIC = "/dynaflip/latency"                # std_msgs/String JSON {"stage", "ms", ...}
JOINT_STATES_TOPIC = "/joint_states"               # sensor_msgs/JointState (UR joints + gripper)
DRIVER_STATUS_TOPIC = "/ur3_driver/status"         # std_msgs/String JSON (safety + servo stats)
EPISODE_COMMAND_TOPIC = "/episode/command"         # std_msgs/String: episodes.protocol.EpisodeCommand JSON
EPISODE_STATUS_TOPIC = "/episode/status"           # std_msgs/String: episodes.protocol.EpisodeStatus JSON

# Images between processes: reliable, newest only.
IMAGE_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=1,
    reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE,
)
# Action chunks: reliable, newest only (an older chunk is superseded by a newer one).
COMMAND_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=1,
    reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE,
)
# Robot state at the servo rate: reliable, a short queue (what /joint_states uses by convention).
STATE_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=10,
    reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE,
)
# Episode commands / status and latency records: reliable with a queue, nothing may be dropped
# when two commands follow each other closely (stop, reset).
EVENT_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=50,
    reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE,
)
# Latched provenance / readiness (model manifests): the last message reaches late joiners.
LATCHED_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=1,
    reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL,
)
