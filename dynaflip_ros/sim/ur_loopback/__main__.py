"""`python -m dynaflip_ros.sim.ur_loopback`: serve a loopback UR controller until Ctrl-C
(see `--help`; the code is in `cli.py`)."""
import sys

from dynaflip_ros.sim.ur_loopback.cli import main

if __name__ == "__main__":
    sys.exit(main())
