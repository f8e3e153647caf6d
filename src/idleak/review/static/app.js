// idleak review: step through candidate pairs and record verdicts with the keyboard.
// Every name is shown with textContent, never as HTML.
"use strict";

const PAGE = 100;
const LABELS = { match: "match", not_match: "not a match", unsure: "unsure", child: "excluded: child",
                 not_a_face: "excluded: not a face" };
const KEYS = { m: "match", n: "not_match", u: "unsure", c: "child", f: "not_a_face" };
const state = { total: 0, index: 0, pages: new Map(), busy: false };

function $(id) { return document.getElementById(id); }
function setText(id, text) { $(id).textContent = text == null ? "" : String(text); }

function status(text, isError) {
  const el = $("status");
  el.textContent = text;
  el.className = isError ? "muted error" : "muted";
}

async function api(path, options) {
  const response = await fetch(path, Object.assign({ credentials: "same-origin" }, options || {}));
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = (await response.json()).error || detail; } catch (e) { /* not JSON */ }
    throw new Error(response.status + " " + detail);
  }
  return response.json();
}

async function page(number) {
  if (!state.pages.has(number)) {
    const data = await api("/api/candidates?offset=" + number * PAGE + "&limit=" + PAGE);
    state.pages.set(number, data.items);
  }
  return state.pages.get(number);
}

async function item(index) {
  const rows = await page(Math.floor(index / PAGE));
  return rows[index % PAGE];
}

function showCounts(counts) {
  setText("reviewed", counts.n_reviewed);
  setText("confirmed", counts.confirmed);
}

function imageUrl(pair, side) {
  return "/api/image/" + encodeURIComponent(pair.id) + "/" + side;
}

async function show(index) {
  if (state.total === 0) return;
  state.index = Math.max(0, Math.min(state.total - 1, index));
  const pair = await item(state.index);
  setText("position", (state.index + 1) + " / " + state.total);
  setText("similarity", pair.similarity == null ? "" : pair.similarity.toFixed(3));
  setText("flag", pair.flagged ? "above threshold" : "");
  setText("note", pair.note);
  setText("left-label", pair.left_label);
  setText("right-label", pair.right_label);
  $("left-img").src = imageUrl(pair, "left");
  $("right-img").src = imageUrl(pair, "right");
  const verdict = $("verdict");
  verdict.textContent = pair.verdict ? LABELS[pair.verdict] : "not reviewed";
  verdict.className = "verdict " + (pair.verdict || "none");
  document.body.dataset.index = String(state.index);
  if (state.index + 1 < state.total) {  // warm the next pair's images
    item(state.index + 1).then(next => {
      new Image().src = imageUrl(next, "left");
      new Image().src = imageUrl(next, "right");
    }).catch(() => {});
  }
}

async function judge(verdict) {
  if (state.busy || state.total === 0) return;
  state.busy = true;
  try {
    const pair = await item(state.index);
    const value = verdict || null;
    const result = await api("/api/verdict", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ pair_id: pair.id, verdict: value }),
    });
    pair.verdict = result.verdict;
    showCounts(result.counts);
    status("saved: " + (value ? LABELS[value] : "cleared") + " (pair " + (state.index + 1) + ")", false);
    await show(value && state.index + 1 < state.total ? state.index + 1 : state.index);
  } catch (error) {
    status("NOT saved: " + error.message + " (is the server still running?)", true);
  } finally {
    state.busy = false;
  }
}

function onKey(event) {
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  const key = event.key;
  if (KEYS[key]) { event.preventDefault(); judge(KEYS[key]); }
  else if (key === "ArrowRight" || key === "ArrowDown" || key === "j") { event.preventDefault(); show(state.index + 1); }
  else if (key === "ArrowLeft" || key === "ArrowUp" || key === "k") { event.preventDefault(); show(state.index - 1); }
  else if (key === "Backspace" || key === "Delete") { event.preventDefault(); judge(""); }
}

async function start() {
  // the token is now in an HttpOnly cookie: drop it from the address bar and history
  if (new URLSearchParams(location.search).has("token")) history.replaceState(null, "", location.pathname);
  try {
    const info = await api("/api/info");
    state.total = info.total;
    setText("analysis", "· " + info.analysis + " · " + info.out);
    setText("question", info.question);
    setText("left-title", info.left_title);
    setText("right-title", info.right_title);
    setText("total", info.total);
    showCounts(info.counts);
    if (info.total === 0) {
      $("empty").className = "";
      $("pair").className = "hidden";
      setText("position", "0 / 0");
    } else {
      await show(info.first_unreviewed);
    }
    document.body.dataset.ready = "1";
  } catch (error) {
    status("cannot load the pairs: " + error.message, true);
  }
  document.addEventListener("keydown", onKey);
  for (const button of document.querySelectorAll("button[data-verdict]")) {
    button.addEventListener("click", () => judge(button.dataset.verdict));
  }
  for (const button of document.querySelectorAll("button[data-move]")) {
    button.addEventListener("click", () => show(state.index + Number(button.dataset.move)));
  }
}

document.addEventListener("DOMContentLoaded", start);
