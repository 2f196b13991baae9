"""Smoke test: the official OpenAI Python SDK against the running `business2api` binary.

Every client is built with `max_retries=0` and `_strict_response_validation=True` (a response
that does not match the SDK's types is an error, not a silently half-filled object), and an
httpx2 client that counts the HTTP requests the SDK sends: each SDK call must be exactly one
request (no hidden retries, no extra round trips).
"""

from __future__ import annotations

import dataclasses
from typing import Iterator

import httpx2
import openai
import pytest

from conftest import Gateway

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
    assert len(ids) == 28, f"expected 28 models, got {len(ids)}: {ids}"
    assert MODEL in ids, f"{MODEL} missing from {ids}"
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
