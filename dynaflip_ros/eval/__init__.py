"""dynaflip_ros.eval."""
