"""`prisme-bridge` command line: serve, mock-gateway, dev.

Flags are generated from the settings models in bridge.config, so each flag has its BRIDGE_* env var and
its validation there; this module only parses, reports bad values in one line, and starts things.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from collections.abc import Sequence
from typing import Any, Literal, get_args, get_origin

from pydantic import SecretStr, ValidationError
from pydantic_settings import BaseSettings

from bridge import __version__
from bridge.config import DevSettings, MockGatewaySettings, ServeSettings, split_host_port

__all__ = ["main"]

PROG = "prisme-bridge"
_COMMANDS: dict[str, tuple[type[BaseSettings], str]] = {
    "serve": (ServeSettings, "run the gRPC bridge in front of an OpenAI-compatible upstream"),
    "mock-gateway": (MockGatewaySettings, "run the mock LLM gateway (JSON + SSE, scripted by model name)"),
    "dev": (DevSettings, "run the mock gateway and a bridge in front of it, and print grpcurl calls to try"),
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    model, _ = _COMMANDS[args.command]
    try:
        settings = model(**{k: v for k, v in vars(args).items() if k in model.model_fields and v is not None})
    except ValidationError as exc:
        print(f"{PROG} {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    _setup_logging(getattr(settings, "log_level", "INFO"))
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_run(args.command, settings))
    except OSError as exc:  # e.g. a listen address already in use
        print(f"{PROG} {args.command}: error: {exc}", file=sys.stderr)
        return 1
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="gRPC bridge for the Prisme.ai LLM gateway and other OpenAI-compatible chat-completions "
        "servers. Every flag can also be set with its BRIDGE_* environment variable.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (model, summary) in _COMMANDS.items():
        sub = commands.add_parser(name, help=summary, description=summary)
        for field_name, field in model.model_fields.items():
            sub.add_argument(
                _flag(field_name),
                dest=field_name,
                metavar=_metavar(field_name, field),
                help=f"{field.description} (env {_env(field_name)}; {_default_text(field)})",
            )
    return parser


def _metavar(field_name: str, field: Any) -> str:
    """`{a,b,c}` for a choice (validation stays pydantic's, with its one-line error), else the name."""
    if get_origin(field.annotation) is Literal:
        return "{" + ",".join(str(choice) for choice in get_args(field.annotation)) + "}"
    return field_name.upper()


def _flag(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def _env(field_name: str) -> str:
    return "BRIDGE_" + field_name.upper()


def _default_text(field: Any) -> str:
    if field.is_required():
        return "required"
    return "default: none" if field.default is None else f"default: {field.default}"


def _one_line(exc: ValidationError) -> str:
    """`--flag / BRIDGE_FLAG: problem (got 'value')` for each error, secrets never echoed."""
    problems = []
    for error in exc.errors():
        name = str(error["loc"][0]) if error["loc"] else "settings"
        text = error["msg"].removeprefix("Value error, ")
        value = error.get("input")
        # Our own validators word their messages (safely); keys and URLs may hold secrets.
        hidden = error["type"] in ("missing", "value_error") or "key" in name or "url" in name
        shown = "" if hidden or value is None or isinstance(value, SecretStr) else f" (got {value!r})"
        if error["type"] == "missing":
            text = "is required"
        problems.append(f"{_flag(name)} / {_env(name)}: {text}{shown}")
    return "; ".join(problems)


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )


async def _run(command: str, settings: BaseSettings) -> None:
    if isinstance(settings, ServeSettings):
        from bridge.server import serve

        await serve(settings)
    elif isinstance(settings, MockGatewaySettings):
        from bridge.mock_gateway import serve_forever
        from bridge.server import wait_for_signal

        host, port = split_host_port(settings.listen)
        key = settings.require_api_key.get_secret_value() if settings.require_api_key else None
        await serve_forever(host, port, require_api_key=key, until=wait_for_signal)
    elif isinstance(settings, DevSettings):
        from bridge.dev import run_dev

        await run_dev(settings)
    else:  # pragma: no cover - _COMMANDS and this dispatch change together
        raise AssertionError(command)


if __name__ == "__main__":
    raise SystemExit(main())
