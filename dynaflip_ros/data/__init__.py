"""dynaflip_ros.data."""
