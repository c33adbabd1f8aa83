/* Chatter live page (SPEC §6): recent runs, a chat turn streamed over SSE, and any run watched over the
 * websocket. Persisted events are applied once each, in seq order, so a reconnect with ?after=<last seq>
 * never repeats a node line or a counter. Tokens are not persisted: text missed while disconnected is
 * replaced by the saved reply once the run has ended. While a model call streams, each `token` event counts
 * as one completion token (priced at the model's output price, as the server resolves it): an estimate shown
 * in italics, replaced by the exact figures of the call's `token_usage` event and the run's terminal event. */
"use strict";

(() => {
  const TERMINAL = new Set(["workflow_completed", "workflow_failed", "workflow_cancelled"]);
  const BACKOFF_MS = [250, 500, 1000, 2000, 4000];
  const COST_DECIMALS = 8;
  const TITLE_CHARS = 60;
  const $ = (id) => document.getElementById(id);
  const ui = {
    runList: $("run-list"), refresh: $("runs-refresh"), form: $("chat-form"), error: $("error"),
    runId: $("run-id"), status: $("run-status"), note: $("run-note"), nodes: $("node-list"), text: $("run-text"),
    prompt: $("prompt-tokens"), completion: $("completion-tokens"), total: $("total-tokens"), cost: $("cost"),
    counters: $("counters"), question: $("run-question"), answerForm: $("answer-form"),
    answerPrompt: $("answer-prompt"),
  };
  const continueLabel = ui.form.querySelector(".continue");
  let current = null; // the Run on screen

  // --- small helpers -------------------------------------------------------------------------------------
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (key === "class") node.className = value;
      else if (key.startsWith("data-")) node.setAttribute(key, value);
      else node[key] = value;
    }
    node.append(...children.filter((c) => c !== null && c !== undefined));
    return node;
  }

  function showError(message) {
    ui.error.textContent = message || "";
    ui.error.hidden = !message;
  }

  function csrfToken() {
    const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]*)/);
    return match ? decodeURIComponent(match[1]) : "";
  }

  /** Money arrives as a decimal string ("0.00001234", or "1E-8" from Python's str(Decimal)); it is kept
   * exact as a BigInt count of 1e-8 dollars, never as a float. */
  function toUnits(value) {
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

  function formatCost(units) {
    const digits = (units < 0n ? -units : units).toString().padStart(COST_DECIMALS + 1, "0");
    return `${units < 0n ? "-" : ""}$${digits.slice(0, -COST_DECIMALS)}.${digits.slice(-COST_DECIMALS)}`;
  }

  /** The message of an API error body ({"error": {"code", "message", "details"}}), else the HTTP status. */
  async function errorMessage(response) {
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

  function shorten(text, chars) {
    const flat = String(text || "").replace(/\s+/g, " ").trim();
    return flat.length > chars ? `${flat.slice(0, chars - 1)}…` : flat;
  }

  /** The output price (units per million tokens) in force for provider/model, as the server charges it
   * (GET /api/v1/pricing/in-force/), fetched once per model: only for the estimate shown while tokens stream. */
  const outputPrices = new Map();
  function outputPrice(provider, model) {
    const key = `${provider}/${model}`;
    if (!outputPrices.has(key)) {
      const query = new URLSearchParams({ provider, model });
      outputPrices.set(key, apiGet(`/api/v1/pricing/in-force/?${query}`)
        .then((price) => toUnits(price.output_per_million))
        .catch(() => 0n)); // no price in force: no estimate of cost
    }
    return outputPrices.get(key);
  }

  async function apiGet(url) {
    const response = await fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" });
    if (!response.ok) throw new Error(await errorMessage(response));
    return response.json();
  }

  /** Reads a text/event-stream body, calling onEnvelope for each frame's data; frames may be split across
   * chunks. Resolves when the server ends the stream. */
  async function readEventStream(body, onEnvelope) {
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

  // --- one run on screen ---------------------------------------------------------------------------------
  class Run {
    constructor(id) {
      this.id = id;
      this.lastSeq = 0;
      this.terminal = null;
      this.conversationId = null;
      this.messageId = null;
      this.counters = { prompt: 0, completion: 0, total: 0, cost: 0n };
      this.streamed = 0; // tokens of the model call in progress, not yet in a token_usage event
      this.outputPrice = 0n; // units of 1e-8 dollars per million output tokens, for the estimate
      this.model = null;
      this.question = null;
      this.asking = new Map(); // interrupt id → its input_required data: questions the run waits on
      this.nodes = new Map(); // node run index → its line
      this.text = "";
      this.textBreak = false;
      this.attempt = 0;
      this.socket = null;
      this.timer = null;
      this.abort = null;
      this.closed = false;
    }

    /** Stop listening (another run was picked); the run itself goes on on the server. */
    close() {
      this.closed = true;
      if (this.abort) this.abort.abort();
      if (this.socket) this.socket.close();
      clearTimeout(this.timer);
    }

    // Rendering
    render() {
      ui.runId.textContent = this.id || "—";
      const streamed = this.terminal ? 0 : this.streamed;
      ui.prompt.textContent = String(this.counters.prompt);
      ui.completion.textContent = String(this.counters.completion + streamed);
      ui.total.textContent = String(this.counters.total + streamed);
      ui.cost.textContent = formatCost(this.counters.cost + (BigInt(streamed) * this.outputPrice) / 1000000n);
      ui.counters.classList.toggle("estimated", streamed > 0);
      ui.counters.title = streamed > 0 ? "estimated while the model streams; exact once its usage arrives" : "";
      ui.question.textContent = this.question || "";
      ui.question.hidden = !this.question;
      const asked = this.terminal ? null : this.asking.values().next().value;
      ui.answerForm.hidden = !asked;
      ui.answerPrompt.textContent = asked ? asked.prompt : "";
      ui.answerForm.dataset.interruptId = asked ? asked.interrupt_id : "";
      continueLabel.hidden = !this.conversationId;
      for (const item of ui.runList.querySelectorAll("[data-execution-id]")) {
        item.classList.toggle("selected", item.dataset.executionId === this.id);
      }
    }

    setStatus(status) {
      ui.status.textContent = status;
      ui.status.className = `status status-${status}`;
    }

    setNote(note) { ui.note.textContent = note || ""; }

    fail(message) {
      this.close();
      if (!this.terminal) this.setStatus("error");
      this.setNote("");
      showError(message);
    }

    // Events
    apply(envelope) {
      if (this.closed || !envelope || typeof envelope !== "object") return;
      if (!this.id && envelope.execution_id) {
        this.id = envelope.execution_id;
        history.replaceState(null, "", `#${this.id}`);
        this.render();
        refreshRuns();
      }
      const data = envelope.data || {};
      if (envelope.seq === null || envelope.seq === undefined) {
        if (envelope.event === "token" && !this.terminal) {
          this.appendText(data.text || "");
          this.streamed += 1;
          this.render();
        }
        return;
      }
      if (envelope.seq <= this.lastSeq) return; // already applied: a replay overlapping what was seen
      this.lastSeq = envelope.seq;
      switch (envelope.event) {
        case "workflow_started":
          this.conversationId = data.conversation_id || this.conversationId;
          this.setStatus("running");
          this.priceFor(data.provider, data.model);
          break;
        case "node_started":
          this.nodeLine(data);
          this.textBreak = true;
          break;
        case "node_completed":
        case "node_failed":
          this.nodeFinished(envelope.event === "node_failed" ? "failed" : data.status || "completed", data);
          break;
        case "tool_called":
          this.toolCalled(data);
          break;
        case "token_usage":
          this.counters.prompt += Number(data.prompt_tokens) || 0;
          this.counters.completion += Number(data.completion_tokens) || 0;
          this.counters.total += Number(data.total_tokens) || 0;
          this.counters.cost += toUnits(data.cost);
          this.streamed = 0; // the call's exact figures replace its estimate
          if (data.model && data.model !== this.model) this.priceFor(data.provider, data.model);
          break;
        case "message_saved":
          if (data.role === "assistant") this.messageId = data.message_id;
          this.conversationId = data.conversation_id || this.conversationId;
          break;
        case "limit_exceeded":
          this.setNote(`limit exceeded: ${data.limit} (${data.value})`);
          break;
        case "input_required":
          this.asking.set(data.interrupt_id, data);
          this.setStatus("waiting");
          break;
        case "workflow_resumed":
          for (const id of data.answered || []) this.asking.delete(id);
          this.setStatus("running");
          break;
        default:
          if (TERMINAL.has(envelope.event)) this.finish(envelope.event, data);
      }
      this.render();
    }

    async priceFor(provider, model) {
      if (!provider || !model) return;
      this.model = model;
      const price = await outputPrice(provider, model);
      if (!this.closed && this.model === model) {
        this.outputPrice = price;
        this.render();
      }
    }

    /** The question of a run picked from the list or a link: its input message, from the run's detail. */
    async loadQuestion() {
      if (this.question !== null || !this.id) return;
      try {
        const detail = await apiGet(`/api/v1/executions/${encodeURIComponent(this.id)}/`);
        const message = detail.input_data && detail.input_data.message;
        if (!this.closed && this.question === null && typeof message === "string") {
          this.question = message;
          this.render();
        }
      } catch (e) {
        /* the question is a courtesy: the run is still watched */
      }
    }

    appendText(text) {
      if (this.textBreak && this.text) text = `\n\n${text}`;
      this.textBreak = false;
      this.text += text;
      ui.text.textContent = this.text;
    }

    nodeLine(data) {
      let line = this.nodes.get(data.index);
      if (!line) {
        const info = el("span", { class: "node-info" }, "running…");
        const tools = el("span", { class: "node-tools" });
        line = el("li", { class: "node node-running", "data-testid": "node", "data-node-id": data.node_id },
          el("strong", {}, data.node_id || "?"),
          data.node_type && data.node_type !== data.node_id ? el("span", { class: "muted" }, data.node_type) : null,
          info, tools);
        line.info = info;
        line.tools = tools;
        this.nodes.set(data.index, line);
        ui.nodes.append(line);
      }
      return line;
    }

    nodeFinished(status, data) {
      const line = this.nodeLine(data);
      line.className = `node node-${status}`;
      const parts = [status, `${data.duration_ms ?? "?"} ms`];
      if (data.total_tokens) parts.push(`${data.total_tokens} tokens`, formatCost(toUnits(data.cost)));
      if (data.error) parts.push(data.error);
      line.info.textContent = parts.join(" · ");
    }

    toolCalled(data) {
      const line = [...this.nodes.values()].reverse().find((l) => l.dataset.nodeId === data.node_id);
      if (!line) return;
      line.tools.append(el("span", { class: data.ok ? "tool" : "tool tool-failed" },
        `${data.tool} ${data.ok ? "✓" : "✗"} ${data.duration_ms ?? "?"} ms`));
    }

    finish(event, data) {
      this.terminal = event;
      this.streamed = 0;
      // The terminal event carries the run's totals: set them exactly rather than trusting the running sum.
      this.counters = {
        prompt: Number(data.prompt_tokens) || 0,
        completion: Number(data.completion_tokens) || 0,
        total: Number(data.total_tokens) || 0,
        cost: toUnits(data.cost),
      };
      this.messageId = data.message_id || this.messageId;
      this.setStatus(data.status || event.replace("workflow_", ""));
      this.setNote(data.execution_time_ms != null ? `${data.execution_time_ms} ms` : "");
      if (event !== "workflow_completed") {
        showError(`Run ${event.replace("workflow_", "")}: ${data.error_message || data.error_type || "no reason given"}`);
      }
      clearTimeout(this.timer);
      this.showSavedReply();
      refreshRuns();
    }

    /** Tokens sent while no one listened are gone: show the saved reply when it differs from what streamed. */
    async showSavedReply() {
      let content;
      try {
        const detail = await apiGet(`/api/v1/executions/${encodeURIComponent(this.id)}/`);
        content = detail.output_data && detail.output_data.content;
        if (typeof content !== "string" && this.conversationId && this.messageId) {
          content = await this.savedMessage();
        }
      } catch (e) {
        return; // keep what streamed
      }
      if (!this.closed && typeof content === "string" && content !== this.text) {
        this.text = content;
        ui.text.textContent = content;
      }
    }

    async savedMessage() {
      let url = `/api/v1/conversations/${encodeURIComponent(this.conversationId)}/messages/`;
      for (let pages = 0; url && pages < 50; pages += 1) {
        const page = await apiGet(url);
        const found = (page.results || []).find((m) => m.id === this.messageId);
        if (found) return found.content;
        url = page.next;
      }
      return undefined;
    }

    // Connections
    /** Start a chat turn and follow its SSE stream; onAccepted runs once the server has taken the turn. */
    async streamChat(body, onAccepted) {
      this.abort = new AbortController();
      let response;
      try {
        response = await fetch("/api/v1/chat/", {
          method: "POST",
          credentials: "same-origin",
          headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken(), Accept: "text/event-stream" },
          body: JSON.stringify(body),
          signal: this.abort.signal,
        });
      } catch (e) {
        if (!this.closed) this.fail(`Could not reach the server: ${e.message}`);
        return;
      }
      if (!response.ok || !(response.headers.get("Content-Type") || "").startsWith("text/event-stream")) {
        const message = response.ok ? "The server did not answer with an event stream." : await errorMessage(response);
        if (!this.closed) this.fail(message);
        return;
      }
      onAccepted();
      try {
        await readEventStream(response.body, (envelope) => this.apply(envelope));
      } catch (e) {
        /* dropped: recovered below */
      }
      if (this.closed || this.terminal) return;
      if (!this.id) {
        this.fail("The stream ended before the run started; see the list of runs.");
        refreshRuns();
        return;
      }
      this.reconnect();
    }

    watch() {
      if (this.closed || this.terminal) return;
      const scheme = location.protocol === "https:" ? "wss:" : "ws:";
      const socket = new WebSocket(
        `${scheme}//${location.host}/ws/executions/${encodeURIComponent(this.id)}/?after=${this.lastSeq}`);
      this.socket = socket;
      socket.onopen = () => { if (!this.closed && !this.terminal) this.setNote(""); };
      socket.onmessage = (message) => {
        this.attempt = 0;
        try { this.apply(JSON.parse(message.data)); } catch (e) { /* a bad frame: ignore it */ }
      };
      socket.onclose = (event) => {
        if (this.socket === socket) this.socket = null;
        if (this.closed || this.terminal) return;
        if (event.code === 4401) this.fail("You are not logged in any more: reload the page to log in again.");
        else if (event.code === 4404) this.fail("This run was not found.");
        else if (event.code === 4400) this.fail("The server refused the request for this run's events.");
        else this.reconnect();
      };
    }

    reconnect() {
      const delay = BACKOFF_MS[Math.min(this.attempt, BACKOFF_MS.length - 1)];
      this.attempt += 1;
      this.setNote(`connection lost: reconnecting in ${delay / 1000} s…`);
      clearTimeout(this.timer);
      this.timer = setTimeout(() => this.watch(), delay);
    }
  }

  /** Put a fresh run on screen, replacing the one shown. */
  function show(run, status) {
    if (current) current.close();
    current = run;
    showError("");
    ui.nodes.replaceChildren();
    ui.text.textContent = "";
    run.setStatus(status);
    run.setNote("");
    run.render();
    history.replaceState(null, "", run.id ? `#${run.id}` : location.pathname + location.search);
    return run;
  }

  function watchRun(id, status, question) {
    const run = new Run(id);
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
    const message = run.input_data && run.input_data.message;
    return typeof message === "string" && message.trim() ? message : "";
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
    const run = new Run(null);
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
  const fromHash = location.hash.slice(1);
  if (/^[0-9a-f-]{36}$/i.test(fromHash)) watchRun(fromHash);
})();
