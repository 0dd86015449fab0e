"""Episodes, ROS-free: the episode protocol (`protocol`), its state machine (`gate`) and the
evaluation record (`record`). Imports no other project package."""
