"""`prisme-bridge` command line: serve, mock-gateway, dev.

Flags are generated from the settings models (bridge.settings.flags), so each flag has its BRIDGE_* env var
and its validation there; this module only parses, reports bad values in one line, and starts things.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from pydantic import ValidationError

from bridge import __version__, eventloop
from bridge.address import split_host_port
from bridge.logs import setup_logging
from bridge.rpc.tracing import TracingConfigError
from bridge.settings.base import CommandSettings
from bridge.settings.commands import COMMANDS, DevSettings, MockGatewaySettings, ServeSettings
from bridge.settings.flags import add_flags, closest, load, one_line_error

__all__ = ["main"]

PROG = "prisme-bridge"
_WITH_THE_MOCK = ("mock-gateway", "dev")


def main(argv: Sequence[str] | None = None) -> int:
    parser, commands = _parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # argparse would name the top-level parser; the command's own is the useful one
        commands[args.command].error(_unrecognized(unknown, commands[args.command]))
    if getattr(args, "list_models", False):
        from bridge.mock_gateway import scripted_models

        return _print(scripted_models())
    model, _ = COMMANDS[args.command]
    try:
        settings = load(model, vars(args))
    except ValidationError as exc:
        print(f"{PROG} {args.command}: error: {one_line_error(exc)}", file=sys.stderr)
        return 2
    setup_logging(settings.logging.level, settings.logging.format)
    for warning in settings.warnings():
        logging.getLogger("bridge.cli").warning("%s", warning)
    try:
        if isinstance(settings, ServeSettings) and settings.lifecycle.workers > 1:
            from bridge.workers import run_workers  # forks: before any event loop or gRPC object

            return run_workers(settings)
        loop = settings.lifecycle.event_loop if isinstance(settings, ServeSettings) else "asyncio"
        with contextlib.suppress(KeyboardInterrupt):
            eventloop.run(_run(args.command, settings), loop)
    except (OSError, TracingConfigError) as exc:  # a listen address in use; an exporter not installed
        print(f"{PROG} {args.command}: error: {exc}", file=sys.stderr)
        return 1
    return 0


def _print(text: str) -> int:
    """Prints `text`; a reader that stops early (`| head`) is not an error worth a traceback."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        # Python would report the pipe again while flushing stdout at exit: point stdout at /dev/null.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse with short errors: the problem (with a "did you mean" for a near miss) and where help is,
    not the usage block of every flag. No abbreviated flags: `--upstream-ur` is a typo to point out, and
    a flag added later must not change what an abbreviation in someone's script means."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(allow_abbrev=False, **kwargs)

    def error(self, message: str) -> NoReturn:
        choice = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if choice:  # a mistyped command
            message += _did_you_mean(choice.group(1), re.findall(r"'([^']*)'", choice.group(2)))
        self.exit(2, f"{self.prog}: error: {message}\nTry '{self.prog} --help'.\n")


def _did_you_mean(word: str, choices: Sequence[str], quote: bool = True) -> str:
    """ " (did you mean 'x'?)" for the choice closest to `word`, if one is close; else ""."""
    close = closest(word, choices)
    if close is None:
        return ""
    return f" (did you mean {close!r}?)" if quote else f" (did you mean {close}?)"


def _unrecognized(unknown: Sequence[str], command: argparse.ArgumentParser) -> str:
    """What is wrong with the arguments a command did not recognise: the first unknown flag, with the
    closest real one, else the first stray argument."""
    flags = [flag for flag in command._option_string_actions if flag.startswith("--")]
    for argument in unknown:
        if argument.startswith("-"):
            flag = argument.partition("=")[0]
            return f"unknown flag {flag}{_did_you_mean(flag, flags, quote=False)}"
    return f"unexpected argument {unknown[0]!r} (flags take their value as --flag VALUE or --flag=VALUE)"


def _parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    parser = _Parser(
        prog=PROG,
        usage=f"{PROG} [--version] COMMAND [flags]",
        description="gRPC bridge for the Prisme.ai LLM gateway and other OpenAI-compatible chat-completions "
        "servers. Every flag can also be set with its BRIDGE_* environment variable.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    subparsers: dict[str, argparse.ArgumentParser] = {}
    for name, (model, summary) in COMMANDS.items():
        # One usage line: the groups below list the flags (argparse would list all of them in the usage).
        sub = subparsers[name] = commands.add_parser(
            name, prog=f"{PROG} {name}", help=summary, description=summary, usage="%(prog)s [flags]"
        )
        if name in _WITH_THE_MOCK:
            sub.add_argument(
                "--list-models", action="store_true", help="print the mock's scripted models and exit"
            )
        add_flags(sub, model)
    return parser, subparsers


async def _run(command: str, settings: CommandSettings) -> None:
    if isinstance(settings, ServeSettings):
        from bridge.app import serve

        await serve(settings)
    elif isinstance(settings, MockGatewaySettings):
        from bridge.app import StopSignals
        from bridge.dev import start_mock

        host, port = split_host_port(settings.mock.listen)
        key = settings.mock.require_api_key.get_secret_value() if settings.mock.require_api_key else None
        async with StopSignals() as signals:
            mock = await start_mock(host, port, require_api_key=key)
            logging.getLogger("bridge.mock_gateway").info("mock gateway listening on %s", mock.url)
            try:
                await signals.wait()
            finally:
                await mock.close()
    elif isinstance(settings, DevSettings):
        from bridge.dev import run_dev

        await run_dev(settings)
    else:  # pragma: no cover - _COMMANDS and this dispatch change together
        raise AssertionError(command)


if __name__ == "__main__":
    raise SystemExit(main())
