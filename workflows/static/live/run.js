/* Chatter live page: one run on screen (see live.js). */
import {
  BACKOFF_MS, TERMINAL, apiGet, continueLabel, csrfToken, el, errorMessage, formatCost, inputMessage, outputPrice,
  readEventStream, showError, toUnits, ui,
} from "./page.js";
import { thumbs } from "./thumbs.js";

// One run on screen: its events applied once each, in seq order; its counters, text, nodes and question.
export class Run {
  /** `listChanged`: called when the run's news changes the list of recent runs (it started, it ended). */
  constructor(id, listChanged) {
    this.id = id;
    this.listChanged = listChanged;
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
    this.messages = new Map(); // message id → its line: every message the run saved (a graph's tool messages too)
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
    if (ui.runAdmin) {
      ui.runAdmin.hidden = !this.id;
      ui.runAdmin.href = this.id ? `${ui.runAdmin.dataset.base}${encodeURIComponent(this.id)}/change/` : "#";
    }
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
    // A graph's interrupt(value) that is not text: its value, as the graph gave it
    ui.answerPrompt.textContent = !asked ? "" : asked.prompt || JSON.stringify(asked.value ?? "");
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
      this.listChanged();
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
      case "tool_start":
        this.toolStarted(data);
        break;
      case "tool_called":
        this.toolCalled(data);
        break;
      case "retrieval":
        this.retrieved(data);
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
        this.messageLine(data.message_id, data);
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
      const message = inputMessage(detail.input_data);
      if (!this.closed && this.question === null && message) {
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

  toolStarted(data) {
    const line = [...this.nodes.values()].reverse().find((l) => l.dataset.nodeId === data.node_id);
    if (!line) return;
    line.tools.append(el("span", { class: "tool tool-running", "data-tool": data.tool }, `${data.tool} …`));
  }

  toolCalled(data) {
    const line = [...this.nodes.values()].reverse().find((l) => l.dataset.nodeId === data.node_id);
    if (!line) return;
    const done = el("span", { class: data.ok ? "tool" : "tool tool-failed" },
      `${data.tool} ${data.ok ? "✓" : "✗"} ${data.duration_ms ?? "?"} ms`);
    const running = [...line.tools.querySelectorAll(".tool-running")].find((s) => s.dataset.tool === data.tool);
    if (running) running.replaceWith(done);
    else line.tools.append(done);
  }

  /** A search of knowledge collections: how many chunks it found, and how long it took, on its node's line. */
  retrieved(data) {
    const line = [...this.nodes.values()].reverse().find((l) => l.dataset.nodeId === data.node_id);
    if (!line) return;
    const chunks = data.chunks || [];
    line.tools.append(el("span", { class: "tool retrieval", "data-testid": "retrieval",
      title: chunks.map((c) => `${c.title} #${c.position} (${Number(c.score).toFixed(3)})`).join("\n") },
    `retrieval: ${chunks.length} chunks ${data.latency_ms ?? "?"} ms`));
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
    this.showMessages();
    this.listChanged();
  }

  /** A line of the run's messages: its role and usage now (from its message_saved event), its content once the
   * run has ended (from the API). */
  messageLine(id, message) {
    let line = this.messages.get(id);
    if (!line) {
      line = el("li", { class: "run-message", "data-testid": "run-message", "data-message-id": id });
      this.messages.set(id, line);
      ui.messages.append(line);
      ui.messages.hidden = false;
    }
    const calls = (message.tool_calls || []).map((call) => `→ ${call.name}(${call.arguments ?? ""})`).join(" ");
    const content = [message.content, calls].filter(Boolean).join(" ");
    // replaceChildren writes a null as the text "null": only the parts the line has
    line.replaceChildren(...[
      el("span", { class: "run-message-role", "data-testid": "run-message-role" }, message.role),
      content ? el("span", { class: "run-message-content", "data-testid": "run-message-content" }, content) : null,
      el("span", { class: "run-message-usage", "data-testid": "run-message-usage" },
        `${message.total_tokens} tokens · ${formatCost(toUnits(message.cost))}`),
      message.role === "assistant" ? thumbs(id) : null,
    ].filter(Boolean));
    return line;
  }

  /** Every message the run saved, in the conversation's order, with what each cost. */
  async showMessages() {
    if (!this.conversationId || !this.id) return;
    const messages = [];
    let url = `/api/v1/conversations/${encodeURIComponent(this.conversationId)}/messages/`
      + `?execution=${encodeURIComponent(this.id)}`;
    try {
      for (let pages = 0; url && pages < 20; pages += 1) {
        const page = await apiGet(url);
        messages.push(...(page.results || []));
        url = page.next;
      }
    } catch (e) {
      return; // the lines from the events stay
    }
    if (this.closed) return;
    ui.messages.replaceChildren();
    this.messages.clear();
    for (const message of messages) this.messageLine(message.id, message);
    ui.messages.hidden = messages.length === 0;
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
      this.listChanged();
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
