"""A worker that fails and leaves a process behind holding its stderr (as Lava's runtime processes
can): ``targets.lava_target.run_worker`` must return its error at once, not at the timeout."""

import subprocess
import sys

if __name__ == "__main__":
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # inherits stdout and stderr
    print("lava-worker-error: ModelError: the worker failed on purpose", file=sys.stderr)
    sys.exit(3)
