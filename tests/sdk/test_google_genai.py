"""The official google-genai Python SDK against the running `business2api` binary, with
`api_version="v1beta"` and with the SDK's default (which is `v1`: asserted from the request path).

Every client has retries off (`HttpRetryOptions(attempts=1)`) and its own httpx2 client whose
event hooks record every HTTP request: each SDK call must be exactly one request, under the
expected version prefix.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Iterator, Optional

import httpx2
import pytest
from google import genai
from google.genai import errors, types

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
VERSIONS = ["v1beta", None]  # None: the SDK's default


def echo(prompt: str) -> str:
    """What the simulator's default answer to the user message `prompt` contains."""
    return f"You asked: «{prompt}»"


@dataclasses.dataclass
class Sdk:
    client: genai.Client
    requests: list[httpx2.Request]
    prefix: str  # "/v1beta/" or "/v1/"

    def take(self) -> list[str]:
        sent = [f"{r.method} {r.url.path}" for r in self.requests]
        self.requests.clear()
        return sent

    def assert_one_request(self, method: str, path: str) -> httpx2.Request:
        """Exactly one request since the last check: `method` `<prefix><path>`."""
        last = self.requests[-1] if self.requests else None
        sent = self.take()
        assert sent == [f"{method} {self.prefix}{path}"], (
            f"expected exactly one request {method} {self.prefix}{path}, the SDK sent {sent}"
        )
        assert last is not None
        return last


def make_sdk(gateway: Gateway, version: Optional[str], api_key: Optional[str] = None) -> Sdk:
    requests: list[httpx2.Request] = []
    http = httpx2.Client(
        trust_env=False,  # never a proxy from the environment
        timeout=30.0,
        event_hooks={"request": [requests.append]},
    )
    client = genai.Client(
        api_key=api_key or gateway.api_key,
        http_options=types.HttpOptions(
            base_url=gateway.base_url,
            api_version=version,
            retry_options=types.HttpRetryOptions(attempts=1),
            httpx_client=http,
        ),
    )
    return Sdk(client, requests, f"/{version or 'v1'}/")


@pytest.fixture(params=VERSIONS, ids=["v1beta", "default-v1"])
def sdk(request: pytest.FixtureRequest, gateway: Gateway) -> Iterator[Sdk]:
    s = make_sdk(gateway, request.param)
    yield s
    s.client.close()


def test_the_default_api_version_is_v1(gateway: Gateway) -> None:
    s = make_sdk(gateway, None)
    s.client.models.get(model=MODEL)
    assert s.take() == [f"GET /v1/models/{MODEL}"]
    s.client.close()


def test_generate_content(sdk: Sdk) -> None:
    response = sdk.client.models.generate_content(model=MODEL, contents="hello there")
    request = sdk.assert_one_request("POST", f"models/{MODEL}:generateContent")
    assert request.headers["x-goog-api-key"] == sdk.client._api_client.api_key
    assert echo("hello there") in response.text
    assert THOUGHT not in response.text, "thoughts are not part of .text"
    parts = response.candidates[0].content.parts
    thoughts = [p.text for p in parts if p.thought]
    assert thoughts == [THOUGHT], parts
    assert response.candidates[0].finish_reason == types.FinishReason.STOP
    assert response.candidates[0].content.role == "model"
    usage = response.usage_metadata
    assert usage.prompt_token_count >= 1 and usage.candidates_token_count >= 1
    assert usage.thoughts_token_count >= 1
    assert usage.total_token_count == (
        usage.prompt_token_count + usage.candidates_token_count + usage.thoughts_token_count
    )
    assert response.model_version == MODEL
    assert response.response_id


def test_generate_content_with_config_tools_and_image(sdk: Sdk) -> None:
    png = b"\x89PNG\r\n\x1a\nnot really an image"
    config = types.GenerateContentConfig(
        system_instruction="Be terse.",
        temperature=0.2,
        top_p=0.9,
        max_output_tokens=256,
        stop_sequences=["END"],
        thinking_config=types.ThinkingConfig(include_thoughts=False),
        tools=[
            types.Tool(
                function_declarations=[
                    types.FunctionDeclaration(
                        name="get_weather",
                        description="The weather in a city",
                        parameters_json_schema={
                            "type": "object",
                            "properties": {"city": {"type": "string"}},
                        },
                    )
                ]
            )
        ],
        tool_config=types.ToolConfig(
            function_calling_config=types.FunctionCallingConfig(mode=types.FunctionCallingConfigMode.AUTO)
        ),
        safety_settings=[
            types.SafetySetting(
                category=types.HarmCategory.HARM_CATEGORY_HARASSMENT,
                threshold=types.HarmBlockThreshold.BLOCK_NONE,
            )
        ],
    )
    response = sdk.client.models.generate_content(
        model=MODEL,
        contents=[types.Part.from_bytes(data=png, mime_type="image/png"), "describe"],
        config=config,
    )
    sdk.assert_one_request("POST", f"models/{MODEL}:generateContent")
    assert response.text and "You asked" in response.text
    assert not any(p.thought for p in response.candidates[0].content.parts), "includeThoughts false"


def test_generate_content_stream(sdk: Sdk) -> None:
    chunks = list(sdk.client.models.generate_content_stream(model=MODEL, contents="stream me"))
    request = sdk.assert_one_request("POST", f"models/{MODEL}:streamGenerateContent")
    assert request.url.params.get("alt") == "sse"
    text = "".join(c.text or "" for c in chunks)
    assert echo("stream me") in text
    thoughts = "".join(
        p.text for c in chunks for p in (c.candidates[0].content.parts or []) if p.thought
    )
    assert thoughts == THOUGHT
    last = chunks[-1]
    assert last.candidates[0].finish_reason == types.FinishReason.STOP
    assert last.usage_metadata.total_token_count >= 2
    assert all(c.candidates[0].finish_reason is None for c in chunks[:-1])


def test_count_tokens(sdk: Sdk) -> None:
    short = sdk.client.models.count_tokens(model=MODEL, contents="hi")
    sdk.assert_one_request("POST", f"models/{MODEL}:countTokens")
    long = sdk.client.models.count_tokens(model=MODEL, contents="many words here " * 40)
    sdk.assert_one_request("POST", f"models/{MODEL}:countTokens")
    assert isinstance(short.total_tokens, int) and short.total_tokens >= 1
    assert long.total_tokens > short.total_tokens + 100


def test_models_list(sdk: Sdk) -> None:
    models = list(sdk.client.models.list())
    sent = sdk.take()
    assert len(sent) == 1 and sent[0].startswith(f"GET {sdk.prefix}models"), sent
    names = [m.name for m in models]
    assert len(names) == MODEL_COUNT and len(set(names)) == MODEL_COUNT, names
    assert f"models/{MODEL}" in names
    assert {f"models/{m}" for m in FLOW_MODELS} <= set(names), names
    gemini = [n for n in names if n.removeprefix("models/") not in FLOW_MODELS]
    assert len(gemini) == GEMINI_MODEL_COUNT, names
    assert all(n.startswith("models/gemini-") for n in gemini), names
    flash = next(m for m in models if m.name == f"models/{MODEL}")
    assert set(flash.supported_actions) >= {"generateContent", "streamGenerateContent", "countTokens"}
    assert flash.input_token_limit and flash.output_token_limit
    assert flash.display_name == "Gemini 2.5 Flash"


def test_models_get(sdk: Sdk) -> None:
    model = sdk.client.models.get(model=MODEL)
    sdk.assert_one_request("GET", f"models/{MODEL}")
    assert model.name == f"models/{MODEL}"
    assert "generateContent" in model.supported_actions


def test_unknown_model_is_a_404_client_error(sdk: Sdk) -> None:
    with pytest.raises(errors.ClientError) as caught:
        sdk.client.models.generate_content(model="gpt-4o", contents="x")
    assert caught.value.code == 404
    assert caught.value.status == "NOT_FOUND"
    sdk.assert_one_request("POST", "models/gpt-4o:generateContent")
    with pytest.raises(errors.ClientError) as caught:
        for _ in sdk.client.models.generate_content_stream(model="gpt-4o", contents="x"):
            pass
    assert caught.value.code == 404
    sdk.assert_one_request("POST", "models/gpt-4o:streamGenerateContent")
    with pytest.raises(errors.ClientError) as caught:
        sdk.client.models.get(model="gpt-4o")
    assert caught.value.code == 404
    sdk.assert_one_request("GET", "models/gpt-4o")


@pytest.mark.parametrize("version", VERSIONS, ids=["v1beta", "default-v1"])
def test_wrong_api_key_is_a_401_client_error(gateway: Gateway, version: Optional[str]) -> None:
    s = make_sdk(gateway, version, api_key="not-the-key")
    with pytest.raises(errors.ClientError) as caught:
        s.client.models.generate_content(model=MODEL, contents="x")
    assert caught.value.code == 401
    assert caught.value.status == "UNAUTHENTICATED"
    assert "not-the-key" not in str(caught.value)
    s.assert_one_request("POST", f"models/{MODEL}:generateContent")
    s.client.close()


# A prompt carrying this directive makes the simulator break its answer after the thought and the
# first text element (upstream_sim::CUT_DIRECTIVE): a real mid-stream upstream failure.
CUT = "[sim:cut]"


@pytest.fixture
def after_a_cut(gateway: Gateway) -> Iterator[None]:
    """The cut makes the account back off for a moment: wait until every account serves again."""
    yield
    gateway.wait_until_every_account_is_ready()


def test_a_cut_mid_stream_raises_after_the_partial_text(sdk: Sdk, after_a_cut: None) -> None:
    received: list[str] = []
    with pytest.raises(errors.APIError) as raised:
        for chunk in sdk.client.models.generate_content_stream(model=MODEL, contents=f"cut {CUT}"):
            received.append(chunk.text or "")
    assert "".join(received).startswith("Hello"), f"the partial text did not arrive first: {received}"
    assert raised.value.code == 502, raised.value
    sdk.assert_one_request("POST", f"models/{MODEL}:streamGenerateContent")


# ---- Function calling ----------------------------------------------------------------------
# With function declarations, a prompt carrying `[sim:call NAME {json arguments}]` makes the
# simulator's model call NAME with those arguments (one call per directive, all in one answer);
# once the conversation holds a function response it answers `Done. The tool said: <the last
# response>` (a functionResponse reaches the model as its `response` object's JSON).

WEATHER_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string", "description": "The city's name"}},
    "required": ["city"],
}
PARIS = {"city": "Paris"}
CALL_WEATHER = '[sim:call get_weather {"city": "Paris"}]'
WEATHER_PROMPT = f"What is the weather in Paris? {CALL_WEATHER}"
WEATHER_RESULT = "21 C and sunny"
DONE_PREFIX = "Done. The tool said: "


def weather_config(tool_config: Optional[types.ToolConfig] = None) -> types.GenerateContentConfig:
    return types.GenerateContentConfig(
        tools=[
            types.Tool(
                function_declarations=[
                    types.FunctionDeclaration(
                        name="get_weather",
                        description="The current weather in a city",
                        parameters_json_schema=WEATHER_SCHEMA,
                    ),
                    types.FunctionDeclaration(
                        name="get_time",
                        description="The time in a zone",
                        parameters_json_schema={"type": "object", "properties": {"zone": {"type": "string"}}},
                    ),
                ]
            )
        ],
        tool_config=tool_config,
        # Declarations only, no Python callables: the loop is this test's own.
        automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
    )


def the_weather_call(calls: Optional[list[types.FunctionCall]]) -> types.FunctionCall:
    assert calls is not None and len(calls) == 1, f"expected one function call, got {calls}"
    call = calls[0]
    assert call.name == "get_weather", call
    assert call.args == PARIS, call.args
    return call


def assert_no_protocol_text(parts: list[types.Part]) -> None:
    text = "".join(p.text or "" for p in parts if not p.thought)
    assert "<tool_call>" not in text and "</tool_call>" not in text, f"protocol text leaked: {text!r}"


def function_response(call: types.FunctionCall) -> types.Content:
    """The function's result for `call`, as the SDK's docs send it back."""
    return types.Content(
        role="user",
        parts=[
            types.Part(
                function_response=types.FunctionResponse(
                    id=call.id, name=call.name, response={"result": WEATHER_RESULT}
                )
            )
        ],
    )


def assert_done(text: Optional[str]) -> None:
    assert text and text.startswith(DONE_PREFIX), text
    assert json.loads(text[len(DONE_PREFIX) :]) == {"result": WEATHER_RESULT}, text


def test_function_calling_loop(sdk: Sdk) -> None:
    history = [types.Content(role="user", parts=[types.Part.from_text(text=WEATHER_PROMPT)])]
    first = sdk.client.models.generate_content(model=MODEL, contents=history, config=weather_config())
    sdk.assert_one_request("POST", f"models/{MODEL}:generateContent")
    candidate = first.candidates[0]
    assert candidate.finish_reason == types.FinishReason.STOP, candidate.finish_reason
    assert candidate.content.role == "model", candidate.content
    call = the_weather_call(first.function_calls)
    parts = candidate.content.parts
    calling = [p for p in parts if p.function_call]
    assert len(calling) == 1 and parts[-1] is calling[0], f"the call is not the last part: {parts}"
    assert calling[0].thought_signature, "a functionCall part without a thoughtSignature"
    assert_no_protocol_text(parts)
    assert first.usage_metadata.candidates_token_count >= 1, first.usage_metadata

    # The model's content goes back as it came (thought signature included), then the response.
    history += [candidate.content, function_response(call)]
    second = sdk.client.models.generate_content(model=MODEL, contents=history, config=weather_config())
    sdk.assert_one_request("POST", f"models/{MODEL}:generateContent")
    assert second.function_calls is None, second.function_calls
    assert second.candidates[0].finish_reason == types.FinishReason.STOP
    assert_done(second.text)


def test_function_calling_loop_stream(sdk: Sdk) -> None:
    history = [types.Content(role="user", parts=[types.Part.from_text(text=WEATHER_PROMPT)])]
    chunks = list(sdk.client.models.generate_content_stream(model=MODEL, contents=history, config=weather_config()))
    request = sdk.assert_one_request("POST", f"models/{MODEL}:streamGenerateContent")
    assert request.url.params.get("alt") == "sse"
    call = the_weather_call([fc for c in chunks for fc in (c.function_calls or [])])
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.STOP
    assert all(c.candidates[0].finish_reason is None for c in chunks[:-1])
    # As gemini-cli keeps a streamed turn: every part of every chunk, in order, as one content.
    parts = [p for c in chunks for p in (c.candidates[0].content.parts or [])]
    assert_no_protocol_text(parts)
    # The last chunk may carry only the finish reason and an empty text part.
    with_data = [p for p in parts if p.text != ""]
    assert with_data[-1].function_call is not None, f"the call is not the last part: {parts}"
    assert with_data[-1].thought_signature, "a functionCall part without a thoughtSignature"

    history += [types.Content(role="model", parts=parts), function_response(call)]
    chunks = list(sdk.client.models.generate_content_stream(model=MODEL, contents=history, config=weather_config()))
    sdk.assert_one_request("POST", f"models/{MODEL}:streamGenerateContent")
    assert not any(c.function_calls for c in chunks), chunks
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.STOP
    assert_done("".join(c.text or "" for c in chunks))


def test_automatic_function_calling_runs_the_python_function(sdk: Sdk) -> None:
    seen: list[str] = []

    def get_weather(city: str) -> str:
        """The current weather in a city."""
        seen.append(city)
        return WEATHER_RESULT

    response = sdk.client.models.generate_content(
        model=MODEL, contents=WEATHER_PROMPT, config=types.GenerateContentConfig(tools=[get_weather])
    )
    assert sdk.take() == [f"POST {sdk.prefix}models/{MODEL}:generateContent"] * 2
    assert seen == ["Paris"], seen
    assert_done(response.text)
    history = response.automatic_function_calling_history or []
    calls = [p.function_call for c in history for p in (c.parts or []) if p.function_call]
    assert [(c.name, c.args) for c in calls] == [("get_weather", PARIS)], history


@pytest.mark.parametrize("named", [False, True], ids=["any", "any-named"])
def test_forced_function_calling_yields_the_call(sdk: Sdk, named: bool) -> None:
    config = weather_config(
        types.ToolConfig(
            function_calling_config=types.FunctionCallingConfig(
                mode=types.FunctionCallingConfigMode.ANY,
                allowed_function_names=["get_weather"] if named else None,
            )
        )
    )
    response = sdk.client.models.generate_content(model=MODEL, contents=WEATHER_PROMPT, config=config)
    sdk.assert_one_request("POST", f"models/{MODEL}:generateContent")
    the_weather_call(response.function_calls)
    assert response.candidates[0].finish_reason == types.FinishReason.STOP


# --- Flow (Imagen / Veo through the simulator's Flow upstream; see conftest) --------------------

FLOW_IMAGE_MODEL = "gemini-2.5-flash-image-portrait"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_generate_content_gets_a_flow_image_as_inline_data(sdk: Sdk) -> None:
    response = sdk.client.models.generate_content(model=FLOW_IMAGE_MODEL, contents="Flow smoke: a red kite")
    sdk.assert_one_request("POST", f"models/{FLOW_IMAGE_MODEL}:generateContent")
    candidate = response.candidates[0]
    assert candidate.finish_reason == types.FinishReason.STOP, candidate
    blobs = [p.inline_data for p in candidate.content.parts if p.inline_data is not None]
    assert len(blobs) == 1, candidate.content.parts
    assert blobs[0].mime_type == "image/png", blobs[0].mime_type
    assert isinstance(blobs[0].data, bytes) and blobs[0].data.startswith(PNG_MAGIC), blobs[0].data[:16]


# ---- web-search grounding (issue 16) ----------------------------------------------------
#
# Grounded answers: conftest's GROUNDED_* (the simulator's `[sim:grounded]` answer).


def assert_grounded(text: str, metadata: Optional[types.GroundingMetadata]) -> None:
    """The metadata cites GROUNDED_CITES in `text`: segment indices are UTF-8 byte offsets
    into the whole answer text (Gemini measures segments in bytes)."""
    assert text == GROUNDED_TEXT
    assert metadata is not None, "no grounding_metadata"
    chunks = metadata.grounding_chunks or []
    assert [(c.web.uri, c.web.title) for c in chunks] == [(u, t) for _, u, t in GROUNDED_CITES]
    assert all(c.web.domain and c.web.domain in c.web.uri for c in chunks)
    supports = metadata.grounding_supports or []
    assert len(supports) == len(GROUNDED_CITES)
    raw = text.encode("utf-8")
    for support, (cited, uri, _) in zip(supports, GROUNDED_CITES):
        segment = support.segment
        start, end = segment.start_index or 0, segment.end_index
        assert start == raw.index(cited.encode("utf-8")), "offsets count UTF-8 bytes"
        assert start != text.index(cited), "the non-ASCII prefix makes bytes differ from chars"
        assert raw[start:end].decode("utf-8") == cited == segment.text
        assert segment.part_index in (None, 0)
        assert [chunks[i].web.uri for i in support.grounding_chunk_indices] == [uri]


def test_generate_content_grounded(sdk: Sdk) -> None:
    response = sdk.client.models.generate_content(model=SEARCH_MODEL, contents=GROUNDED_PROMPT)
    sdk.assert_one_request("POST", f"models/{SEARCH_MODEL}:generateContent")
    candidate = response.candidates[0]
    assert_grounded(response.text, candidate.grounding_metadata)
    assert candidate.finish_reason == types.FinishReason.STOP


def test_generate_content_stream_grounded(sdk: Sdk) -> None:
    chunks = list(
        sdk.client.models.generate_content_stream(model=SEARCH_MODEL, contents=GROUNDED_PROMPT)
    )
    sdk.assert_one_request("POST", f"models/{SEARCH_MODEL}:streamGenerateContent")
    text = "".join(c.text or "" for c in chunks)
    metadata = [
        c.candidates[0].grounding_metadata for c in chunks if c.candidates[0].grounding_metadata
    ]
    assert metadata, "no chunk carries grounding_metadata"
    # Each chunk's metadata is the whole answer's so far: the last one is complete.
    assert_grounded(text, metadata[-1])
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.STOP
