// OpenAI's official Node client against Chatter's gateway (/v1/), as a Node team would point it there.
// Env: CHATTER_V1_URL, CHATTER_KEY. The Python test (tests/test_js_clients.py) scripts the upstream stub's replies in
// this order and checks what Chatter stored for each call against what this script printed (one JSON line).
import assert from "node:assert/strict";
import OpenAI from "openai";

const client = new OpenAI({ baseURL: process.env.CHATTER_V1_URL, apiKey: process.env.CHATTER_KEY, maxRetries: 0 });
const ASK = [{ role: "user", content: "Say 84." }];
const seen = {};

// The models a client may ask for.
const models = [];
for await (const model of client.models.list()) models.push(model.id);
assert.ok(models.includes("gpt-4o-mini"), `gpt-4o-mini is routable: ${models}`);
assert.equal((await client.models.retrieve("gpt-4o-mini")).id, "gpt-4o-mini");

// 1. A call, with the run's id and the cost in the response's headers and usage.
const { data: completion, response } = await client.chat.completions
  .create({ model: "gpt-4o-mini", messages: ASK, seed: 7, logprobs: true, top_logprobs: 2 })
  .withResponse();
assert.equal(completion.choices[0].message.content, "It is 84.");
assert.ok(completion.choices[0].logprobs.content.length > 0, "logprobs pass through");
assert.equal(response.headers.get("x-request-id"), response.headers.get("x-chatter-execution"));
seen.call = { id: response.headers.get("x-request-id"), usage: completion.usage, cost: response.headers.get("x-chatter-cost") };

// 2. A streamed call: the text in pieces, the usage (and its cost) on the last chunk.
const stream = await client.chat.completions.create({
  model: "gpt-4o-mini", messages: ASK, stream: true, stream_options: { include_usage: true },
});
let text = "";
let last;
for await (const chunk of stream) {
  text += chunk.choices[0]?.delta?.content ?? "";
  last = chunk;
}
assert.equal(text, "Streamed 84.");
assert.deepEqual(last.choices, []);
seen.stream = { id: last.id, usage: last.usage };

// 3. A tool call, answered by the client, then the final answer.
const tools = [{ type: "function", function: { name: "multiply", parameters: { type: "object", properties: { a: { type: "integer" }, b: { type: "integer" } } } } }];
const asked = await client.chat.completions.create({ model: "gpt-4o-mini", messages: ASK, tools });
const call = asked.choices[0].message.tool_calls[0];
assert.equal(call.function.name, "multiply");
assert.deepEqual(JSON.parse(call.function.arguments), { a: 12, b: 7 });
const answered = await client.chat.completions.create({
  model: "gpt-4o-mini", tools,
  messages: [...ASK, asked.choices[0].message, { role: "tool", tool_call_id: call.id, content: "84" }],
});
assert.equal(answered.choices[0].message.content, "84.");
seen.tools = [asked.usage, answered.usage];

// 4. Embeddings, the Responses API (whole and streamed) and the legacy completions.
const embedded = await client.embeddings.create({ model: "text-embedding-3-small", input: ["one", "two"] });
assert.equal(embedded.data.length, 2);
assert.ok(embedded.data[0].embedding.length > 0);
seen.embeddings = embedded.usage;
const answer = await client.responses.create({ model: "gpt-4o-mini", input: "Say 84." });
assert.equal(answer.output_text, "Responded 84.");
seen.responses = { id: answer.id, usage: answer.usage };
const responseStream = client.responses.stream({ model: "gpt-4o-mini", input: "Stream 84." });
let streamedText = "";
const sequence = [];
for await (const event of responseStream) {
  sequence.push(event.sequence_number);
  if (event.type === "response.output_text.delta") streamedText += event.delta;
}
const streamedAnswer = await responseStream.finalResponse();
assert.equal(streamedText, "Streamed response 84.");
assert.equal(streamedAnswer.output_text, streamedText);
assert.deepEqual(sequence, sequence.map((_, index) => index));
seen.responsesStream = { id: streamedAnswer.id, usage: streamedAnswer.usage };
const legacy = await client.completions.create({ model: "gpt-4o-mini", prompt: "Say 84." });
assert.equal(legacy.choices[0].text, "Completed 84.");
seen.completions = legacy.usage;

// 5. Refusals in OpenAI's error shape, as the client's own error classes.
await assert.rejects(client.chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "robot", content: "x" }] }),
  (error) => error instanceof OpenAI.BadRequestError && error.param === "messages.0.role");
await assert.rejects(client.chat.completions.create({ model: "no-such-model", messages: ASK }),
  (error) => error instanceof OpenAI.NotFoundError && error.code === "model_not_found");
const stranger = new OpenAI({ baseURL: process.env.CHATTER_V1_URL, apiKey: "not-a-key", maxRetries: 0 });
await assert.rejects(stranger.models.list(), (error) => error instanceof OpenAI.AuthenticationError);

console.log(JSON.stringify(seen));
