"""Settings of each subcommand, in groups (server, upstream, auth, logging, ...) with flat public names.

A group is a pydantic model; each of its fields has a flat name, its alias (`upstream_url`), which is both
the flag (`--upstream-url`) and the environment variable (`BRIDGE_UPSTREAM_URL`). A command's settings
model holds its groups and also accepts the flat names (`ServeSettings(listen=..., upstream_url=...)`).
`load` reads them: command-line flag > environment variable > default. The CLI builds its flags and the
README its table from `flat_fields`, so `--help`, the env var names and validation cannot drift apart.

Modules: `base` (groups, flat names, the command base), `upstream`, `serving` and `callers` (serve's
groups: the upstream's; the gRPC server's; who may call), `commands` (each command's settings, checks
across groups, warnings), `flags` (the loader, flags and `--help`, the README's table, one-line
errors). Addresses and URLs are checked by bridge.address. The commands' settings and the loader are
exported here; groups are imported from their modules. The modules import each other, never this package.
"""

from __future__ import annotations

from bridge.settings.base import ENV_PREFIX, CommandSettings, flat_fields, group_title
from bridge.settings.commands import DevSettings, MockGatewaySettings, ServeSettings
from bridge.settings.flags import flag_table, load

__all__ = [
    "ENV_PREFIX",
    "CommandSettings",
    "DevSettings",
    "MockGatewaySettings",
    "ServeSettings",
    "flag_table",
    "flat_fields",
    "group_title",
    "load",
]
