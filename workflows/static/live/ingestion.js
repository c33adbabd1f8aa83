/* Documents being added to your knowledge collections, live: the ingestion job's `document_updated` events on your
 * own feed (/ws/events/), one line per document: its status, the chunks embedded of its total, or why it failed.
 * The feed is reopened after a drop; a logged-out page (4401) stops (the run's own socket says so). */

import { BACKOFF_MS, el } from "./page.js";

const panel = document.getElementById("ingestion");
const list = document.getElementById("ingestion-list");

function line(data) {
  const counted = data.chunks_total ? ` · ${data.chunks_done}/${data.chunks_total} chunks` : "";
  return `${data.title || data.document_id}: ${data.status}${counted}${data.error ? ` (${data.error})` : ""}`;
}

function documentUpdated(data) {
  let item = [...list.children].find((li) => li.dataset.documentId === data.document_id);
  if (!item) {
    item = el("li", { "data-testid": "ingestion-item", "data-document-id": data.document_id });
    list.prepend(item);
  }
  item.className = `status status-${data.status}`;
  item.dataset.status = data.status;
  item.textContent = line(data);
  panel.hidden = false;
}

export function watchIngestion(attempt = 0) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const socket = new WebSocket(`${scheme}//${location.host}/ws/events/`);
  socket.onopen = () => { attempt = 0; panel.dataset.feed = "open"; };
  socket.onmessage = (message) => {
    let envelope;
    try { envelope = JSON.parse(message.data); } catch (e) { return; } // a bad frame: ignore it
    if (envelope.event === "document_updated" && envelope.data) documentUpdated(envelope.data);
  };
  socket.onclose = (event) => {
    panel.dataset.feed = "closed";
    if (event.code === 4401) return;
    setTimeout(() => watchIngestion(attempt + 1), BACKOFF_MS[Math.min(attempt, BACKOFF_MS.length - 1)]);
  };
}
