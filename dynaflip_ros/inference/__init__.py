"""dynaflip_ros.inference."""
