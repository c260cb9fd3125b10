"""The error statuses the Go and Java client tests' fake servers send: made by the bridge's own code, so
the fakes send exactly what the bridge sends (the ErrorInfo keys of docs/errors.md, nothing else).

Each file in clients/testdata/errors/ is one `google.rpc.Status` (what `grpc-status-details-bin` carries)
in proto JSON. tests/unit/test_client_fixtures.py fails when a file is not what the bridge builds today;
`python -m tests.client_fixtures` writes them again.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

from google.protobuf.json_format import MessageToDict

from bridge.auth.callers import caller_not_allowed, credentials_required
from bridge.errors import BridgeError
from tests.helpers import HOST, http_error, rich_status

DIRECTORY = Path(__file__).parents[1] / "clients" / "testdata" / "errors"

# name -> the status the bridge sends: for an upstream reply (as the bridge's unit tests build them), or
# one of its own refusals
STATUSES: dict[str, Callable[[], BridgeError]] = {
    # An upstream 429 with its correlation id and Retry-After: ErrorInfo and RetryInfo.
    "upstream_rate_limited": lambda: http_error(
        429,
        {"error": "rate_limit_exceeded", "message": "Rate limit exceeded: 100 requests per 60 s"},
        {"x-correlation-id": "corr-42", "retry-after": "3"},
    ),
    # An upstream 400 that names the parameter it refused: ErrorInfo and BadRequest.
    "upstream_invalid_request": lambda: http_error(
        400,
        {
            "error": {
                "message": "messages[0].content must not be empty",
                "type": "invalid_request_error",
                "param": "messages[0].content",
                "code": "invalid_value",
            }
        },
        {"x-request-id": "req-7"},
    ),
    # A caller with no credentials of its own, where the bridge keeps its key for authenticated callers.
    "caller_credentials_required": lambda: credentials_required(fixed=False),
    # A client certificate from the bridge's CA whose identity its allow-list does not name.
    "caller_not_allowed": lambda: caller_not_allowed("spiffe://cluster.local/ns/team-b/sa/reports"),
}


def rendered(name: str) -> str:
    """The file's content for status `name`."""
    status = MessageToDict(rich_status(STATUSES[name]()))
    return json.dumps(status, indent=2, sort_keys=True) + "\n"


def main() -> int:
    DIRECTORY.mkdir(parents=True, exist_ok=True)
    for name in STATUSES:
        (DIRECTORY / f"{name}.json").write_text(rendered(name), encoding="utf-8")
    print(f"wrote {len(STATUSES)} statuses to {DIRECTORY} (upstream host {HOST})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
