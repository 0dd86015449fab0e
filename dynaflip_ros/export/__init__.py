"""dynaflip_ros.export."""
