/* Chatter live page (docs/usage.md#the-live-page): recent runs, a chat turn streamed over SSE, and any run
 * watched over the websocket. Persisted events are applied once each, in seq order, so a reconnect with ?after=<last seq>
 * never repeats a node line or a counter. Tokens are not persisted: text missed while disconnected is
 * replaced by the saved reply once the run has ended. While a model call streams, each `token` event counts
 * as one completion token (priced at the model's output price, as the server resolves it): an estimate shown
 * in italics, replaced by the exact figures of the call's `token_usage` event and the run's terminal event. */

import {
  apiGet, csrfToken, el, errorMessage, formatCost, inputMessage, showError, shorten, toUnits, ui,
} from "./page.js";
import { watchIngestion } from "./ingestion.js";
import { Run } from "./run.js";

const TITLE_CHARS = 60;
let current = null; // the Run on screen

/** Put a fresh run on screen, replacing the one shown. */
function show(run, status) {
  if (current) current.close();
  current = run;
  showError("");
  ui.nodes.replaceChildren();
  ui.text.textContent = "";
  ui.messages.replaceChildren();
  ui.messages.hidden = true;
  run.setStatus(status);
  run.setNote("");
  run.render();
  history.replaceState(null, "", run.id ? `#${run.id}` : location.pathname + location.search);
  return run;
}

function watchRun(id, status, question) {
  const run = new Run(id, refreshRuns);
  if (typeof question === "string") run.question = question;
  show(run, status || "connecting").watch();
  run.loadQuestion();
}

/** What a run is about, for the list: the start of its message, else its conversation's title. */
async function conversationTitles(runs) {
  if (!runs.some((run) => !runMessage(run) && run.conversation)) return new Map();
  try {
    const page = await apiGet("/api/v1/conversations/?page_size=100&ordering=-updated_at");
    return new Map((page.results || []).map((c) => [c.id, c.title]));
  } catch (e) {
    return new Map();
  }
}

function runMessage(run) {
  return inputMessage(run.input_data);
}

// --- recent runs ---------------------------------------------------------------------------------------
async function refreshRuns() {
  let page;
  try {
    page = await apiGet("/api/v1/executions/?page_size=20");
  } catch (e) {
    showError(`Could not load your runs: ${e.message}`);
    return;
  }
  const runs = page.results || [];
  const titles = await conversationTitles(runs);
  const items = runs.map((run) => el("li", {},
    el("button", {
      type: "button", class: `run-item${current && current.id === run.id ? " selected" : ""}`,
      "data-testid": "run-item", "data-execution-id": run.id,
      onclick: () => watchRun(run.id, run.status, runMessage(run) || null),
    },
    el("span", { class: "run-title", "data-testid": "run-title", title: runMessage(run) },
      shorten(runMessage(run) || titles.get(run.conversation) || run.template || "(no message)", TITLE_CHARS)),
    el("span", { class: `status status-${run.status}` }, run.status),
    el("span", { class: "run-what" }, `${run.workflow_type} · ${run.provider || "?"}/${run.model || "?"}`),
    el("span", { class: "run-usage" }, `${run.total_tokens} tokens · ${formatCost(toUnits(run.cost))}`),
    el("time", { class: "muted", dateTime: run.created_at }, new Date(run.created_at).toLocaleString()))));
  ui.runList.replaceChildren(...(items.length ? items : [el("li", { class: "muted" }, "No runs yet.")]));
}

// --- wiring --------------------------------------------------------------------------------------------
ui.form.addEventListener("submit", (event) => {
  event.preventDefault();
  const fields = ui.form.elements;
  const message = fields.message.value.trim();
  if (!message) {
    showError("Type a message first.");
    return;
  }
  const body = { message, stream: true };
  if (fields.provider.value) body.provider = fields.provider.value;
  if (fields.model.value.trim()) body.model = fields.model.value.trim();
  if (fields.continue.checked && current && current.conversationId) body.conversation_id = current.conversationId;
  const run = new Run(null, refreshRuns);
  run.question = message;
  show(run, "starting").streamChat(body, () => { fields.message.value = ""; });
});

/** Answer the question the run on screen waits on (POST …/resume/); the run goes on on the server and the
 * page follows it over the websocket it already watches. A refused answer (400) is shown; the box stays. */
ui.answerForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  const run = current;
  const interruptId = ui.answerForm.dataset.interruptId;
  if (!run || !run.id || !interruptId) return;
  const asked = run.asking.get(interruptId) || {};
  const text = ui.answerForm.elements.answer.value;
  let answer = text;
  if (asked.schema && asked.schema.type !== "string") {
    try { answer = JSON.parse(text); } catch (e) { answer = text; } // the server says what is wrong with it
  }
  showError("");
  let response;
  try {
    response = await fetch(`/api/v1/executions/${encodeURIComponent(run.id)}/resume/`, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken(), Accept: "text/event-stream" },
      body: JSON.stringify({ answers: { [interruptId]: answer }, mode: "stream" }),
    });
  } catch (e) {
    showError(`Could not reach the server: ${e.message}`);
    return;
  }
  if (!response.ok) {
    showError(await errorMessage(response));
    return;
  }
  if (response.body) response.body.cancel(); // the websocket already follows the run
  ui.answerForm.elements.answer.value = "";
  run.asking.delete(interruptId);
  run.render();
});

ui.form.elements.message.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) ui.form.requestSubmit();
});
ui.refresh.addEventListener("click", refreshRuns);

refreshRuns();
watchIngestion();
const fromHash = location.hash.slice(1);
if (/^[0-9a-f-]{36}$/i.test(fromHash)) watchRun(fromHash);
