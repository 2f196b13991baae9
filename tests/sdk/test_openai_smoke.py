"""Smoke test: the official OpenAI Python SDK against the running `business2api` binary.

Every client is built with `max_retries=0` and `_strict_response_validation=True` (a response
that does not match the SDK's types is an error, not a silently half-filled object), and an
httpx2 client that counts the HTTP requests the SDK sends: each SDK call must be exactly one
request (no hidden retries, no extra round trips).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import re
from typing import Any, Iterator

import httpx2
import openai
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

MODEL = "gemini-2.5-flash"
THOUGHT = "Considering the question."


def echo(prompt: str) -> str:
    """What the simulator's default answer to the user message `prompt` contains."""
    return f"You asked: «{prompt}»"


@dataclasses.dataclass
class Sdk:
    client: openai.OpenAI
    requests: list[httpx2.Request]
    responses: list[httpx2.Response]

    def assert_one_request(self, method: str, path: str) -> None:
        sent = [f"{r.method} {r.url.path}" for r in self.requests]
        assert sent == [f"{method} {path}"], f"expected exactly one request {method} {path}, the SDK sent {sent}"

    def reset(self) -> None:
        self.requests.clear()
        self.responses.clear()


def make_sdk(gateway: Gateway, api_key: str) -> Sdk:
    requests: list[httpx2.Request] = []
    responses: list[httpx2.Response] = []
    http = httpx2.Client(
        trust_env=False,  # never a proxy from the environment
        event_hooks={"request": [requests.append], "response": [responses.append]},
    )
    client = openai.OpenAI(
        base_url=f"{gateway.base_url}/v1",
        api_key=api_key,
        max_retries=0,
        timeout=30.0,
        http_client=http,
        _strict_response_validation=True,
    )
    return Sdk(client, requests, responses)


@pytest.fixture
def sdk(gateway: Gateway) -> Iterator[Sdk]:
    s = make_sdk(gateway, gateway.api_key)
    with s.client:
        yield s


def user(prompt: str) -> list[dict]:
    return [{"role": "user", "content": prompt}]


def test_health_reports_ready_accounts(gateway: Gateway) -> None:
    assert gateway.health["status"] == "ok", gateway.health
    assert gateway.health["ready"] >= 1, f"no account ready: {gateway.health}"


def test_models_list(sdk: Sdk) -> None:
    page = sdk.client.models.list()
    ids = [m.id for m in page.data]
    assert len(ids) == MODEL_COUNT, f"expected {MODEL_COUNT} models, got {len(ids)}: {ids}"
    assert len([i for i in ids if i not in FLOW_MODELS]) == GEMINI_MODEL_COUNT, ids
    assert MODEL in ids, f"{MODEL} missing from {ids}"
    assert set(FLOW_MODELS) <= set(ids), f"Flow models missing from {ids}"
    assert len(set(ids)) == len(ids), f"duplicate model ids: {ids}"
    assert all(m.object == "model" and m.owned_by for m in page.data), page.data
    sdk.assert_one_request("GET", "/v1/models")


def test_chat_non_stream(sdk: Sdk) -> None:
    prompt = "Non-stream smoke: grüß dich, 世界?"
    completion = sdk.client.chat.completions.create(model=MODEL, messages=user(prompt))

    assert completion.object == "chat.completion", completion
    assert completion.model == MODEL, completion
    assert len(completion.choices) == 1, completion.choices
    choice = completion.choices[0]
    assert choice.message.role == "assistant", choice.message
    assert echo(prompt) in (choice.message.content or ""), f"echo missing from {choice.message.content!r}"
    assert choice.finish_reason == "stop", choice
    # Not a field of the SDK's type: pydantic keeps it as an extra (also readable as an attribute).
    extra = choice.message.model_extra or {}
    assert THOUGHT in (extra.get("reasoning_content") or ""), f"reasoning_content not reachable: {extra}"

    usage = completion.usage
    assert usage is not None, "no usage in a non-stream completion"
    assert usage.prompt_tokens > 0, usage
    assert usage.completion_tokens > 0, usage
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens, usage
    sdk.assert_one_request("POST", "/v1/chat/completions")


def test_chat_stream_with_usage(sdk: Sdk) -> None:
    prompt = "Stream smoke: ¿qué tal?"
    stream = sdk.client.chat.completions.create(
        model=MODEL,
        messages=user(prompt),
        stream=True,
        stream_options={"include_usage": True},
    )
    with stream:
        chunks = list(stream)

    assert len(chunks) >= 3, f"too few chunks: {chunks}"
    assert all(c.object == "chat.completion.chunk" for c in chunks), chunks
    assert len({c.id for c in chunks}) == 1, f"chunk ids differ: {[c.id for c in chunks]}"
    content_type = sdk.responses[0].headers.get("content-type", "")
    assert content_type.startswith("text/event-stream"), f"content-type {content_type!r}"

    first = chunks[0]
    assert first.choices and first.choices[0].delta.role == "assistant", f"first chunk: {first}"

    with_choices = [c for c in chunks if c.choices]
    content = "".join(c.choices[0].delta.content or "" for c in with_choices)
    assert echo(prompt) in content, f"echo missing from streamed content {content!r}"
    reasoning = "".join((c.choices[0].delta.model_extra or {}).get("reasoning_content") or "" for c in with_choices)
    assert THOUGHT in reasoning, f"reasoning_content not streamed: {reasoning!r}"

    finishes = [c.choices[0].finish_reason for c in with_choices if c.choices[0].finish_reason is not None]
    assert finishes == ["stop"], f"expected exactly one finish_reason 'stop', got {finishes}"

    last = chunks[-1]
    assert last.choices == [], f"last chunk should be the usage chunk with choices == []: {last}"
    usage = last.usage
    assert usage is not None, f"last chunk has no usage: {last}"
    assert usage.prompt_tokens > 0 and usage.completion_tokens > 0, usage
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens, usage
    with_usage = [i for i, c in enumerate(chunks[:-1]) if c.usage is not None]
    assert with_usage == [], f"chunks other than the last carry usage: indexes {with_usage}"
    sdk.assert_one_request("POST", "/v1/chat/completions")


def test_stream_helper_final_completion(sdk: Sdk) -> None:
    prompt = "Helper smoke: hello"
    with sdk.client.chat.completions.stream(
        model=MODEL,
        messages=user(prompt),
        stream_options={"include_usage": True},
    ) as stream:
        events = list(stream)
        final = stream.get_final_completion()

    types = [e.type for e in events]
    assert "content.delta" in types and "content.done" in types, f"events: {types}"
    done = next(e for e in events if e.type == "content.done")

    assert len(final.choices) == 1, final.choices
    message = final.choices[0].message
    assert echo(prompt) in (message.content or ""), f"echo missing from {message.content!r}"
    assert done.content == message.content, f"content.done {done.content!r} != final {message.content!r}"
    assert final.choices[0].finish_reason == "stop", final.choices[0]
    assert final.usage is not None and final.usage.total_tokens > 0, final.usage
    assert final.usage.total_tokens == final.usage.prompt_tokens + final.usage.completion_tokens, final.usage
    sdk.assert_one_request("POST", "/v1/chat/completions")


@pytest.mark.parametrize("stream", [False, True], ids=["non-stream", "stream"])
def test_unknown_model_is_not_found(sdk: Sdk, stream: bool) -> None:
    model = "no-such-model-xyz"
    with pytest.raises(openai.NotFoundError) as caught:
        sdk.client.chat.completions.create(model=model, messages=user("hi"), stream=stream)
    error = caught.value
    assert error.status_code == 404, error
    assert model in error.message, f"message does not name the model: {error.message!r}"
    sdk.assert_one_request("POST", "/v1/chat/completions")


def test_wrong_api_key_is_authentication_error(gateway: Gateway) -> None:
    sdk = make_sdk(gateway, "sk-not-the-right-key")
    with sdk.client, pytest.raises(openai.AuthenticationError) as caught:
        sdk.client.chat.completions.create(model=MODEL, messages=user("hi"))
    assert caught.value.status_code == 401, caught.value
    sdk.assert_one_request("POST", "/v1/chat/completions")


def test_models_retrieve(sdk: Sdk) -> None:
    model = sdk.client.models.retrieve(MODEL)
    assert model.id == MODEL and model.object == "model" and model.owned_by, model
    sdk.assert_one_request("GET", f"/v1/models/{MODEL}")


# ---- Responses API -------------------------------------------------------------------------


def test_responses_non_stream(sdk: Sdk) -> None:
    prompt = "Responses smoke: grüß dich"
    response = sdk.client.responses.create(model=MODEL, input=prompt, instructions="Be brief.")

    assert response.object == "response", response
    assert response.id.startswith("resp_"), response.id
    assert response.status == "completed", response
    assert response.model == MODEL, response
    # With instructions the upstream gets a transcript: a <system> block, then the user's turn.
    assert "Be brief." in response.output_text and f"Human: {prompt}" in response.output_text, (
        f"instructions or prompt missing from {response.output_text!r}"
    )
    kinds = [item.type for item in response.output]
    assert kinds == ["reasoning", "message"], kinds
    reasoning = response.output[0]
    assert reasoning.summary and reasoning.summary[0].text == THOUGHT, reasoning
    usage = response.usage
    assert usage is not None and usage.input_tokens > 0 and usage.output_tokens > 0, usage
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens, usage
    assert usage.output_tokens_details.reasoning_tokens > 0, usage
    sdk.assert_one_request("POST", "/v1/responses")


def test_responses_stream_helper_final_response(sdk: Sdk) -> None:
    prompt = "Responses helper smoke: hello"
    with sdk.client.responses.stream(model=MODEL, input=[{"role": "user", "content": prompt}]) as stream:
        events = list(stream)
        final = stream.get_final_response()

    types = [e.type for e in events]
    assert types[:2] == ["response.created", "response.in_progress"], types
    assert types[-1] == "response.completed", types
    assert "response.reasoning_summary_text.delta" in types, types
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    done = [e.text for e in events if e.type == "response.output_text.done"]
    assert echo(prompt) in deltas, f"echo missing from the deltas {deltas!r}"
    assert done == [deltas], f"output_text.done {done!r} != deltas {deltas!r}"
    assert final.output_text == deltas, f"final {final.output_text!r} != deltas {deltas!r}"
    seqs = [e.sequence_number for e in events]
    assert seqs == sorted(set(seqs)), f"sequence numbers not strictly increasing: {seqs}"
    assert final.usage is not None and final.usage.total_tokens > 0, final.usage
    content_type = sdk.responses[0].headers.get("content-type", "")
    assert content_type.startswith("text/event-stream"), f"content-type {content_type!r}"
    sdk.assert_one_request("POST", "/v1/responses")


def test_responses_create_stream_iteration(sdk: Sdk) -> None:
    prompt = "Responses raw stream smoke"
    stream = sdk.client.responses.create(model=MODEL, input=prompt, stream=True)
    with stream:
        events = list(stream)

    types = [e.type for e in events]
    assert types[0] == "response.created" and types[-1] == "response.completed", types
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    thinking = "".join(e.delta for e in events if e.type == "response.reasoning_summary_text.delta")
    assert echo(prompt) in text, text
    assert thinking == THOUGHT, thinking
    completed = events[-1].response
    assert completed.status == "completed" and completed.output_text == text, completed
    sdk.assert_one_request("POST", "/v1/responses")


# ---- Images API ----------------------------------------------------------------------------

IMAGE_MODEL = "gemini-2.5-flash-image"


def test_images_generate_b64_json(sdk: Sdk) -> None:
    result = sdk.client.images.generate(model=IMAGE_MODEL, prompt="a tiny dot", response_format="b64_json")
    assert result.created > 0, result
    assert result.data and len(result.data) == 1, result
    png = base64.b64decode(result.data[0].b64_json or "")
    assert png.startswith(b"\x89PNG\r\n\x1a\n"), png[:16]
    sdk.assert_one_request("POST", "/v1/images/generations")


def test_images_generate_url(sdk: Sdk, gateway: Gateway) -> None:
    result = sdk.client.images.generate(model=IMAGE_MODEL, prompt="a tiny dot", response_format="url")
    assert result.data and len(result.data) == 1, result
    url = result.data[0].url or ""
    assert url.startswith(f"{gateway.base_url}/media/"), url
    sdk.assert_one_request("POST", "/v1/images/generations")
    with httpx2.Client(trust_env=False) as http:
        got = http.get(url)
    assert got.status_code == 200, got
    assert got.headers["content-type"] == "image/png", got.headers
    assert got.content.startswith(b"\x89PNG"), got.content[:16]


def test_images_generate_with_a_text_model_is_bad_request(sdk: Sdk) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.client.images.generate(model=MODEL, prompt="a dot")
    assert (caught.value.body or {}).get("param") == "model", caught.value.body
    sdk.assert_one_request("POST", "/v1/images/generations")


# A prompt carrying this directive makes the simulator break its answer after the thought and the
# first text element (upstream_sim::CUT_DIRECTIVE): a real mid-stream upstream failure.
CUT = "[sim:cut]"


@pytest.fixture
def after_a_cut(gateway: Gateway) -> Iterator[None]:
    """The cut makes the account back off for a moment: wait until every account serves again."""
    yield
    gateway.wait_until_every_account_is_ready()


def test_chat_stream_cut_mid_answer_raises_after_the_partial_text(sdk: Sdk, after_a_cut: None) -> None:
    stream = sdk.client.chat.completions.create(model=MODEL, messages=user(f"cut {CUT}"), stream=True)
    received: list[str] = []
    with pytest.raises(openai.APIError) as raised:
        with stream:
            for chunk in stream:
                if chunk.choices:
                    received.append(chunk.choices[0].delta.content or "")
    assert "".join(received).startswith("Hello"), f"the partial text did not arrive first: {received}"
    assert "upstream" in raised.value.message, raised.value.message
    sdk.assert_one_request("POST", "/v1/chat/completions")


def test_responses_stream_cut_mid_answer_ends_with_response_failed(sdk: Sdk, after_a_cut: None) -> None:
    stream = sdk.client.responses.create(model=MODEL, input=f"cut {CUT}", stream=True)
    with stream:
        events = list(stream)
    types = [e.type for e in events]
    assert types[0] == "response.created" and types[-1] == "response.failed", types
    failed = events[-1].response
    assert failed.status == "failed" and failed.error is not None and failed.error.message, failed
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text.startswith("Hello"), text
    sdk.assert_one_request("POST", "/v1/responses")


# ---- Tool calling --------------------------------------------------------------------------
# With tools declared, a prompt carrying `[sim:call NAME {json arguments}]` makes the simulator's
# model call NAME with those arguments (one call per directive, all in one answer); once the
# conversation holds a tool result it answers `Done. The tool said: <the last result>`. Each loop
# below is two SDK calls: the call, then the tool's result sent back the SDK's own way.

WEATHER_PARAMETERS = {
    "type": "object",
    "properties": {"city": {"type": "string", "description": "The city's name"}},
    "required": ["city"],
    "additionalProperties": False,
}
TIME_PARAMETERS = {
    "type": "object",
    "properties": {"zone": {"type": "string"}},
    "required": ["zone"],
    "additionalProperties": False,
}
PARIS = {"city": "Paris"}
CALL_WEATHER = '[sim:call get_weather {"city": "Paris"}]'
CALL_TIME = '[sim:call get_time {"zone": "Europe/Paris"}]'
WEATHER_PROMPT = f"What is the weather in Paris? {CALL_WEATHER}"
WEATHER_RESULT = "21 C and sunny"
DONE = f"Done. The tool said: {WEATHER_RESULT}"
CALL_ID = re.compile(r"^call_[A-Za-z0-9]{24}$")  # docs/TOOLS.md: `call_` and 24 letters and digits


def chat_tool(name: str, parameters: dict, strict: bool = False) -> dict:
    function: dict[str, Any] = {"name": name, "description": f"The tool {name}", "parameters": parameters}
    if strict:
        function["strict"] = True  # the stream helper then parses the arguments (parsed_arguments)
    return {"type": "function", "function": function}


def chat_tools(strict: bool = False) -> list[dict]:
    return [chat_tool("get_weather", WEATHER_PARAMETERS, strict)]


def assert_no_protocol_text(text: str | None) -> None:
    """The gateway's tool-call blocks must never reach the client as text."""
    assert "<tool_call>" not in (text or "") and "</tool_call>" not in (text or ""), f"protocol text leaked: {text!r}"


def the_weather_call(calls: list[Any] | None) -> Any:
    """The one get_weather(Paris) call of a Chat Completions message."""
    assert calls is not None and len(calls) == 1, f"expected one tool call, got {calls}"
    call = calls[0]
    assert call.type == "function", call
    assert CALL_ID.match(call.id), f"call id {call.id!r}"
    assert call.function.name == "get_weather", call
    assert json.loads(call.function.arguments) == PARIS, call.function.arguments
    return call


def chat_result_turns(call: Any, content: str | None) -> list[dict]:
    """The assistant's call and the tool's result, as an agent sends them back."""
    return [
        {
            "role": "assistant",
            "content": content,
            "tool_calls": [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.function.name, "arguments": call.function.arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call.id, "content": WEATHER_RESULT},
    ]


def test_chat_tool_loop(sdk: Sdk) -> None:
    messages: list[Any] = user(WEATHER_PROMPT)
    first = sdk.client.chat.completions.create(model=MODEL, messages=messages, tools=chat_tools())
    sdk.assert_one_request("POST", "/v1/chat/completions")
    assert len(first.choices) == 1, first.choices
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    assert choice.message.role == "assistant", choice.message
    call = the_weather_call(choice.message.tool_calls)
    assert_no_protocol_text(choice.message.content)
    assert first.usage is not None and first.usage.completion_tokens > 0, first.usage

    sdk.reset()
    messages += chat_result_turns(call, choice.message.content)
    second = sdk.client.chat.completions.create(model=MODEL, messages=messages, tools=chat_tools())
    sdk.assert_one_request("POST", "/v1/chat/completions")
    final = second.choices[0]
    assert final.finish_reason == "stop", final
    assert final.message.tool_calls is None, final.message
    assert final.message.content == DONE, final.message.content


def test_chat_tool_loop_stream_helper(sdk: Sdk) -> None:
    messages: list[Any] = user(WEATHER_PROMPT)
    with sdk.client.chat.completions.stream(
        model=MODEL,
        messages=messages,
        tools=chat_tools(strict=True),
        stream_options={"include_usage": True},
    ) as stream:
        events = list(stream)
        first = stream.get_final_completion()
    sdk.assert_one_request("POST", "/v1/chat/completions")
    content_type = sdk.responses[0].headers.get("content-type", "")
    assert content_type.startswith("text/event-stream"), f"content-type {content_type!r}"

    types = [e.type for e in events]
    deltas = "".join(e.arguments_delta for e in events if e.type == "tool_calls.function.arguments.delta")
    assert json.loads(deltas) == PARIS, f"argument deltas {deltas!r}"
    done = [e for e in events if e.type == "tool_calls.function.arguments.done"]
    assert len(done) == 1, types
    assert (done[0].index, done[0].name, done[0].arguments) == (0, "get_weather", deltas), done[0]
    assert done[0].parsed_arguments == PARIS, done[0]
    streamed_text = "".join(e.delta for e in events if e.type == "content.delta")
    assert_no_protocol_text(streamed_text)

    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    call = the_weather_call(choice.message.tool_calls)
    assert call.function.parsed_arguments == PARIS, call.function
    assert (choice.message.content or "") == streamed_text, (choice.message.content, streamed_text)
    assert first.usage is not None and first.usage.total_tokens > 0, first.usage

    sdk.reset()
    messages += chat_result_turns(call, choice.message.content)
    with sdk.client.chat.completions.stream(model=MODEL, messages=messages, tools=chat_tools(strict=True)) as stream:
        events = list(stream)
        second = stream.get_final_completion()
    sdk.assert_one_request("POST", "/v1/chat/completions")
    assert not any(e.type.startswith("tool_calls.") for e in events), [e.type for e in events]
    text = "".join(e.delta for e in events if e.type == "content.delta")
    assert text == DONE, text
    final = second.choices[0]
    assert final.finish_reason == "stop", final
    assert not final.message.tool_calls, final.message
    assert final.message.content == DONE, final.message.content


def accumulate_tool_calls(chunks: list[Any]) -> tuple[list[dict], list[str]]:
    """The tool calls of a raw Chat Completions stream, put together from their deltas by index
    (id, type and name in the first delta of each call, the arguments in pieces), and the
    finish reasons."""
    calls: dict[int, dict] = {}
    finishes: list[str] = []
    for chunk in chunks:
        for choice in chunk.choices:
            if choice.finish_reason is not None:
                finishes.append(choice.finish_reason)
            for delta in choice.delta.tool_calls or []:
                if delta.index not in calls:
                    assert delta.id and delta.type == "function" and delta.function and delta.function.name, (
                        f"the first delta of call {delta.index} lacks its id, type or name: {delta}"
                    )
                    calls[delta.index] = {"id": delta.id, "name": delta.function.name, "arguments": ""}
                else:
                    assert delta.id is None or delta.id == calls[delta.index]["id"], f"the id changed: {delta}"
                calls[delta.index]["arguments"] += (delta.function.arguments if delta.function else None) or ""
    assert sorted(calls) == list(range(len(calls))), f"call indexes {sorted(calls)}"
    return [calls[i] for i in range(len(calls))], finishes


@pytest.mark.parametrize("stream", [False, True], ids=["non-stream", "stream"])
def test_chat_two_directives_make_two_parallel_calls(sdk: Sdk, stream: bool) -> None:
    tools = [chat_tool("get_weather", WEATHER_PARAMETERS), chat_tool("get_time", TIME_PARAMETERS)]
    messages = user(f"Weather and time in Paris? {CALL_WEATHER} {CALL_TIME}")
    if stream:
        raw = sdk.client.chat.completions.create(
            model=MODEL, messages=messages, tools=tools, parallel_tool_calls=True, stream=True
        )
        with raw:
            chunks = list(raw)
        calls, finishes = accumulate_tool_calls(chunks)
        assert finishes == ["tool_calls"], finishes
    else:
        completion = sdk.client.chat.completions.create(
            model=MODEL, messages=messages, tools=tools, parallel_tool_calls=True
        )
        choice = completion.choices[0]
        assert choice.finish_reason == "tool_calls", choice
        calls = [
            {"id": c.id, "name": c.function.name, "arguments": c.function.arguments}
            for c in choice.message.tool_calls or []
        ]
    sdk.assert_one_request("POST", "/v1/chat/completions")
    assert [c["name"] for c in calls] == ["get_weather", "get_time"], calls
    assert [json.loads(c["arguments"]) for c in calls] == [PARIS, {"zone": "Europe/Paris"}], calls
    assert all(CALL_ID.match(c["id"]) for c in calls) and calls[0]["id"] != calls[1]["id"], calls


def test_chat_parallel_tool_calls_false_keeps_only_the_first_call(sdk: Sdk) -> None:
    tools = [chat_tool("get_weather", WEATHER_PARAMETERS), chat_tool("get_time", TIME_PARAMETERS)]
    completion = sdk.client.chat.completions.create(
        model=MODEL,
        messages=user(f"Weather and time in Paris? {CALL_WEATHER} {CALL_TIME}"),
        tools=tools,
        parallel_tool_calls=False,
    )
    sdk.assert_one_request("POST", "/v1/chat/completions")
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    the_weather_call(choice.message.tool_calls)
    # The simulator writes both blocks whatever the prompt asks; with one call allowed the answer
    # ends at the first (docs/TOOLS.md), so nothing of the second reaches the client.
    assert "get_time" not in (choice.message.content or ""), choice.message.content
    assert "<tool_call>" not in (choice.message.content or ""), choice.message.content


@pytest.mark.parametrize(
    "tool_choice",
    ["required", {"type": "function", "function": {"name": "get_weather"}}],
    ids=["required", "named"],
)
def test_chat_forced_tool_choice_yields_the_call(sdk: Sdk, tool_choice: Any) -> None:
    tools = [chat_tool("get_weather", WEATHER_PARAMETERS), chat_tool("get_time", TIME_PARAMETERS)]
    completion = sdk.client.chat.completions.create(
        model=MODEL, messages=user(WEATHER_PROMPT), tools=tools, tool_choice=tool_choice
    )
    sdk.assert_one_request("POST", "/v1/chat/completions")
    assert sdk.responses[0].status_code == 200, sdk.responses[0]
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    the_weather_call(choice.message.tool_calls)


# Responses API: `function_call` output items, and `function_call_output` items back.


def responses_tools(strict: bool = False) -> list[dict]:
    return [
        {
            "type": "function",
            "name": "get_weather",
            "description": "The current weather in a city",
            "parameters": WEATHER_PARAMETERS,
            "strict": strict,
        }
    ]


def the_responses_weather_call(response: Any) -> Any:
    calls = [item for item in response.output if item.type == "function_call"]
    assert len(calls) == 1, f"expected one function_call item: {response.output}"
    call = calls[0]
    assert response.output[-1] is call, f"the call is not the last output item: {[i.type for i in response.output]}"
    assert call.name == "get_weather", call
    assert CALL_ID.match(call.call_id), f"call_id {call.call_id!r}"
    assert call.id and call.id.startswith("fc_"), f"item id {call.id!r}"
    assert call.status == "completed", call
    assert json.loads(call.arguments) == PARIS, call.arguments
    assert_no_protocol_text(response.output_text)
    return call


def test_responses_tool_loop(sdk: Sdk) -> None:
    history: list[Any] = [{"role": "user", "content": WEATHER_PROMPT}]
    first = sdk.client.responses.create(model=MODEL, input=history, tools=responses_tools())
    sdk.assert_one_request("POST", "/v1/responses")
    assert first.status == "completed", first
    call = the_responses_weather_call(first)
    assert first.usage is not None and first.usage.output_tokens > 0, first.usage

    sdk.reset()
    # As the OpenAI guide has it: the whole output (reasoning, text, the call) goes back, then
    # the result.
    history += first.output
    history.append({"type": "function_call_output", "call_id": call.call_id, "output": WEATHER_RESULT})
    second = sdk.client.responses.create(model=MODEL, input=history, tools=responses_tools())
    sdk.assert_one_request("POST", "/v1/responses")
    assert second.status == "completed", second
    assert [i.type for i in second.output if i.type == "function_call"] == [], second.output
    assert second.output_text == DONE, second.output_text


def test_responses_tool_loop_stream_helper(sdk: Sdk) -> None:
    history: list[Any] = [{"role": "user", "content": WEATHER_PROMPT}]
    with sdk.client.responses.stream(model=MODEL, input=history, tools=responses_tools(strict=True)) as stream:
        events = list(stream)
        first = stream.get_final_response()
    sdk.assert_one_request("POST", "/v1/responses")
    types = [e.type for e in events]
    assert types[0] == "response.created" and types[-1] == "response.completed", types
    seqs = [e.sequence_number for e in events]
    assert seqs == sorted(set(seqs)), f"sequence numbers not strictly increasing: {seqs}"

    added = [e.item for e in events if e.type == "response.output_item.added" and e.item.type == "function_call"]
    assert len(added) == 1 and added[0].name == "get_weather", added
    deltas = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    assert json.loads(deltas) == PARIS, deltas
    done = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert len(done) == 1 and done[0].arguments == deltas and done[0].item_id == added[0].id, done
    finished = [e.item for e in events if e.type == "response.output_item.done" and e.item.type == "function_call"]
    assert len(finished) == 1 and finished[0].arguments == deltas, finished

    call = the_responses_weather_call(first)
    assert call.id == added[0].id and call.call_id == added[0].call_id, (call, added[0])
    assert call.parsed_arguments == PARIS, call

    sdk.reset()
    # This time only the call item goes back (as agents that keep no reasoning do).
    history.append(
        {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments}
    )
    history.append({"type": "function_call_output", "call_id": call.call_id, "output": WEATHER_RESULT})
    with sdk.client.responses.stream(model=MODEL, input=history, tools=responses_tools(strict=True)) as stream:
        events = list(stream)
        second = stream.get_final_response()
    sdk.assert_one_request("POST", "/v1/responses")
    types = [e.type for e in events]
    assert not any("function_call" in t for t in types), types
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == DONE and second.output_text == DONE, (text, second.output_text)
    assert second.status == "completed", second


@pytest.mark.parametrize(
    "tool_choice",
    ["required", {"type": "function", "name": "get_weather"}],
    ids=["required", "named"],
)
def test_responses_forced_tool_choice_yields_the_call(sdk: Sdk, tool_choice: Any) -> None:
    tools = responses_tools() + [
        {"type": "function", "name": "get_time", "parameters": TIME_PARAMETERS, "strict": False}
    ]
    response = sdk.client.responses.create(model=MODEL, input=WEATHER_PROMPT, tools=tools, tool_choice=tool_choice)
    sdk.assert_one_request("POST", "/v1/responses")
    assert sdk.responses[0].status_code == 200, sdk.responses[0]
    assert response.status == "completed", response
    the_responses_weather_call(response)


# --- Flow (Imagen / Veo through the simulator's Flow upstream; see conftest) --------------------

FLOW_IMAGE_MODEL = "imagen-4.0-generate-preview-landscape"
FLOW_VIDEO_MODEL = "veo_3_1_t2v_fast_landscape"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# What the Flow simulator serves for every video (FLOW_VIDEO_MP4 in tests/simulator/src/flow):
# an `ftyp` box (mp42) and an empty `mdat` box.
FLOW_VIDEO_MP4 = (
    b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom"
    b"\x00\x00\x00\x08mdat"
)


def test_images_generate_a_flow_image_as_b64_json(sdk: Sdk) -> None:
    result = sdk.client.images.generate(
        model=FLOW_IMAGE_MODEL, prompt="Flow smoke: a lighthouse at dusk", response_format="b64_json"
    )
    sdk.assert_one_request("POST", "/v1/images/generations")
    assert result.created > 0, result
    assert result.data is not None and len(result.data) == 1, result
    image = result.data[0]
    assert image.b64_json and image.url is None, image
    png = base64.b64decode(image.b64_json, validate=True)
    assert png.startswith(PNG_MAGIC), f"not a PNG: {png[:16]!r}"


# Every method of the SDK's video resource is marked deprecated (the Sora API's shutdown date).
@pytest.mark.filterwarnings("ignore:The Sora API:DeprecationWarning")
def test_videos_create_poll_and_download_a_flow_video(sdk: Sdk) -> None:
    prompt = "Flow smoke: a paper boat on a pond"
    created = sdk.client.videos.create(model=FLOW_VIDEO_MODEL, prompt=prompt)
    sdk.assert_one_request("POST", "/v1/videos")
    assert created.object == "video" and created.id, created
    assert created.status in ("queued", "in_progress"), created
    assert created.model == FLOW_VIDEO_MODEL and created.prompt == prompt, created
    assert created.size in ("1280x720", "1792x1024"), f"not a landscape size: {created.size}"

    sdk.reset()
    video = sdk.client.videos.poll(created.id, poll_interval_ms=200)
    polls = [f"{r.method} {r.url.path}" for r in sdk.requests]
    assert polls and set(polls) == {f"GET /v1/videos/{created.id}"}, polls
    assert video.status == "completed", video
    assert video.id == created.id and video.model == FLOW_VIDEO_MODEL, video
    assert video.progress == 100 and video.error is None, video
    assert video.completed_at is not None and video.completed_at >= video.created_at, video
    assert video.seconds == "8", video  # every Flow clip is 8 s

    retrieved = sdk.client.videos.retrieve(created.id)
    assert retrieved.status == "completed" and retrieved.id == created.id, retrieved

    sdk.reset()
    content = sdk.client.videos.download_content(created.id)
    sdk.assert_one_request("GET", f"/v1/videos/{created.id}/content")
    content_type = sdk.responses[0].headers.get("content-type", "")
    assert content_type.startswith("video/mp4"), f"content-type {content_type!r}"
    assert content.content == FLOW_VIDEO_MP4, f"not the simulator's MP4: {content.content[:32]!r}"


# ---- Web-search citations (issue 16) ----------------------------------------------------------

# Grounded answers: conftest's GROUNDED_* (the simulator's `[sim:grounded]` answer).


def assert_cited(text: str, cites: list[tuple[str, int, int, str, str]]) -> None:
    """`cites` are (type, start_index, end_index, url, title); the offsets are code points of
    `text` (Python's string indexes): `text[start:end]` is the cited text."""
    assert text == GROUNDED_TEXT, text
    got = [(kind, text[start:end], url, title) for kind, start, end, url, title in cites]
    assert got == [("url_citation", cited, url, title) for cited, url, title in GROUNDED_CITES], got
    # "Café 𝄞 au lait ☕ is " is 20 code points (21 UTF-16 units, 24 UTF-8 bytes).
    assert cites[0][1:3] == (20, 40), cites


def chat_cites(annotations: list[Any] | None) -> list[tuple[str, int, int, str, str]]:
    return [
        (a.type, a.url_citation.start_index, a.url_citation.end_index, a.url_citation.url, a.url_citation.title)
        for a in annotations or []
    ]


def test_chat_grounded_answer_has_url_citations(sdk: Sdk) -> None:
    completion = sdk.client.chat.completions.create(model=SEARCH_MODEL, messages=user(GROUNDED_PROMPT))
    message = completion.choices[0].message
    assert_cited(message.content or "", chat_cites(message.annotations))
    sdk.assert_one_request("POST", "/v1/chat/completions")


def test_chat_grounded_stream_has_url_citations(sdk: Sdk) -> None:
    stream = sdk.client.chat.completions.create(
        model=SEARCH_MODEL,
        messages=user(GROUNDED_PROMPT),
        stream=True,
        stream_options={"include_usage": True},
    )
    content = ""
    annotations: list[dict] = []
    with stream:
        for chunk in stream:
            if not chunk.choices:
                continue
            delta = chunk.choices[0].delta
            content += delta.content or ""
            # Not a field of the SDK's ChoiceDelta: kept as an extra, in one delta.
            extra = (delta.model_extra or {}).get("annotations")
            if extra is not None:
                assert not annotations, "annotations in two deltas"
                annotations = extra
    cites = [
        (a["type"], a["url_citation"]["start_index"], a["url_citation"]["end_index"],
         a["url_citation"]["url"], a["url_citation"]["title"])
        for a in annotations
    ]
    assert_cited(content, cites)
    sdk.assert_one_request("POST", "/v1/chat/completions")

    # The stream helper accumulates them into the final message, typed.
    sdk.reset()
    with sdk.client.chat.completions.stream(model=SEARCH_MODEL, messages=user(GROUNDED_PROMPT)) as helper:
        for _ in helper:
            pass
        final = helper.get_final_completion()
    message = final.choices[0].message
    assert_cited(message.content or "", chat_cites(message.annotations))
    sdk.assert_one_request("POST", "/v1/chat/completions")


def responses_cites(response: Any) -> tuple[str, list[tuple[str, int, int, str, str]]]:
    messages = [item for item in response.output if item.type == "message"]
    assert len(messages) == 1, response.output
    part = messages[0].content[0]
    assert part.type == "output_text", part
    return part.text, [(a.type, a.start_index, a.end_index, a.url, a.title) for a in part.annotations]


def test_responses_grounded_answer_has_url_citations(sdk: Sdk) -> None:
    response = sdk.client.responses.create(model=SEARCH_MODEL, input=GROUNDED_PROMPT)
    assert response.output_text == GROUNDED_TEXT, response.output_text
    assert_cited(*responses_cites(response))
    sdk.assert_one_request("POST", "/v1/responses")


def test_responses_grounded_stream_announces_url_citations(sdk: Sdk) -> None:
    with sdk.client.responses.stream(model=SEARCH_MODEL, input=GROUNDED_PROMPT) as stream:
        events = list(stream)
        final = stream.get_final_response()

    added = [e for e in events if e.type == "response.output_text.annotation.added"]
    assert [e.annotation_index for e in added] == list(range(len(GROUNDED_CITES))), added
    message_id = next(item.id for item in final.output if item.type == "message")
    assert all(e.item_id == message_id and e.content_index == 0 for e in added), added
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    def field(a: Any, key: str) -> Any:  # a typed annotation, or a dict in SDKs that keep it untyped
        return a[key] if isinstance(a, dict) else getattr(a, key)

    streamed = [
        tuple(field(e.annotation, k) for k in ("type", "start_index", "end_index", "url", "title")) for e in added
    ]
    assert_cited(text, streamed)  # type: ignore[arg-type]
    # Each came after the deltas it covers, before the text was done.
    done_at = next(i for i, e in enumerate(events) if e.type == "response.output_text.done")
    assert all(events.index(e) < done_at for e in added)
    assert_cited(*responses_cites(final))
    sdk.assert_one_request("POST", "/v1/responses")
