"""dynaflip_ros.sim."""
