"""Write the per-host PLAY RECAP as JSON for ``invoke lab.provision`` (npulab.lab.provision).

Enabled by ansible.cfg (``callbacks_enabled``); writes only when NPULAB_PROVISION_SUMMARY names a
file. Counts only, never task results (which may carry secrets).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: npulab_summary
type: aggregate
short_description: per-host recap as JSON for npulab
description:
  - "Writes the recap counts (ok, changed, unreachable, failures, skipped, rescued, ignored) of
    every host as JSON to the file named by NPULAB_PROVISION_SUMMARY at the end of the run."
requirements:
  - enabled in ansible.cfg callbacks_enabled
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "npulab_summary"
    CALLBACK_NEEDS_ENABLED = True

    def v2_playbook_on_stats(self, stats):  # type: ignore[no-untyped-def]
        target = os.environ.get("NPULAB_PROVISION_SUMMARY")
        if not target:
            return
        hosts = {host: stats.summarize(host) for host in sorted(stats.processed)}
        path = Path(target).resolve()
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".summary-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump({"hosts": hosts}, fh, indent=2, sort_keys=True)
        Path(tmp).replace(path)
