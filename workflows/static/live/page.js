/* Chatter live page: what its parts share — the page's elements, constants and small helpers (formatting,
 * the API's JSON, a text/event-stream body read frame by frame). */

export const TERMINAL = new Set(["workflow_completed", "workflow_failed", "workflow_cancelled"]);
export const BACKOFF_MS = [250, 500, 1000, 2000, 4000];
const COST_DECIMALS = 8;
const $ = (id) => document.getElementById(id);
export const ui = {
  runList: $("run-list"), refresh: $("runs-refresh"), form: $("chat-form"), error: $("error"),
  runId: $("run-id"), status: $("run-status"), note: $("run-note"), nodes: $("node-list"), text: $("run-text"),
  prompt: $("prompt-tokens"), completion: $("completion-tokens"), total: $("total-tokens"), cost: $("cost"),
  counters: $("counters"), question: $("run-question"), answerForm: $("answer-form"),
  answerPrompt: $("answer-prompt"), messages: $("run-messages"),
  runAdmin: $("run-admin"), // staff only: the run's admin page (null for other users)
};
export const continueLabel = ui.form.querySelector(".continue");

// --- small helpers -------------------------------------------------------------------------------------
export function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else if (key.startsWith("data-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

/** What a run was asked: a chat turn's message, else the last user message of its input (a graph's `messages`,
 * OpenAI- or LangChain-shaped); "" when it has none. */
export function inputMessage(input) {
  if (!input || typeof input !== "object") return "";
  if (typeof input.message === "string" && input.message.trim()) return input.message;
  const given = input.graph_input || input;
  const messages = Array.isArray(given.messages) ? given.messages : [];
  const asked = messages.filter((m) => m && (m.role === "user" || m.type === "human")).pop();
  return asked && typeof asked.content === "string" ? asked.content : "";
}

export function showError(message) {
  ui.error.textContent = message || "";
  ui.error.hidden = !message;
}

export function csrfToken() {
  const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]*)/);
  return match ? decodeURIComponent(match[1]) : "";
}

/** Money arrives as a decimal string ("0.00001234", or "1E-8" from Python's str(Decimal)); it is kept
 * exact as a BigInt count of 1e-8 dollars, never as a float. */
export function toUnits(value) {
  const m = /^([+-]?)(\d*)(?:\.(\d*))?(?:[eE]([+-]?\d+))?$/.exec(String(value ?? "0").trim());
  if (!m || (!m[2] && !m[3])) return 0n;
  const whole = m[2] || "0";
  const digits = whole + (m[3] || "");
  const keep = whole.length + Number(m[4] || 0) + COST_DECIMALS; // digits left of the 8th decimal
  if (keep <= 0) return 0n;
  let units;
  if (keep >= digits.length) units = BigInt(digits + "0".repeat(keep - digits.length));
  else units = BigInt(digits.slice(0, keep)) + (digits[keep] >= "5" ? 1n : 0n);
  return m[1] === "-" ? -units : units;
}

export function formatCost(units) {
  const digits = (units < 0n ? -units : units).toString().padStart(COST_DECIMALS + 1, "0");
  return `${units < 0n ? "-" : ""}$${digits.slice(0, -COST_DECIMALS)}.${digits.slice(-COST_DECIMALS)}`;
}

/** The message of an API error body ({"error": {"code", "message", "details"}}), else the HTTP status. */
export async function errorMessage(response) {
  let body = null;
  try { body = await response.json(); } catch (e) { /* not JSON */ }
  const error = body && body.error;
  if (!error || !error.message) return `Request failed: HTTP ${response.status} ${response.statusText}`.trim();
  const details = error.details;
  let extra = "";
  if (Array.isArray(details)) {
    extra = details.map((d) => (d && d.message ? (d.path ? `${d.path}: ${d.message}` : d.message) : "")).filter(Boolean).join("; ");
  } else if (details && typeof details === "object") {
    extra = Object.entries(details).map(([field, msgs]) => `${field}: ${[].concat(msgs).join(" ")}`).join("; ");
  }
  return extra && !error.message.includes(extra) ? `${error.message} (${extra})` : error.message;
}

export function shorten(text, chars) {
  const flat = String(text || "").replace(/\s+/g, " ").trim();
  return flat.length > chars ? `${flat.slice(0, chars - 1)}…` : flat;
}

/** The output price (units per million tokens) in force for provider/model, as the server charges it
 * (GET /api/v1/pricing/in-force/), fetched once per model: only for the estimate shown while tokens stream. */
const outputPrices = new Map();
export function outputPrice(provider, model) {
  const key = `${provider}/${model}`;
  if (!outputPrices.has(key)) {
    const query = new URLSearchParams({ provider, model });
    outputPrices.set(key, apiGet(`/api/v1/pricing/in-force/?${query}`)
      .then((price) => toUnits(price.output_per_million))
      .catch(() => 0n)); // no price in force: no estimate of cost
  }
  return outputPrices.get(key);
}

export async function apiGet(url) {
  const response = await fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" });
  if (!response.ok) throw new Error(await errorMessage(response));
  return response.json();
}

/** Reads a text/event-stream body, calling onEnvelope for each frame's data; frames may be split across
 * chunks. Resolves when the server ends the stream. */
export async function readEventStream(body, onEnvelope) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  const frame = (text) => {
    const data = [];
    for (const line of text.split("\n")) {
      if (line.startsWith("data:")) data.push(line.slice(line.startsWith("data: ") ? 6 : 5));
    }
    if (data.length) onEnvelope(JSON.parse(data.join("\n")));
  };
  for (;;) {
    const { value, done } = await reader.read();
    buffer += decoder.decode(value || new Uint8Array(), { stream: !done });
    buffer = buffer.replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      frame(buffer.slice(0, end));
      buffer = buffer.slice(end + 2);
    }
    if (done) return;
  }
}
