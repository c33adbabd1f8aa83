// LangGraph's official JavaScript SDK against Chatter's /langgraph/, as a JS team would use it.
// Env: CHATTER_LANGGRAPH_URL, CHATTER_KEY. Asserts what the SDK returns; prints one JSON line of the ids it made,
// for the Python test to check what Chatter stored (tests/test_js_clients.py).
import assert from "node:assert/strict";
import { Client } from "@langchain/langgraph-sdk";

const client = new Client({ apiUrl: process.env.CHATTER_LANGGRAPH_URL, apiKey: process.env.CHATTER_KEY });
const START = { messages: [], value: "init", items: [] };
const TURN = { messages: [{ role: "user", content: "What is 12*7?" }] };
const made = {};

// Assistants: the registered graph is found, and its graph and schemas are described.
const found = await client.assistants.search({ graphId: "stateful" });
assert.ok(found.some((a) => a.assistant_id && a.graph_id === "stateful"), "the registered graph's assistant");
const drawing = await client.assistants.getGraph("stateful");
assert.ok(drawing.nodes.some((n) => n.id === "greet"), "getGraph names the graph's own nodes");
const schemas = await client.assistants.getSchemas("stateful");
assert.equal(schemas.graph_id, "stateful");

// An assistant of one's own, with versions.
const mine = await client.assistants.create({ graphId: "stateful", name: "js-made", config: { tags: ["one"] } });
const changed = await client.assistants.update(mine.assistant_id, { name: "js-renamed" });
assert.equal(changed.name, "js-renamed");
assert.equal(changed.version, 2);
const versions = await client.assistants.getVersions(mine.assistant_id);
assert.deepEqual(versions.map((v) => v.version).sort(), [1, 2]);
const back = await client.assistants.setLatest(mine.assistant_id, 1);
assert.equal(back.version, 1);
assert.equal(back.name, "js-made");
made.assistant = mine.assistant_id;

// A streamed run of a graph with its own state: its nodes, its stream writer, its values, its question.
const thread = await client.threads.create({ metadata: { from: "js" } });
const parts = [];
for await (const part of client.runs.stream(thread.thread_id, "stateful", {
  input: START, streamMode: ["updates", "custom", "values"],
})) {
  parts.push(part);
}
const updates = parts.filter((p) => p.event === "updates").map((p) => Object.keys(p.data)[0]);
assert.deepEqual(updates, ["greet", "use_tool", "__interrupt__"]);
assert.deepEqual(parts.filter((p) => p.event === "custom").map((p) => p.data),
  [{ step: "greet", phase: "start" }, { step: "greet", phase: "end" }]);
const values = parts.filter((p) => p.event === "values").map((p) => p.data);
assert.equal(values.at(-1).__interrupt__[0].value.question, "Go on?");

// The thread's state, changed by hand, then the answer to the question.
const paused = await client.threads.getState(thread.thread_id);
assert.deepEqual(paused.next, ["ask"]);
assert.deepEqual(paused.values.items, ["greeted", "tool"]);
await client.threads.updateState(thread.thread_id, { values: { value: "changed" } });
assert.equal((await client.threads.getState(thread.thread_id)).values.value, "changed");
const final = await client.runs.wait(thread.thread_id, "stateful", { command: { resume: "yes" } });
assert.deepEqual(final.items, ["greeted", "tool", "asked"]);
assert.deepEqual(final.messages.map((m) => m.content), ["Hello there", "", "found x", "You said yes", "from the subgraph"]);
const history = await client.threads.getHistory(thread.thread_id, { limit: 50 });
assert.deepEqual(history[0].next, []);
assert.deepEqual(history.slice(0, -1).map((h) => h.parent_checkpoint.checkpoint_id),
  history.slice(1).map((h) => h.checkpoint.checkpoint_id), "each step names its parent");
const listed = await client.threads.search({ metadata: { graph_id: "stateful" } });
assert.ok(listed.some((t) => t.thread_id === thread.thread_id), "a thread is stamped with its graph");
made.stateful_thread = thread.thread_id;

// A graph that calls a model: a draft, a person's review, the final answer; a run that pauses and goes on.
const review = await client.threads.create();
const asked = await client.runs.wait(review.thread_id, "review_agent", { input: TURN });
assert.equal(asked.__interrupt__[0].value.draft, "12*7 = 74");
const runs = await client.runs.list(review.thread_id);
assert.equal(runs[0].status, "interrupted");
const answered = await client.runs.wait(review.thread_id, "review_agent", { command: { resume: "no, it is 84" } });
assert.equal(answered.messages.at(-1).content, "12*7 = 84");
assert.equal((await client.runs.get(review.thread_id, runs[0].run_id)).status, "success");
made.review_thread = review.thread_id;
made.review_run = runs[0].run_id;

// The store, as the SDK expects it (a deleted item reads as null).
await client.store.putItem(["js", "notes"], "first", { text: "hello" });
assert.deepEqual((await client.store.getItem(["js", "notes"], "first")).value, { text: "hello" });
const searched = await client.store.searchItems(["js"]);
assert.deepEqual(searched.items.map((i) => i.key), ["first"]);
await client.store.deleteItem(["js", "notes"], "first");
assert.equal(await client.store.getItem(["js", "notes"], "first"), null);

// Errors come back as the SDK's own: an unknown thread is a 404 it can read.
await assert.rejects(client.threads.get("00000000-0000-0000-0000-000000000000"), (error) => error.status === 404);

await client.assistants.delete(mine.assistant_id);
console.log(JSON.stringify(made));
