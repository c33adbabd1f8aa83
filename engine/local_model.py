"""The `local` provider: an offline, deterministic chat model for demos and tests
(docs/operations/configuration.md#providers).

It reads a message's content parts as a provider does (chat_messages.content_text: the text parts as they are), streams
its answer word by word and reports usage on every call, counted by the offline estimator over the real input and
output. With tools bound it calls `calculator` for arithmetic, `current_time` when asked for the
time, and any other bound tool the message names, with the JSON object after the name as its arguments
(`demo__search_issues {"query": "login"}`), then answers from the results. Asked to judge an output (as
experiments' `llm_judge` asks), it answers `{"score": x}` by word overlap: a heuristic, not a model's judgement.
"""
from __future__ import annotations

import functools
import json
import re
import time
import uuid
from typing import Any, Iterator, Sequence

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    ToolMessage,
)
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import Field

from engine.chat_messages import content_text
from engine.usage import estimate_completion_tokens, estimate_prompt_tokens

LOCAL_MODELS = ("local-echo-1",)

# An arithmetic expression: numbers joined by at least one operator, parentheses allowed.
_EXPRESSION = re.compile(r"[(\s]*-?\d+(?:\.\d+)?(?:[\s()]*(?:\*\*|[-+*/%^×÷])[\s(]*-?\d+(?:\.\d+)?[\s)]*)+")
_TIME_WORDS = re.compile(r"\b(time|date|today|clock)\b", re.IGNORECASE)
# A request to grade an output (experiments.evaluators.judge_message): its labelled sections, then the answer it asks
# for. The output is the last section, so an output holding these labels itself is still read whole.
_GRADING = re.compile(r"^Input:\n(?P<input>.*?)\n\nExpected output:\n(?P<expected>.*?)\n\nOutput:\n(?P<output>.*)"
                      r"\n\n[^\n]*\{\{?\"score\": x\}\}?[^\n]*\s*\Z", re.MULTILINE | re.DOTALL)
_WORD = re.compile(r"\w+")


def _arguments(text: str | None) -> dict:
    """A named tool's arguments: the JSON object after its name, or none."""
    try:
        arguments = json.loads(text) if text else {}
    except ValueError:
        return {}
    return arguments if isinstance(arguments, dict) else {}


def _text(message: BaseMessage) -> str:
    return content_text(message.content)


class LocalChatModel(BaseChatModel):
    model_name: str = "local-echo-1"
    temperature: float | None = None
    max_tokens: int | None = None
    tool_names: tuple[str, ...] = Field(default_factory=tuple)
    token_delay_s: float = 0.0

    @property
    def _llm_type(self) -> str:
        return "chatter-local"

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> "LocalChatModel":
        # LangChain tools, or OpenAI function schemas ({"type": "function", "function": {"name", …}}).
        names = tuple(getattr(tool, "name", None) or (tool.get("function") or tool)["name"] for tool in tools)
        return _with_tools(self.model_name, self.temperature, self.max_tokens, self.token_delay_s, names)

    # --- the deterministic "thinking" -------------------------------------------------------------
    def _reply(self, messages: list[BaseMessage]) -> AIMessage:
        last = messages[-1] if messages else HumanMessage("")
        if isinstance(last, ToolMessage):
            return AIMessage(self._answer_from_tools(messages))
        question = _text(last)
        grading = _GRADING.search(question) if isinstance(last, HumanMessage) else None
        if grading:
            return AIMessage(json.dumps({"score": _grade(**grading.groupdict())}))
        calls = self._tool_calls_for(question) if self.tool_names else []
        if calls:
            return AIMessage("", tool_calls=calls)
        content = f'(local model) You said: "{question.strip()[:200]}". This is an offline demo reply.'
        return AIMessage(self._truncate(content))

    def _tool_calls_for(self, question: str) -> list[dict]:
        calls = []
        if "calculator" in self.tool_names:
            for match in _EXPRESSION.finditer(question):
                expression = match.group(0).strip()
                calls.append({"name": "calculator", "args": {"expression": expression}, "id": _call_id()})
        if "current_time" in self.tool_names and _TIME_WORDS.search(question):
            calls.append({"name": "current_time", "args": {}, "id": _call_id()})
        for name in self.tool_names:
            if name in ("calculator", "current_time"):
                continue
            for match in re.finditer(rf"(?<![\w-]){re.escape(name)}(?![\w-])(?:\s*(\{{[^{{}}]*\}}))?", question):
                calls.append({"name": name, "args": _arguments(match.group(1)), "id": _call_id()})
        return calls

    def _answer_from_tools(self, messages: list[BaseMessage]) -> str:
        requests: dict[str, dict] = {}
        for message in messages:
            for call in getattr(message, "tool_calls", None) or []:
                requests[call["id"]] = call
        parts = []
        for message in messages:
            if not isinstance(message, ToolMessage):
                continue
            call = requests.get(message.tool_call_id, {})
            if call.get("name") == "calculator":
                parts.append(f"{call['args'].get('expression', '?')} = {_text(message)}")
            elif call.get("name") == "current_time":
                parts.append(f"the current time is {_text(message)}")
            else:
                parts.append(_text(message))
        return self._truncate("The answer: " + "; ".join(parts) + ".")

    def _truncate(self, content: str) -> str:
        if self.max_tokens is None:
            return content
        return content[: self.max_tokens * 4]

    def _with_usage(self, reply: AIMessage, messages: list[BaseMessage]) -> dict:
        prompt = estimate_prompt_tokens(messages)
        completion = estimate_completion_tokens(reply)
        return {"input_tokens": prompt, "output_tokens": completion, "total_tokens": prompt + completion}

    def _metadata(self, reply: AIMessage) -> dict:
        return {"model_name": self.model_name, "finish_reason": "tool_calls" if reply.tool_calls else "stop"}

    # --- LangChain interface ----------------------------------------------------------------------
    def _generate(self, messages, stop=None, run_manager=None, n: int | None = None, **kwargs) -> ChatResult:
        """`n` choices, as OpenAI answers a call for several: the same deterministic reply each time, the usage
        (on each, as LangChain's OpenAI model reports one call's) the prompt once and every choice's completion."""
        reply = self._reply(messages)
        one = self._with_usage(reply, messages)
        completion = one["output_tokens"] * (n or 1)
        reply.usage_metadata = {**one, "output_tokens": completion, "total_tokens": one["input_tokens"] + completion}
        reply.response_metadata = self._metadata(reply)
        return ChatResult(generations=[ChatGeneration(message=reply.model_copy()) for _ in range(n or 1)])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        reply = self._reply(messages)
        for word in re.findall(r"\S+\s*", _text(reply)):
            if self.token_delay_s:
                time.sleep(self.token_delay_s)
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=word))
            if run_manager:
                run_manager.on_llm_new_token(word, chunk=chunk)
            yield chunk
        if reply.tool_calls:
            yield ChatGenerationChunk(
                message=AIMessageChunk(
                    content="",
                    tool_call_chunks=[
                        {"name": c["name"], "args": json.dumps(c["args"]), "id": c["id"], "index": i}
                        for i, c in enumerate(reply.tool_calls)
                    ],
                )
            )
        # Usage rides on exactly one chunk, the last (chunks are summed when added).
        yield ChatGenerationChunk(
            message=AIMessageChunk(
                content="", usage_metadata=self._with_usage(reply, messages), response_metadata=self._metadata(reply)
            )
        )


def _grade(*, input: str, expected: str, output: str) -> float:
    """The share of the expected output's words (or, without one, the input's) that the output has, to two places;
    an empty output scores 0, and an output measured against nothing 1."""
    said = {word.lower() for word in _WORD.findall(output)}
    wanted = {word.lower() for word in _WORD.findall(expected) or _WORD.findall(input)}
    if not said:
        return 0.0
    return round(len(wanted & said) / len(wanted), 2) if wanted else 1.0


def _call_id() -> str:
    return f"call_{uuid.uuid4().hex[:16]}"


@functools.lru_cache(maxsize=64)
def _with_tools(model_name: str, temperature: float | None, max_tokens: int | None, token_delay_s: float,
                tool_names: tuple[str, ...]) -> LocalChatModel:
    """One model object with tools per set of parameters and tools, and process, shared as the model without
    tools is (engine.providers): LangChain describes a model object once, the first time it is called
    (its `_serialized`, about 0.4 ms of a turn). A new object, not a model_copy, which would carry what LangChain
    cached about the model without tools."""
    return LocalChatModel(model_name=model_name, temperature=temperature, max_tokens=max_tokens,
                          token_delay_s=token_delay_s, tool_names=tool_names)
