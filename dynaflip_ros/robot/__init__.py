"""dynaflip_ros.robot."""
