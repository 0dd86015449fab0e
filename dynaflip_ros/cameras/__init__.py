"""dynaflip_ros.cameras."""
