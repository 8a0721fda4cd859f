"""Named points where a test can stop a real process mid-operation (fault injection).

Off unless EDGEMNV2_FAILPOINT names the point: then the process touches the file named by
EDGEMNV2_FAILPOINT_MARKER and waits there (EDGEMNV2_FAILPOINT_SECONDS, default 120), so a test
sends its signal at that exact point instead of after a guessed sleep.
"""

import os
import time
from pathlib import Path

ARTIFACT_WRITTEN = "artifact-written"  # temporary artifact and manifest on disk, nothing committed
ARTIFACT_COMMITTED = "artifact-committed"  # one artifact and its manifest renamed into place


def reached(name: str) -> None:
    if os.environ.get("EDGEMNV2_FAILPOINT") != name:
        return
    Path(os.environ["EDGEMNV2_FAILPOINT_MARKER"]).touch()
    time.sleep(float(os.environ.get("EDGEMNV2_FAILPOINT_SECONDS", "120")))
