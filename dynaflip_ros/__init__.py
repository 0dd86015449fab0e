"""dynaflip_ros: DynaFLIP encoder training, export and ROS 2 deployment (core is ROS-free)."""
__version__ = "0.1.0"
