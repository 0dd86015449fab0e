"""dynaflip_ros.ros.nodes."""
