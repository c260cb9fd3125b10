"""The mock's model catalogue: 250 documents in the gateway's shape, its filters and paging, and the same
models as an OpenAI-compatible server lists them ({object: "list", data: [...]})."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Final

from bridge.mock_gateway.records import Json

__all__ = [
    "CATALOGUE",
    "CATALOGUE_SIZE",
    "MAX_LIMIT",
    "by_id",
    "catalogue_page",
    "openai_model",
]

CATALOGUE_SIZE: Final = 250
MAX_LIMIT: Final = 100  # the gateway's cap on `limit`, also its default
TYPES: Final = ("completion", "embeddings", "image_generation")
CAPABILITIES: Final = ("vision", "audio", "text", "image")
CREATED: Final = 1_700_000_000

# The chat scripts of the mock (bridge.mock_gateway.scripts), listed as completion models.
_CHAT_SCRIPTS: Final = ("echo", "tools", "reasoning", "azure", "endless", "slow-1000", "error-429")
# (model_id, default dimensions, supported dimensions): the embeddings models with fixed dimensions.
EMBEDDING_MODELS: Final = (
    ("text-embedding-3-small", 1536, (256, 512, 1024, 1536)),
    ("text-embedding-3-large", 3072, (256, 1024, 3072)),
    ("text-embedding-mock", 8, (4, 8)),
    ("governed/text-embedding-3-small", 1536, (256, 1536)),
)
# Ids in the gateway's documented forms: a provider prefix with a slash, a version suffix with a colon.
_ODD_IDS: Final = (
    ("bedrock/anthropic.claude-3-haiku", "Claude 3 Haiku (Bedrock)"),
    ("eu.anthropic.claude-sonnet-4-20250514-v1:0", "Claude Sonnet 4 (EU)"),
)
_BRANDS: Final = ("OpenAI", "Anthropic", "Mistral", "Meta", "Google")
_REGIONS: Final = ("eu-west-1", "eu-central-1", "us-east-1")
_TAGS: Final = ("chat", "eu", "fast", "reasoning", "cheap", "long-context")


def _document(model_id: str, type_: str, brand: str, n: int) -> Json:
    """A full catalogue document; `n` varies the flags so that every filter selects a proper subset."""
    capabilities = {name: (n + i) % (i + 2) == 0 for i, name in enumerate(CAPABILITIES)}
    capabilities["text"] = type_ != "image_generation"
    doc: Json = {
        "model_id": model_id,
        "type": type_,
        "display": {"name": model_id.rsplit("/", 1)[-1].replace("-", " ").title(), "brand": brand},
        "capabilities": capabilities,
        "limits": {"context_window": 8192 * (1 + n % 16), "max_output_tokens": 4096},
        "failover": "",
        "region": _REGIONS[n % len(_REGIONS)],
        "pricing": {"input_per_1m_tokens": round(0.15 * (1 + n % 20), 2), "output_per_1m_tokens": 0.6},
        "tags": [_TAGS[n % len(_TAGS)], _TAGS[(n * 7 + 1) % len(_TAGS)]],
        "org_slugs": [],
        "metrics": {"p50_latency_ms": 200 + n},
        "provider_config": {"batch_size": 16},
        "enabled": n % 11 != 10,
    }
    doc["display"]["hidden"] = n % 7 == 6
    if n % 5 == 0 and n > 0:
        doc["failover"] = "echo"
    return doc


def _named() -> Iterator[Json]:
    for n, name in enumerate(_CHAT_SCRIPTS):
        doc = _document(name, "completion", "Mock", n)
        doc.update(enabled=True, tags=["chat", "mock"])
        doc["display"]["hidden"] = False
        yield doc
    for n, (name, dimensions, supported) in enumerate(EMBEDDING_MODELS):
        doc = _document(name, "embeddings", "OpenAI" if "text-embedding-3" in name else "Mock", n)
        doc.update(dimensions=dimensions, supported_dimensions=list(supported), enabled=True)
        doc["tags"] = ["embeddings"]
        doc["display"]["hidden"] = False
        yield doc
    for n, (model_id, name) in enumerate(_ODD_IDS):
        doc = _document(model_id, "completion", "Anthropic", n)
        doc["display"]["name"] = name
        yield doc


def _generated(count: int) -> Iterator[Json]:
    for n in range(count):
        brand = _BRANDS[n % len(_BRANDS)]
        type_ = TYPES[0] if n % 6 < 4 else TYPES[n % 6 - 3]
        suffix = ":0" if n % 4 == 3 else ""
        model_id = f"{brand.lower()}/{type_.split('_')[0]}-{n:03d}{suffix}"
        yield _document(model_id, type_, brand, n)


def _catalogue() -> tuple[Json, ...]:
    named = list(_named())
    return (*named, *_generated(CATALOGUE_SIZE - len(named)))


CATALOGUE: Final = _catalogue()
_BY_ID: Final = {doc["model_id"]: doc for doc in CATALOGUE}


def by_id(model_id: str) -> Json | None:
    return _BY_ID.get(model_id)


# ------------------------------------------------------------------------------------ filters and paging


def _csv(value: str) -> set[str]:
    return {part for part in value.split(",") if part}


def _flag(value: str) -> bool | None:
    return {"true": True, "false": False}.get(value)


def _matches_search(doc: Json, text: str) -> bool:
    display = doc.get("display", {})
    haystack = (doc["model_id"], display.get("name", ""), display.get("brand", ""))
    return any(text.lower() in field.lower() for field in haystack)


Filter = Callable[[Json, str], bool]
FILTERS: Final[Mapping[str, Filter]] = {
    "type": lambda doc, v: doc["type"] == v,
    "enabled": lambda doc, v: doc.get("enabled", True) is _flag(v),
    "model_ids": lambda doc, v: doc["model_id"] in _csv(v),
    "tags": lambda doc, v: bool(_csv(v) & set(doc.get("tags", []))),
    "visible_only": lambda doc, v: _flag(v) is not True or not doc["display"].get("hidden", False),
    "brand": lambda doc, v: doc["display"].get("brand") == v,
    "search": _matches_search,
    "capability": lambda doc, v: doc.get("capabilities", {}).get(v) is True,
}
_CHOICES: Final = {"type": TYPES, "capability": CAPABILITIES, "enabled": ("true", "false")}


def _query_problem(query: Mapping[str, str]) -> str | None:
    for name, allowed in (*_CHOICES.items(), ("visible_only", ("true", "false"))):
        if name in query and query[name] not in allowed:
            return f"'{name}' must be one of {', '.join(allowed)}"
    for name, low in (("limit", 1), ("page", 0)):
        value = query.get(name)
        if value is not None and (not value.isdigit() or int(value) < low):
            return f"'{name}' must be an integer >= {low}"
    return None


def catalogue_page(query: Mapping[str, str]) -> tuple[int, Json]:
    """(status, body) of `GET /models` for `query`: the filtered catalogue's page, or a 400 body."""
    problem = _query_problem(query)
    if problem is not None:
        return 400, {"error": "invalid_request", "message": problem, "details": {}}
    chosen = [doc for doc in CATALOGUE if all(f(doc, query[k]) for k, f in FILTERS.items() if k in query)]
    limit = min(int(query.get("limit", MAX_LIMIT)), MAX_LIMIT)
    page = int(query.get("page", 0))
    items = chosen[page * limit : (page + 1) * limit]
    return 200, {"items": items, "total": len(chosen), "page": page, "limit": limit}


def openai_model(doc: Json) -> Json:
    """A catalogue document as an OpenAI-compatible server lists it (vLLM adds its max_model_len)."""
    model: Json = {
        "id": doc["model_id"],
        "object": "model",
        "created": CREATED,
        "owned_by": doc["display"]["brand"].lower(),
    }
    if doc["type"] == "completion":
        model["max_model_len"] = doc["limits"]["context_window"]
    return model
