"""Container healthcheck for the worker: its Prometheus endpoint answers.

``python /app/healthcheck.py`` exits 0 when ``http://127.0.0.1:$GENIE_METRICS_PORT/metrics``
answers 200 within the timeout, 1 otherwise (Docker's HEALTHCHECK contract). Standard
library only, so the image needs no curl. The worker starts serving metrics when its
Temporal runtime is created and stops when the process ends.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping

TIMEOUT_SECONDS = 3.0


def check(environ: Mapping[str, str]) -> tuple[bool, str]:
    port = environ.get("GENIE_METRICS_PORT", "").strip()
    if not port.isdigit() or int(port) == 0:
        return False, "GENIE_METRICS_PORT is not set: metrics are off, nothing to check"
    url = f"http://127.0.0.1:{int(port)}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as response:
            status = int(response.status)
    except (urllib.error.URLError, OSError) as e:
        return False, f"{url}: {e}"
    if status != 200:
        return False, f"{url}: HTTP {status}"
    return True, f"{url}: ok"


def main() -> int:
    ok, message = check(os.environ)
    print(message)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
