"""docs/grpcurl.md runs as printed: every ```sh block that starts with `grpcurl` is run by bash against
`prisme-bridge dev` (a subprocess on port 0), with .tools/bin/grpcurl, and its output checked here. A
recipe added to the page without a check here, or a check whose recipe went away, fails the test."""

from __future__ import annotations

import json
import os
import re
import subprocess
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import dev_process

pytestmark = pytest.mark.interop

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "grpcurl.md"
GRPCURL = ROOT / ".tools" / "bin" / "grpcurl"
DOC_ADDRESS = "127.0.0.1:50051"


@dataclass
class Ran:
    code: int
    out: str
    err: str


@dataclass
class Dev:
    address: str
    mock_origin: str  # http://host:port of the mock gateway

    def last_upstream_request(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.mock_origin}/_mock/requests", timeout=10) as reply:
            records: list[dict[str, Any]] = json.load(reply)
        return records[-1]


def recipes() -> dict[str, list[str]]:
    """Section heading -> its ```sh blocks that start with grpcurl, in page order."""
    sections: dict[str, list[str]] = {}
    heading = ""
    for match in re.finditer(r"^## ([^\n]+)$|^```sh\n(.*?)^```$", DOC.read_text(), re.M | re.S):
        if match.group(1):
            heading = match.group(1).strip()
        elif match.group(2).startswith("grpcurl "):
            sections.setdefault(heading, []).append(match.group(2))
    return sections


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dev]:
    if not GRPCURL.is_file():
        pytest.fail(f"{GRPCURL} missing: run scripts/bootstrap")
    with dev_process(tmp_path_factory.mktemp("dev") / "dev.log") as (address, mock):
        yield Dev(address, mock)


def run(block: str, dev: Dev) -> Ran:
    env = dict(os.environ, PATH=f"{GRPCURL.parent}{os.pathsep}{os.environ['PATH']}")
    script = block.replace(DOC_ADDRESS, dev.address)
    done = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", script], capture_output=True, text=True, env=env, timeout=60
    )
    return Ran(done.returncode, done.stdout, done.stderr)


def json_values(text: str) -> list[Any]:
    """The JSON values grpcurl printed one after another."""
    decoder, values, at = json.JSONDecoder(), [], 0
    while text[at:].strip():
        at += len(text[at:]) - len(text[at:].lstrip())
        value, at = decoder.raw_decode(text, at)
        values.append(value)
    return values


def check_list(ran: Ran, _: Dev) -> None:
    assert ran.code == 0, ran.err
    for name in (
        "grpc.health.v1.Health",
        "prisme.llmgateway.v1.ChatCompletionService",
        "prisme.llmgateway.v1.ChatCompletionService.CreateChatCompletion",
        "prisme.llmgateway.v1.ChatCompletionService.StreamChatCompletion",
    ):
        assert name in ran.out.splitlines()


def check_describe(ran: Ran, _: Dev) -> None:
    assert ran.code == 0, ran.err
    assert "rpc StreamChatCompletion" in ran.out
    assert "message CreateChatCompletionRequest" in ran.out
    assert "JSON key `model`" in ran.out  # the proto comments come along


def check_unary(ran: Ran, _: Dev) -> None:
    assert ran.code == 0, ran.err
    (reply,) = json_values(ran.out)
    assert reply["choices"][0]["message"]["content"] == "Hello, bridge!"
    assert reply["choices"][0]["finish_reason"] == "stop"


def check_stream(ran: Ran, _: Dev) -> None:
    assert ran.code == 0, ran.err
    chunks = json_values(ran.out)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c.get("choices"))
    assert text == "Stream these words back"
    assert chunks[-1]["usage"]["total_tokens"] > 0
    assert "choices" not in chunks[-1]


def check_stdin(ran: Ran, dev: Dev) -> None:
    assert ran.code == 0, ran.err
    (reply,) = json_values(ran.out)
    assert reply["choices"][0]["message"]["content"] == 'Isn\'t it "quoted"?'
    body = dev.last_upstream_request()["body"]
    assert (len(body["messages"]), body["temperature"], body["max_tokens"]) == (2, 0.2, 50)


def check_bearer(ran: Ran, dev: Dev) -> None:
    assert ran.code == 0, ran.err
    headers = ran.out.split("Response headers received:")[1].split("Response contents:")[0]
    assert "x-correlation-id: recipe-42" in headers
    upstream = dev.last_upstream_request()["headers"]
    assert upstream["authorization"] == "Bearer iak_acme_00000000-0000-0000-0000-000000000000"
    assert upstream["x-correlation-id"] == "recipe-42"


def check_deadline(ran: Ran, _: Dev) -> None:
    assert ran.code == 64 + 4, ran.err
    assert "Code: DeadlineExceeded" in ran.err


def check_error_details(ran: Ran, _: Dev) -> None:
    assert ran.code == 64 + 8, ran.err
    for shown in (
        "Code: ResourceExhausted",
        '"@type": "type.googleapis.com/google.rpc.ErrorInfo"',
        '"domain": "grpc-bridge.prisme.ai"',
        '"reason": "UPSTREAM_RATE_LIMITED"',
        '"httpStatus": "429"',
        '"@type": "type.googleapis.com/google.rpc.RetryInfo"',
        '"retry_delay": "7s"',
    ):
        assert shown in ran.err


def check_format_error(ran: Ran, _: Dev) -> None:
    assert ran.code == 64 + 3, ran.err
    (status,) = json_values(ran.err)
    assert status["code"] == 3
    info, detail = status["details"]
    assert (info["@type"], info["reason"]) == ("type.googleapis.com/google.rpc.ErrorInfo", "INVALID_REQUEST")
    assert detail["@type"] == "type.googleapis.com/google.rpc.BadRequest"
    assert detail["field_violations"][0]["field"] == "messages"


def check_list_models(ran: Ran, dev: Dev) -> None:
    assert ran.code == 0, ran.err
    (page,) = json_values(ran.out)
    assert [m["model_id"] for m in page["models"]] == ["text-embedding-3-small", "text-embedding-3-large"]
    assert page["models"][0]["supported_dimensions"] == [256, 512, 1024, 1536]
    assert page["next_page_token"]
    assert page["total_size"] > 2
    query = dev.last_upstream_request()["query"]
    assert query == {"type": "embeddings", "visible_only": "true", "limit": "2", "page": "0"}


def check_get_model(ran: Ran, dev: Dev) -> None:
    assert ran.code == 0, ran.err
    (reply,) = json_values(ran.out)
    model = reply["model"]
    assert (model["model_id"], model["display"]["name"]) == (
        "eu.anthropic.claude-sonnet-4-20250514-v1:0",
        "Claude Sonnet 4 (EU)",
    )
    assert set(model["extra"]) == {"metrics", "org_slugs", "provider_config"}
    assert dev.last_upstream_request()["raw_path"].endswith(
        "/models/eu.anthropic.claude-sonnet-4-20250514-v1:0"
    )


def check_embeddings(ran: Ran, dev: Dev) -> None:
    assert ran.code == 0, ran.err
    (reply,) = json_values(ran.out)
    assert [(d.get("index", 0), d["embedding"][0], len(d["embedding"])) for d in reply["data"]] == [
        (0, 14, 4),
        (1, 12, 4),
    ]
    assert dev.last_upstream_request()["body"]["dimensions"] == 4


def check_embedding_refusal(ran: Ran, _: Dev) -> None:
    assert ran.code == 64 + 3, ran.err
    (status,) = json_values(ran.err)
    assert status["code"] == 3
    info, bad = status["details"]
    assert (info["domain"], info["reason"]) == ("grpc-bridge.prisme.ai", "UPSTREAM_INVALID_REQUEST")
    assert (info["metadata"]["httpStatus"], info["metadata"]["upstreamCode"]) == ("400", "INVALID_DIMENSIONS")
    assert bad["field_violations"][0]["field"] == "dimensions"


def check_health(ran: Ran, _: Dev) -> None:
    assert ran.code == 0, ran.err
    assert json_values(ran.out) == [{"status": "SERVING"}, {"status": "SERVING"}]  # liveness, readiness


CHECKS: dict[str, list[Callable[[Ran, Dev], None]]] = {
    "List the services and methods": [check_list],
    "Describe the service and a message": [check_describe],
    "Unary call": [check_unary],
    "Streaming call": [check_stream],
    "A long request from stdin": [check_stdin],
    "Bearer token and metadata": [check_bearer],
    "Deadline": [check_deadline],
    "Error details": [check_error_details, check_format_error],
    "List and get models": [check_list_models, check_get_model],
    "Embeddings": [check_embeddings, check_embedding_refusal],
    "Health: liveness and readiness": [check_health],
}


def test_every_recipe_has_its_check() -> None:
    found = recipes()
    assert {heading: len(blocks) for heading, blocks in found.items()} == {
        heading: len(checks) for heading, checks in CHECKS.items()
    }


@pytest.mark.parametrize(
    ("heading", "position"),
    [(heading, i) for heading, checks in CHECKS.items() for i in range(len(checks))],
)
def test_recipe_runs_as_printed(dev: Dev, heading: str, position: int) -> None:
    blocks = recipes().get(heading, [])
    assert position < len(blocks), f"docs/grpcurl.md lost a recipe under '## {heading}'"
    CHECKS[heading][position](run(blocks[position], dev), dev)
