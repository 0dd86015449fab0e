"""Entry point of the loopback controller process (started by LoopbackURController.start())."""
import json
import sys

from dynaflip_ros.sim.ur_loopback.process import child_main

if __name__ == "__main__":
    sys.exit(child_main(int(sys.argv[1]), json.loads(sys.argv[2])))
