"""dynaflip_ros.encoder."""
