"""Smoke test: the official OpenAI Python SDK against the running `business2api` binary.

Every client is built with `max_retries=0` and `_strict_response_validation=True` (a response
that does not match the SDK's types is an error, not a silently half-filled object), and an
httpx2 client that counts the HTTP requests the SDK sends: each SDK call must be exactly one
request (no hidden retries, no extra round trips).
"""

from __future__ import annotations

import base64
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


def test_responses_forced_tool_is_bad_request(sdk: Sdk) -> None:
    tools = [{"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {}}}]
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.client.responses.create(model=MODEL, input="weather?", tools=tools, tool_choice="required")
    assert caught.value.status_code == 400, caught.value
    assert (caught.value.body or {}).get("param") == "tool_choice", caught.value.body
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
