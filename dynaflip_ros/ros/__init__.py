"""dynaflip_ros.ros."""
