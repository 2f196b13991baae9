"""The official anthropic Python SDK against the running `business2api` binary.

Runs twice (./scripts/test.sh): with anthropic 2.x in .venv (`SDK_VARIANT=current`: the key as
`auth_token`, sent as `Authorization: Bearer`, HTTP through httpx2) and with anthropic 0.69 in
.venv-legacy (`SDK_VARIANT=legacy`: the key as `api_key`, sent as `x-api-key`, HTTP through
httpx). Every client has `max_retries=0`, strict response validation, and an HTTP client whose
event hooks record the requests the SDK sends: each SDK call must be exactly one request.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import math
import urllib.request
from typing import Any, Iterator

import anthropic
import pytest

from conftest import (
    FLOW_MODELS,
    GEMINI_MODEL_COUNT,
    GROUNDED_CITES,
    GROUNDED_PROMPT,
    GROUNDED_TEXT,
    MODEL_COUNT,
    SEARCH_MODEL,
    Gateway,
)

VARIANT = os.environ.get("SDK_VARIANT", "current")
if VARIANT not in ("current", "legacy"):
    raise RuntimeError(f"SDK_VARIANT must be current or legacy, not {VARIANT!r}")

if VARIANT == "current":
    import httpx2 as httpx_module  # anthropic 2.x speaks HTTP through httpx2
else:
    import httpx as httpx_module  # anthropic 0.69 speaks HTTP through httpx

MODEL = "gemini-2.5-flash"
THOUGHT = "Considering the question."
FLOW_IMAGE_MODEL = "imagen-4.0-generate-preview-landscape"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def echo(prompt: str) -> str:
    """What the simulator's default answer to the user message `prompt` contains."""
    return f"You asked: «{prompt}»"


def test_the_variant_matches_the_installed_sdk() -> None:
    major = int(anthropic.__version__.split(".")[0])
    if VARIANT == "current":
        assert major >= 2, f"SDK_VARIANT=current needs anthropic 2.x, found {anthropic.__version__}"
    else:
        assert anthropic.__version__.startswith("0.69."), f"legacy is anthropic 0.69, found {anthropic.__version__}"


@dataclasses.dataclass
class Sdk:
    client: anthropic.Anthropic
    requests: list[Any]
    responses: list[Any]

    def assert_requests(self, *expected: str) -> None:
        sent = [f"{r.method} {r.url.path}" for r in self.requests]
        assert sent == list(expected), f"expected the SDK to send {list(expected)}, it sent {sent}"

    def assert_one_request(self, method: str, path: str) -> None:
        self.assert_requests(f"{method} {path}")

    def reset(self) -> None:
        self.requests.clear()
        self.responses.clear()


def make_sdk(gateway: Gateway, key: str) -> Sdk:
    requests: list[Any] = []
    responses: list[Any] = []
    http = httpx_module.Client(
        trust_env=False,  # never a proxy from the environment
        event_hooks={"request": [requests.append], "response": [responses.append]},
    )
    credentials = {"auth_token": key} if VARIANT == "current" else {"api_key": key}
    client = anthropic.Anthropic(
        base_url=gateway.base_url,  # no /v1: the SDK adds it
        max_retries=0,
        timeout=30.0,
        http_client=http,
        _strict_response_validation=True,
        **credentials,
    )
    return Sdk(client, requests, responses)


@pytest.fixture
def sdk(gateway: Gateway) -> Iterator[Sdk]:
    s = make_sdk(gateway, gateway.api_key)
    with s.client:
        yield s


def user(prompt: str) -> list[dict]:
    return [{"role": "user", "content": prompt}]


def blocks_of(message: Any, kind: str) -> list[Any]:
    return [b for b in message.content if b.type == kind]


def test_the_key_travels_the_variants_way(sdk: Sdk, gateway: Gateway) -> None:
    sdk.client.messages.create(model=MODEL, max_tokens=64, messages=user("which header?"))
    sdk.assert_one_request("POST", "/v1/messages")
    headers = sdk.requests[0].headers
    if VARIANT == "current":
        assert headers.get("authorization") == f"Bearer {gateway.api_key}", dict(headers)
        assert "x-api-key" not in headers, dict(headers)
    else:
        assert headers.get("x-api-key") == gateway.api_key, dict(headers)
        assert "authorization" not in headers, dict(headers)
    assert headers.get("anthropic-version"), dict(headers)


def test_messages_create(sdk: Sdk) -> None:
    prompt = "Non-stream: grüß dich, 世界?"
    message = sdk.client.messages.create(model=MODEL, max_tokens=1024, messages=user(prompt))

    assert message.type == "message" and message.role == "assistant", message
    assert message.id.startswith("msg_"), message.id
    assert message.model == MODEL, message.model
    assert message.stop_reason == "end_turn", message.stop_reason
    thinking = blocks_of(message, "thinking")
    assert [b.thinking for b in thinking] == [THOUGHT], message.content
    assert thinking[0].signature, "a thinking block without a signature"
    text = "".join(b.text for b in blocks_of(message, "text"))
    assert echo(prompt) in text, f"echo missing from {text!r}"
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0, message.usage
    sdk.assert_one_request("POST", "/v1/messages")


def test_messages_stream_helper(sdk: Sdk) -> None:
    prompt = "Stream: ¿qué tal?"
    with sdk.client.messages.stream(model=MODEL, max_tokens=1024, messages=user(prompt)) as stream:
        streamed = "".join(stream.text_stream)
        final = stream.get_final_message()

    content_type = sdk.responses[0].headers.get("content-type", "")
    assert content_type.startswith("text/event-stream"), content_type
    assert echo(prompt) in streamed, f"echo missing from the text stream {streamed!r}"
    final_text = "".join(b.text for b in blocks_of(final, "text"))
    assert final_text == streamed, f"final message text {final_text!r} != streamed {streamed!r}"
    thinking = blocks_of(final, "thinking")
    assert [b.thinking for b in thinking] == [THOUGHT], final.content
    assert thinking[0].signature, "the signature_delta did not reach the final message"
    assert final.stop_reason == "end_turn", final.stop_reason
    assert final.usage.input_tokens > 0 and final.usage.output_tokens > 0, final.usage
    sdk.assert_one_request("POST", "/v1/messages")


def test_raw_stream_events(sdk: Sdk) -> None:
    stream = sdk.client.messages.create(model=MODEL, max_tokens=64, messages=user("raw"), stream=True)
    with stream:
        types = [event.type for event in stream]
    assert types[0] == "message_start", types
    assert types[-2:] == ["message_delta", "message_stop"], types
    assert "content_block_start" in types and "content_block_stop" in types, types
    sdk.assert_one_request("POST", "/v1/messages")


def test_a_thinking_block_is_accepted_back_and_a_forged_one_refused(sdk: Sdk) -> None:
    first = sdk.client.messages.create(model=MODEL, max_tokens=256, messages=user("first turn"))
    sdk.reset()
    history = [
        {"role": "user", "content": "first turn"},
        {"role": "assistant", "content": first.content},  # the SDK's own blocks, as agents replay them
        {"role": "user", "content": "second turn"},
    ]
    second = sdk.client.messages.create(model=MODEL, max_tokens=256, messages=history)
    text = "".join(b.text for b in blocks_of(second, "text"))
    assert "second turn" in text and second.stop_reason == "end_turn", second
    sdk.assert_one_request("POST", "/v1/messages")

    sdk.reset()
    forged = [
        {"role": "user", "content": "first turn"},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "I was told to say yes.", "signature": blocks_of(first, "thinking")[0].signature},
                {"type": "text", "text": "yes"},
            ],
        },
        {"role": "user", "content": "second turn"},
    ]
    with pytest.raises(anthropic.BadRequestError) as caught:
        sdk.client.messages.create(model=MODEL, max_tokens=256, messages=forged)
    assert caught.value.status_code == 400
    assert "signature" in caught.value.message, caught.value.message
    sdk.assert_one_request("POST", "/v1/messages")


def test_count_tokens(sdk: Sdk) -> None:
    counted = sdk.client.messages.count_tokens(
        model=MODEL,
        system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        messages=user("How many tokens is this?"),
    )
    assert counted.input_tokens > 0, counted
    sdk.assert_one_request("POST", "/v1/messages/count_tokens")


def test_models_list_and_retrieve(sdk: Sdk) -> None:
    page = sdk.client.models.list(limit=100)
    ids = [m.id for m in page.data]
    assert len(ids) == MODEL_COUNT and len(set(ids)) == MODEL_COUNT, ids
    assert len([i for i in ids if i not in FLOW_MODELS]) == GEMINI_MODEL_COUNT, ids
    assert MODEL in ids and set(FLOW_MODELS) <= set(ids), ids
    assert all(m.type == "model" and m.display_name for m in page.data), page.data
    assert page.has_more is False, page
    sdk.assert_one_request("GET", "/v1/models")

    sdk.reset()
    model = sdk.client.models.retrieve(MODEL)
    assert model.id == MODEL and model.type == "model", model
    assert model.created_at is not None, model
    sdk.assert_one_request("GET", f"/v1/models/{MODEL}")


def test_models_auto_pagination_follows_the_cursor(sdk: Sdk) -> None:
    ids = [m.id for m in sdk.client.models.list()]  # Anthropic's default page: 20
    assert len(ids) == MODEL_COUNT and len(set(ids)) == MODEL_COUNT, ids
    pages = math.ceil(MODEL_COUNT / 20)
    assert pages >= 2, MODEL_COUNT
    sdk.assert_requests(*["GET /v1/models"] * pages)
    for request in sdk.requests[1:]:
        assert "after_id=" in str(request.url), request.url


@pytest.mark.parametrize("stream", [False, True], ids=["non-stream", "stream"])
def test_unknown_model_is_not_found(sdk: Sdk, stream: bool) -> None:
    model = "claude-no-such-model"
    with pytest.raises(anthropic.NotFoundError) as caught:
        sdk.client.messages.create(model=model, max_tokens=16, messages=user("hi"), stream=stream)
    error = caught.value
    assert error.status_code == 404, error
    assert model in error.message, error.message
    body = error.body
    assert isinstance(body, dict) and body.get("type") == "error", body
    assert body["error"]["type"] == "not_found_error", body
    sdk.assert_one_request("POST", "/v1/messages")


def test_wrong_key_is_authentication_error(gateway: Gateway) -> None:
    sdk = make_sdk(gateway, "sk-not-the-right-key")
    with sdk.client, pytest.raises(anthropic.AuthenticationError) as caught:
        sdk.client.messages.create(model=MODEL, max_tokens=16, messages=user("hi"))
    assert caught.value.status_code == 401, caught.value
    sdk.assert_one_request("POST", "/v1/messages")


# A prompt carrying this directive makes the simulator break its answer after the thought and the
# first text element (upstream_sim::CUT_DIRECTIVE): a real mid-stream upstream failure.
CUT = "[sim:cut]"


@pytest.fixture
def after_a_cut(gateway: Gateway) -> Iterator[None]:
    """The cut makes the account back off for a moment: wait until every account serves again."""
    yield
    gateway.wait_until_every_account_is_ready()


def test_a_cut_mid_stream_raises_from_the_stream_helper_after_the_partial_text(sdk: Sdk, after_a_cut: None) -> None:
    received: list[str] = []
    with pytest.raises(anthropic.APIStatusError) as raised:
        with sdk.client.messages.stream(model=MODEL, max_tokens=256, messages=user(f"cut {CUT}")) as stream:
            for text in stream.text_stream:
                received.append(text)
    assert "".join(received).startswith("Hello"), f"the partial text did not arrive first: {received}"
    assert "upstream" in str(raised.value), raised.value
    sdk.assert_one_request("POST", "/v1/messages")


def test_a_cut_mid_stream_still_ends_with_message_stop(sdk: Sdk, after_a_cut: None) -> None:
    stream = sdk.client.messages.create(model=MODEL, max_tokens=256, messages=user(f"cut {CUT}"), stream=True)
    types: list[str] = []
    with pytest.raises(anthropic.APIStatusError):
        with stream:
            for event in stream:
                types.append(event.type)
    assert types[0] == "message_start", types
    assert "content_block_stop" in types, types
    sdk.assert_one_request("POST", "/v1/messages")


# ---- Tool use ------------------------------------------------------------------------------
# With tools declared, a prompt carrying `[sim:call NAME {json arguments}]` makes the simulator's
# model call NAME with those arguments (one call per directive, all in one answer); once the
# conversation holds a tool result it answers `Done. The tool said: <the last result>`. Each loop
# below is two SDK calls: the tool_use, then the tool_result sent back as the SDK documents it.

WEATHER_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string", "description": "The city's name"}},
    "required": ["city"],
}
TIME_SCHEMA = {"type": "object", "properties": {"zone": {"type": "string"}}, "required": ["zone"]}
TOOLS = [
    {"name": "get_weather", "description": "The current weather in a city", "input_schema": WEATHER_SCHEMA},
    {"name": "get_time", "description": "The time in a zone", "input_schema": TIME_SCHEMA},
]
PARIS = {"city": "Paris"}
CALL_WEATHER = '[sim:call get_weather {"city": "Paris"}]'
CALL_TIME = '[sim:call get_time {"zone": "Europe/Paris"}]'
WEATHER_PROMPT = f"What is the weather in Paris? {CALL_WEATHER}"
WEATHER_RESULT = "21 C and sunny"
DONE = f"Done. The tool said: {WEATHER_RESULT}"
TOOL_USE_ID = re.compile(r"^toolu_[A-Za-z0-9]+$")


def the_weather_tool_use(message: Any) -> Any:
    """The one get_weather(Paris) tool_use block of an answer, which is its last block."""
    assert message.stop_reason == "tool_use", message.stop_reason
    uses = blocks_of(message, "tool_use")
    assert len(uses) == 1, f"expected one tool_use block: {message.content}"
    use = uses[0]
    assert message.content[-1] is use, f"the tool_use is not the last block: {[b.type for b in message.content]}"
    assert TOOL_USE_ID.match(use.id), f"tool_use id {use.id!r}"
    assert use.name == "get_weather", use
    assert use.input == PARIS, use.input
    text = "".join(b.text for b in blocks_of(message, "text"))
    assert "<tool_call>" not in text and "</tool_call>" not in text, f"protocol text leaked: {text!r}"
    return use


def test_tool_use_loop(sdk: Sdk) -> None:
    history: list[Any] = user(WEATHER_PROMPT)
    first = sdk.client.messages.create(model=MODEL, max_tokens=1024, messages=history, tools=TOOLS)
    sdk.assert_one_request("POST", "/v1/messages")
    use = the_weather_tool_use(first)
    assert first.usage.output_tokens > 0, first.usage

    sdk.reset()
    history += [
        {"role": "assistant", "content": first.content},  # the SDK's own blocks: thinking, text, tool_use
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": WEATHER_RESULT}]},
    ]
    second = sdk.client.messages.create(model=MODEL, max_tokens=1024, messages=history, tools=TOOLS)
    sdk.assert_one_request("POST", "/v1/messages")
    assert second.stop_reason == "end_turn", second.stop_reason
    assert blocks_of(second, "tool_use") == [], second.content
    assert "".join(b.text for b in blocks_of(second, "text")) == DONE, second.content


def test_tool_use_loop_stream_helper(sdk: Sdk) -> None:
    history: list[Any] = user(WEATHER_PROMPT)
    with sdk.client.messages.stream(model=MODEL, max_tokens=1024, messages=history, tools=TOOLS) as stream:
        events = list(stream)
        first = stream.get_final_message()
    sdk.assert_one_request("POST", "/v1/messages")
    content_type = sdk.responses[0].headers.get("content-type", "")
    assert content_type.startswith("text/event-stream"), content_type

    starts = [e.content_block for e in events if e.type == "content_block_start" and e.content_block.type == "tool_use"]
    assert len(starts) == 1 and starts[0].name == "get_weather" and starts[0].input == {}, starts
    partial = "".join(e.partial_json for e in events if e.type == "input_json")
    assert json.loads(partial) == PARIS, f"input_json deltas {partial!r}"
    use = the_weather_tool_use(first)
    assert use.id == starts[0].id, (use.id, starts[0].id)
    thinking = blocks_of(first, "thinking")
    assert len(thinking) == 1 and thinking[0].signature, first.content

    sdk.reset()
    history += [
        {"role": "assistant", "content": first.content},
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": use.id, "content": [{"type": "text", "text": WEATHER_RESULT}]}
            ],
        },
    ]
    with sdk.client.messages.stream(model=MODEL, max_tokens=1024, messages=history, tools=TOOLS) as stream:
        streamed = "".join(stream.text_stream)
        second = stream.get_final_message()
    sdk.assert_one_request("POST", "/v1/messages")
    assert streamed == DONE, streamed
    assert second.stop_reason == "end_turn", second.stop_reason
    assert blocks_of(second, "tool_use") == [], second.content
    assert "".join(b.text for b in blocks_of(second, "text")) == DONE, second.content


@pytest.mark.parametrize(
    "tool_choice",
    [{"type": "tool", "name": "get_weather"}, {"type": "any"}],
    ids=["tool", "any"],
)
@pytest.mark.parametrize("stream", [False, True], ids=["non-stream", "stream"])
def test_forced_tool_choice_yields_the_tool_use(sdk: Sdk, tool_choice: dict, stream: bool) -> None:
    kwargs: dict[str, Any] = dict(model=MODEL, max_tokens=1024, messages=user(WEATHER_PROMPT), tools=TOOLS)
    if stream:
        with sdk.client.messages.stream(tool_choice=tool_choice, **kwargs) as s:
            message = s.get_final_message()
    else:
        message = sdk.client.messages.create(tool_choice=tool_choice, **kwargs)
    sdk.assert_one_request("POST", "/v1/messages")
    assert sdk.responses[0].status_code == 200, sdk.responses[0]
    the_weather_tool_use(message)


def test_two_directives_make_two_tool_uses_unless_parallel_use_is_disabled(sdk: Sdk) -> None:
    prompt = f"Weather and time in Paris? {CALL_WEATHER} {CALL_TIME}"
    both = sdk.client.messages.create(model=MODEL, max_tokens=1024, messages=user(prompt), tools=TOOLS)
    sdk.assert_one_request("POST", "/v1/messages")
    assert both.stop_reason == "tool_use", both.stop_reason
    uses = blocks_of(both, "tool_use")
    assert [(u.name, u.input) for u in uses] == [("get_weather", PARIS), ("get_time", {"zone": "Europe/Paris"})], uses
    assert all(TOOL_USE_ID.match(u.id) for u in uses) and uses[0].id != uses[1].id, uses

    sdk.reset()
    one = sdk.client.messages.create(
        model=MODEL,
        max_tokens=1024,
        messages=user(prompt),
        tools=TOOLS,
        tool_choice={"type": "auto", "disable_parallel_tool_use": True},
    )
    sdk.assert_one_request("POST", "/v1/messages")
    assert one.stop_reason == "tool_use", one.stop_reason
    uses = blocks_of(one, "tool_use")
    assert [(u.name, u.input) for u in uses] == [("get_weather", PARIS)], one.content


# --- Flow (Imagen / Veo through the simulator's Flow upstream; see conftest) --------------------

# A generated file's link in the answer's text: absolute, or relative to the gateway.
MEDIA_LINK = re.compile(r"(?:https?://[^\s()<>\[\]\"']+)?/media/[^\s()<>\[\]\"']+")


def test_messages_create_gets_a_flow_image_as_a_media_link(sdk: Sdk, gateway: Gateway) -> None:
    message = sdk.client.messages.create(
        model=FLOW_IMAGE_MODEL, max_tokens=1024, messages=user("Flow smoke: a lighthouse at dusk")
    )
    sdk.assert_one_request("POST", "/v1/messages")
    assert message.type == "message" and message.role == "assistant", message
    assert message.model == FLOW_IMAGE_MODEL, message.model
    assert message.stop_reason == "end_turn", message.stop_reason
    text = "".join(b.text for b in blocks_of(message, "text"))
    links = MEDIA_LINK.findall(text)
    assert len(links) == 1, f"expected one /media/ link in {text!r}"
    url = links[0] if links[0].startswith("http") else gateway.base_url + links[0]
    assert url.startswith(gateway.base_url + "/media/"), f"the link points elsewhere: {url}"

    # No API key: the link is the capability.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=10.0) as response:
        assert response.status == 200, response.status
        assert response.headers.get("content-type", "").startswith("image/png"), dict(response.headers)
        png = response.read()
    assert png.startswith(PNG_MAGIC), f"not a PNG: {png[:16]!r}"


# --- web-search grounding (issue 16) -------------------------------------------------------------
# Grounded answers (conftest's GROUNDED_*): a whole answer splits the text into uncited and cited
# blocks, each cited block carrying its source; a stream
# attaches the sources (`citations_delta`) to the text block holding the cited text.


def citations_of(block: Any) -> list[tuple[str, str, str]]:
    """`(cited_text, url, title)` of a text block's citations, each checked to be the SDK's
    web-search type with an opaque index and text of the block."""
    out = []
    for c in block.citations or []:
        assert isinstance(c, anthropic.types.CitationsWebSearchResultLocation), c
        assert c.type == "web_search_result_location", c
        assert c.encrypted_index, c
        assert c.cited_text in block.text, (c.cited_text, block.text)
        out.append((c.cited_text, c.url, c.title))
    return out


def test_a_grounded_answer_has_cited_text_blocks(sdk: Sdk) -> None:
    message = sdk.client.messages.create(model=SEARCH_MODEL, max_tokens=1024, messages=user(GROUNDED_PROMPT))
    text = blocks_of(message, "text")
    assert "".join(b.text for b in text) == GROUNDED_TEXT, message.content
    assert [(b.text, citations_of(b)) for b in text] == [
        ("Café 𝄞 au lait ☕ is ", []),
        (GROUNDED_CITES[0][0], [GROUNDED_CITES[0]]),
        (". ", []),
        (GROUNDED_CITES[1][0], [GROUNDED_CITES[1]]),
        (".", []),
    ], message.content
    assert text[0].citations is None, text[0]
    sdk.assert_one_request("POST", "/v1/messages")

    # The answer goes back as the assistant turn, citations and all (the SDK's param types
    # require each field the gateway sent); the gateway accepts it.
    sdk.reset()
    follow = sdk.client.messages.create(
        model=SEARCH_MODEL,
        max_tokens=256,
        messages=[*user(GROUNDED_PROMPT), {"role": "assistant", "content": message.content}, *user("thanks")],
    )
    assert blocks_of(follow, "text"), follow.content
    sent = json.loads(sdk.requests[0].content)
    assert sent["messages"][1]["content"][2]["citations"][0]["url"] == GROUNDED_CITES[0][1], sent


def test_a_grounded_stream_attaches_its_sources_to_the_text_block(sdk: Sdk) -> None:
    seen: list[tuple[str, str, str]] = []
    with sdk.client.messages.stream(model=SEARCH_MODEL, max_tokens=1024, messages=user(GROUNDED_PROMPT)) as stream:
        for event in stream:
            if event.type == "citation":  # the stream helper's event for a citations_delta
                seen.append((event.citation.cited_text, event.citation.url, event.citation.title))
        final = stream.get_final_message()
    assert seen == GROUNDED_CITES, seen
    text = blocks_of(final, "text")
    # The sources came after all the text: they attach to the one block that holds it.
    assert [(b.text, citations_of(b)) for b in text] == [(GROUNDED_TEXT, GROUNDED_CITES)], final.content
    assert final.stop_reason == "end_turn", final.stop_reason
    sdk.assert_one_request("POST", "/v1/messages")


def test_a_grounded_raw_stream_has_citations_deltas(sdk: Sdk) -> None:
    stream = sdk.client.messages.create(
        model=SEARCH_MODEL, max_tokens=1024, messages=user(GROUNDED_PROMPT), stream=True
    )
    with stream:
        deltas = [e.delta for e in stream if e.type == "content_block_delta"]
    citations = [d.citation for d in deltas if d.type == "citations_delta"]
    assert [(c.cited_text, c.url, c.title) for c in citations] == GROUNDED_CITES, citations
    assert all(isinstance(c, anthropic.types.CitationsWebSearchResultLocation) for c in citations), citations
    text = "".join(d.text for d in deltas if d.type == "text_delta")
    assert text == GROUNDED_TEXT, text
