"""dynaflip_ros.task: what the Pick-into-Sink task is, independent of any simulator or robot:
the object catalogue (`task.catalogue`) and the language of instructions and clips
(`task.instructions`). Imports only numpy."""
