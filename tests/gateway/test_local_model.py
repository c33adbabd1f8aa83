"""The offline `local` model on /v1/ reads a message's content as a provider does: a list of content parts is its
text parts one after the other, on chat completions and the Responses API alike, in the question it answers and in
the tool results it answers from (docs/operations/configuration.md#providers)."""
CALC_TOOL = {"type": "function", "function": {
    "name": "calculator", "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}}}}


def text(*texts: str) -> list[dict]:
    return [{"type": "text", "text": said} for said in texts]


def test_it_answers_the_text_of_a_message_of_text_parts(gateway_api):
    response = gateway_api.post("/v1/chat/completions", {"model": "local-echo-1", "messages": [
        {"role": "system", "content": text("Be brief.")},
        {"role": "user", "content": text("Why is the sky ", "blue?")}]},
        format="json")

    assert response.status_code == 200, response.content
    assert response.json()["choices"][0]["message"]["content"] == (
        '(local model) You said: "Why is the sky blue?". This is an offline demo reply.')


def test_it_answers_from_a_tool_result_of_text_parts(gateway_api):
    response = gateway_api.post("/v1/chat/completions", {"model": "local-echo-1", "tools": [CALC_TOOL], "messages": [
        {"role": "user", "content": "What is 2+3?"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {
            "name": "calculator", "arguments": '{"expression": "2+3"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": text("5")}]}, format="json")

    assert response.status_code == 200, response.content
    assert response.json()["choices"][0]["message"]["content"] == "The answer: 2+3 = 5."


def test_the_responses_api_input_text_parts_are_read_as_text(gateway_api):
    response = gateway_api.post("/v1/responses", {"model": "local-echo-1", "input": [
        {"role": "user", "content": [{"type": "input_text", "text": "Hello "},
                                     {"type": "input_text", "text": "there"}]}]},
        format="json")

    assert response.status_code == 200, response.content
    (message,) = response.json()["output"]
    assert message["content"][0]["text"].startswith('(local model) You said: "Hello there".')
