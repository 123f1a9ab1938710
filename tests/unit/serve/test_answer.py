"""The answer API's pure parts: citation parsing, citations, SSE framing, OpenAI shapes, chat questions."""

from __future__ import annotations

import json

import pytest

from mmrag.serve import answer as A
from mmrag.serve.schemas import ChatRequest

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("text", "n", "want"),
    [
        ("The coin is round [1].", 3, {1}),
        ("See [1, 3] and [2].", 3, {1, 2, 3}),
        ("pages [1-3]", 5, {1, 2, 3}),
        ("pages [3–1]", 5, {1, 2, 3}),
        ("[1; 2] [2 and 3]", 3, {1, 2, 3}),
        ("out of range [0] [4] [12]", 3, set()),
        ("no citations here, [a] [] [1.5]", 3, set()),
        ("hostile [1-999999999999]", 4, {1, 2, 3, 4}),
        ("", 3, set()),
    ],
)
def test_cited_numbers(text: str, n: int, want: set[int]) -> None:
    assert A.cited_numbers(text, n) == want


def _hit(i: int, modality: str = "page") -> dict:
    return {
        "id": f"{i:032x}",
        "score": 1.0 / (i + 1),
        "modality": modality,
        "source_uri": f"/data/doc{i}.pdf",
        "page": i + 1 if modality == "page" else None,
        "start_s": 10.0 if modality == "clip" else None,
        "end_s": 20.0 if modality == "clip" else None,
        "text": "x" * 1000,
    }


def test_citations_follow_the_prompt_and_flag_what_is_cited() -> None:
    hits = [_hit(0), _hit(1, "clip"), _hit(2)]
    cites = A.citations(hits, 2, "Round [2].", "/api/")
    assert [c["n"] for c in cites] == [1, 2], "only the hits that made it into the prompt"
    assert [c["cited"] for c in cites] == [False, True]
    clip = cites[1]
    assert clip["modality"] == "clip" and (clip["start_s"], clip["end_s"]) == (10.0, 20.0) and clip["page"] is None
    assert cites[0]["page"] == 1 and cites[0]["source"] == "/data/doc0.pdf"
    assert clip["image_url"] == f"/api/v1/items/{hits[1]['id']}/image" and len(clip["snippet"]) == 300


def test_sse_framing() -> None:
    assert A.sse({"text": "a\nb"}, "token") == 'event: token\ndata: {"text":"a\\nb"}\n\n'
    assert A.sse("[DONE]") == "data: [DONE]\n\n"


def _chat(messages: list) -> ChatRequest:
    return ChatRequest.model_validate({"messages": messages})


def test_chat_question_is_the_last_user_text() -> None:
    req = _chat(
        [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": [{"type": "text", "text": "what is"}, {"type": "text", "text": "a coin?"}]},
        ]
    )
    assert A.chat_question(req.messages) == "what is a coin?"


@pytest.mark.parametrize(
    ("messages", "needle"),
    [
        ([{"role": "system", "content": "hi"}], "no user message"),
        ([{"role": "user", "content": "  "}], "no text"),
        (
            [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}],
            "'input_audio' are not supported",
        ),
        ([{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}], "needs image_url.url"),
        (
            [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": f"data:,{i}"}} for i in (1, 2)]}],
            "carries 2 images; send one",
        ),
    ],
)
def test_chat_question_errors_say_what_is_wrong(messages: list, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        A.chat_question(_chat(messages).messages)
        A.chat_image(_chat(messages).messages)


def test_chat_image_is_the_last_user_turns_and_an_image_alone_gets_a_question() -> None:
    url = "data:image/png;base64,iVBORw0KGgo="
    msgs = _chat(
        [
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
            {"role": "assistant", "content": "a cup"},
            {
                "role": "user",
                "content": [{"type": "text", "text": "and this?"}, {"type": "image_url", "image_url": {"url": url}}],
            },
        ]
    ).messages
    assert A.chat_image(msgs) == url and A.chat_question(msgs) == "and this?"
    alone = _chat([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}]).messages
    assert A.chat_question(alone) == A.IMAGE_QUESTION


def test_chat_request_keeps_unknown_openai_fields_for_passthrough() -> None:
    req = ChatRequest.model_validate(
        {"messages": [{"role": "user", "content": "q"}], "ignore_eos": True, "logit_bias": {}, "n": 1}
    )
    assert req.model_extra == {"ignore_eos": True, "logit_bias": {}}
    with pytest.raises(ValueError):
        ChatRequest.model_validate({"messages": [{"role": "user", "content": "q"}], "n": 2})
    with pytest.raises(ValueError):
        ChatRequest.model_validate({"messages": []})


def test_openai_shapes_parse_with_the_official_client() -> None:
    from openai.types.chat import ChatCompletion, ChatCompletionChunk

    shape = A.ChatShape("mmrag")
    body = shape.completion("Round [1].", "stop", {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}, {})
    done = ChatCompletion.model_validate({**body, "citations": [{"n": 1}]})
    assert done.choices[0].message.content == "Round [1]." and done.model_extra == {"citations": [{"n": 1}]}
    packet = shape.chunk({"content": "Ro"})
    assert packet.startswith("data: ") and packet.endswith("\n\n")
    chunk = ChatCompletionChunk.model_validate(json.loads(packet[len("data: ") :]))
    assert chunk.choices[0].delta.content == "Ro" and chunk.id == done.id
    usage = ChatCompletionChunk.model_validate(json.loads(shape.chunk(None, usage=body["usage"])[6:]))
    assert usage.choices == [] and usage.usage is not None and usage.usage.total_tokens == 8


def test_chat_extras_are_checked_against_the_generation_limits() -> None:
    from mmrag.serve.answer import ExtraError, chat_extras

    ok = chat_extras(
        {"top_k": 5, "repetition_penalty": 1.1, "logit_bias": {}}, allow_ignore_eos=False, max_min_tokens=0
    )
    assert ok == {"top_k": 5, "repetition_penalty": 1.1}, "only the pass-through fields, unchanged"
    assert chat_extras({"ignore_eos": False}, allow_ignore_eos=False, max_min_tokens=0) == {"ignore_eos": False}
    assert chat_extras({"ignore_eos": True, "min_tokens": 4}, allow_ignore_eos=True, max_min_tokens=8) == {
        "ignore_eos": True,
        "min_tokens": 4,
    }
    for extra, field in (
        ({"ignore_eos": True}, "ignore_eos"),
        ({"ignore_eos": "yes"}, "ignore_eos"),
        ({"min_tokens": 9}, "min_tokens"),
        ({"min_tokens": True}, "min_tokens"),
        ({"top_k": 2.5}, "top_k"),
        ({"presence_penalty": float("nan")}, "presence_penalty"),
        ({"frequency_penalty": "1"}, "frequency_penalty"),
    ):
        with pytest.raises(ExtraError) as e:
            chat_extras(extra, allow_ignore_eos=False, max_min_tokens=8 if "min_tokens" in extra else 0)
        assert e.value.field == field


def test_chat_history_and_the_follow_up_search() -> None:
    from mmrag.serve.answer import chat_history, search_query
    from mmrag.serve.schemas import ChatRequest

    req = ChatRequest.model_validate(
        {
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "What does the coin package test for independence?"},
                {"role": "assistant", "content": "Permutation tests [1]."},
                {"role": "user", "content": [{"type": "text", "text": "and for survival data?"}]},
            ]
        }
    )
    assert chat_history(req.messages) == [
        {"role": "user", "content": "What does the coin package test for independence?"},
        {"role": "assistant", "content": "Permutation tests [1]."},
    ]
    assert search_query(req.messages) == ("What does the coin package test for independence? and for survival data?"), (
        "a short follow-up is searched with the question it follows"
    )
    alone = ChatRequest.model_validate(
        {"messages": [{"role": "user", "content": "first"}, {"role": "user", "content": "a full question of its own"
                                                              " about permutation tests in coin"}]}
    )  # fmt: skip
    assert search_query(alone.messages) == "a full question of its own about permutation tests in coin"
