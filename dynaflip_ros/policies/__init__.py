"""dynaflip_ros.policies."""
