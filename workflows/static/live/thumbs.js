/* Thumbs up or down, with a comment, on a message of the live page: a score of the message (POST
 * /api/v1/scores/, source "human"), as any other score. */

import { csrfToken, el, errorMessage } from "./page.js";

export const THUMBS_SCORE = "thumbs";
const shown = new Map(); // message id → its thumbs: a line drawn again keeps the comment being typed

/** The thumbs of one assistant message: a comment box and two buttons; the one sent stays marked. */
export function thumbs(messageId) {
  if (!shown.has(messageId)) shown.set(messageId, thumbsNew(messageId));
  return shown.get(messageId);
}

function thumbsNew(messageId) {
  const comment = el("input", {
    type: "text", class: "thumbs-comment", placeholder: "comment (optional)", maxLength: 5000,
    "data-testid": "thumbs-comment",
  });
  const note = el("span", { class: "thumbs-note", "data-testid": "thumbs-note" });
  const box = el("span", { class: "thumbs", "data-testid": "thumbs" });
  const button = (up) => el("button", {
    type: "button", class: "link thumb", title: up ? "good answer" : "bad answer",
    "data-testid": up ? "thumbs-up" : "thumbs-down",
    onclick: () => send(up),
  }, up ? "👍" : "👎");
  const buttons = [button(true), button(false)];

  async function send(up) {
    buttons.forEach((b) => { b.disabled = true; });
    note.textContent = "…";
    let response;
    try {
      response = await fetch("/api/v1/scores/", {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRFToken": csrfToken() },
        body: JSON.stringify({
          name: THUMBS_SCORE, value: up, source: "human", message: messageId, comment: comment.value.trim(),
        }),
      });
    } catch (e) {
      response = null;
      note.textContent = `not sent: ${e.message}`;
    }
    buttons.forEach((b) => { b.disabled = false; });
    if (!response) return;
    if (!response.ok) {
      note.textContent = `not sent: ${await errorMessage(response)}`;
      return;
    }
    buttons.forEach((b, index) => b.classList.toggle("sent", (index === 0) === up));
    note.textContent = up ? "thanks: scored 👍" : "thanks: scored 👎";
  }

  box.append(...buttons, comment, note);
  return box;
}
