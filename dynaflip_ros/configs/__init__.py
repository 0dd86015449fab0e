"""dynaflip_ros.configs."""
