// Lamina console: the few interactive parts of the pages. Every action is a call to the public API
// (the same routes a client calls), made with the session cookie and the page's CSRF token.
"use strict";

const csrf = () => document.querySelector('meta[name="csrf-token"]').content;
const $ = (sel, root = document) => root.querySelector(sel);
const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

function toast(message, bad = false) {
  const box = $("#toast");
  box.textContent = message;
  box.className = bad ? "show bad" : "show";
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => (box.className = ""), 6000);
}

// One call to the API. Errors come back as OpenAI's error body; its message is what people read.
async function api(path, { method = "GET", body } = {}) {
  const headers = { "X-CSRF-Token": csrf() };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method, headers, credentials: "same-origin", body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try { message = (await response.json()).error.message; } catch (_) { /* not JSON */ }
    throw new Error(message);
  }
  return response;
}

// -- sign out ---------------------------------------------------------------------------------------
$("#sign-out")?.addEventListener("click", async () => {
  await api("/console/session/end", { method: "POST" }).catch(() => {});
  window.location.href = "/console/login";
});

// -- chat -------------------------------------------------------------------------------------------
const chat = { thread: null, sentSystem: false };

async function listThreads() {
  const list = $("#thread-list");
  if (!list) return;
  const { data } = await (await api("/v1/threads?limit=30")).json();
  list.replaceChildren(...data.map((t) => el("li", {},
    el("button", { type: "button", class: "link" + (t.id === chat.thread ? " current" : ""),
      onclick: () => openThread(t.id) }, t.title || t.id))));
}

async function openThread(id) {
  const thread = await (await api(`/v1/threads/${encodeURIComponent(id)}`)).json();
  chat.thread = id;
  chat.sentSystem = true;
  const box = $("#messages");
  box.replaceChildren();
  for (const m of thread.messages) if (m.role !== "system") box.append(bubble(m.role, m.content));
  listThreads();
}

function bubble(role, text) {
  return el("li", { class: `msg ${role}` }, el("span", { class: "who" }, role === "user" ? "You" : "Model"),
    el("div", { class: "text" }, text));
}

function feedbackBar(requestId) {
  const bar = el("div", { class: "feedback", role: "group", "aria-label": "Feedback on this answer" });
  const send = async (body, done) => {
    try {
      await api("/v1/feedback", { method: "POST", body: { request_id: requestId, ...body } });
      toast(done);
      return true;
    } catch (e) { toast(e.message, true); return false; }
  };
  const up = el("button", { type: "button", "aria-label": "Thumbs up", onclick: async () => {
    if (await send({ thumbs: "up" }, "Thanks: thumbs up recorded")) up.setAttribute("aria-pressed", "true");
  } }, "👍");
  const down = el("button", { type: "button", "aria-label": "Thumbs down", onclick: async () => {
    if (await send({ thumbs: "down" }, "Thumbs down recorded: it goes to the review queue"))
      down.setAttribute("aria-pressed", "true");
  } }, "👎");
  const fixId = `fix-${requestId}`;
  const fix = el("details", {}, el("summary", {}, "Correct it"),
    el("label", { for: fixId }, "A better answer"), el("textarea", { id: fixId, rows: "2" }),
    el("button", { type: "button", onclick: async () => {
      const text = $(`#${CSS.escape(fixId)}`).value.trim();
      if (text && await send({ correction: text }, "Correction recorded")) fix.open = false;
    } }, "Send correction"));
  bar.append(up, down, fix);
  return bar;
}

function citationList(citations) {
  return el("ol", { class: "citations", "aria-label": "Sources" }, ...citations.map((c) =>
    el("li", {}, el("details", {}, el("summary", {}, `[${c.index}] ${c.title || c.source || c.document_id || "source"}`),
      el("blockquote", {}, (c.highlight && c.highlight.text) || c.text || "")))));
}

async function sendChat(event) {
  event.preventDefault();
  const prompt = $("#prompt");
  const text = prompt.value.trim();
  if (!text) return;
  const model = $("#model").value;
  if (!model) { toast("No model to ask: train or import one first", true); return; }
  $("#send").disabled = true;
  try {
    if (!chat.thread) {
      const made = await (await api("/v1/threads", { method: "POST", body: { title: text.slice(0, 60) } })).json();
      chat.thread = made.id;
      chat.sentSystem = false;
    }
    const messages = [];
    const system = $("#system").value.trim();
    if (system && !chat.sentSystem) messages.push({ role: "system", content: system });
    messages.push({ role: "user", content: text });
    const body = {
      model, messages, stream: true, thread: chat.thread,
      temperature: Number($("#temperature").value), top_p: Number($("#top_p").value),
      max_tokens: Number($("#max_tokens").value),
    };
    if ($("#rag").value) body.rag = { collection: $("#rag").value, answer: $("#rag-answer").value };
    const box = $("#messages");
    box.append(bubble("user", text));
    prompt.value = "";
    const answer = bubble("assistant", "");
    answer.setAttribute("aria-busy", "true");
    box.append(answer);
    const started = performance.now();
    const response = await api("/v1/chat/completions", { method: "POST", body });
    const requestId = response.headers.get("x-request-id");
    const out = $(".text", answer);
    let first = null, chunks = 0, finish = null, usage = null, citations = null, buffer = "";
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const line = buffer.slice(0, cut).trim();
        buffer = buffer.slice(cut + 2);
        if (!line.startsWith("data:")) continue;
        const data = line.slice(5).trim();
        if (data === "[DONE]") continue;
        const chunk = JSON.parse(data);
        if (chunk.error) throw new Error(chunk.error.message);
        if (chunk.citations) citations = chunk.citations;
        if (chunk.usage) usage = chunk.usage;
        for (const choice of chunk.choices || []) {
          const delta = choice.delta?.content;
          if (delta) {
            if (first === null) first = performance.now() - started;
            chunks += 1;
            out.textContent += delta;
          }
          if (choice.finish_reason) finish = choice.finish_reason;
        }
      }
    }
    answer.removeAttribute("aria-busy");
    const total = performance.now() - started;
    if (finish === "content_filter") answer.append(el("p", { class: "error" }, "Stopped by a guardrail."));
    if (citations && citations.length) answer.append(citationList(citations));
    if (requestId) answer.append(feedbackBar(requestId));
    chat.sentSystem = true;
    const tokens = usage ? usage.completion_tokens : chunks;
    $("#readout").textContent = `${tokens} tokens · first token ${first === null ? "—" : Math.round(first) + " ms"}`
      + ` · ${Math.round(total)} ms in all · ${(tokens / (total / 1000)).toFixed(1)} tokens/s · finish: ${finish}`;
    listThreads();
  } catch (e) {
    toast(e.message, true);
  } finally {
    $("#send").disabled = false;
  }
}

if ($("#chat-form")) {
  $("#chat-form").addEventListener("submit", sendChat);
  $("#prompt").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); $("#chat-form").requestSubmit(); }
  });
  $("#new-thread").addEventListener("click", () => {
    chat.thread = null;
    $("#messages").replaceChildren();
    listThreads();
    $("#prompt").focus();
  });
  listThreads().catch((e) => toast(e.message, true));
}

// -- image studio -----------------------------------------------------------------------------------
$("#image-form")?.addEventListener("submit", async (event) => {
  event.preventDefault();
  const status = $("#image-status");
  const button = $("#generate");
  button.disabled = true;
  status.textContent = "Generating…";
  const started = performance.now();
  try {
    const body = {
      model: $("#image-model").value, prompt: $("#image-prompt").value, n: Number($("#image-n").value),
      steps: Number($("#image-steps").value), guidance: Number($("#image-guidance").value),
      seed: Number($("#image-seed").value), sampler: $("#image-sampler").value,
    };
    const { data } = await (await api("/v1/images/generations", { method: "POST", body })).json();
    const gallery = $("#gallery");
    const label = `${body.model}, “${body.prompt || "any"}”, seed ${body.seed}`;
    data.forEach((image, i) => gallery.prepend(el("li", {},
      el("img", { src: `data:image/png;base64,${image.b64_json}`, alt: `Generated by ${label} (${i + 1})` }),
      el("span", { class: "muted" }, label))));
    status.textContent = `${data.length} image(s) in ${Math.round(performance.now() - started)} ms`;
    $("#image-seed").value = body.seed + 1;
  } catch (e) {
    status.textContent = "";
    toast(e.message, true);
  } finally {
    button.disabled = false;
  }
});

const walk = { frames: [] };
function showFrame() {
  const i = Number($("#walk-slider").value);
  $("#walk-frame").src = `data:image/png;base64,${walk.frames[i]}`;
  $("#walk-frame").alt = `Frame ${i + 1} of ${walk.frames.length} of the latent walk`;
}
$("#walk-form")?.addEventListener("submit", async (event) => {
  event.preventDefault();
  const button = $("#walk-go");
  button.disabled = true;
  $("#image-status").textContent = "Walking the latent space…";
  try {
    const body = {
      model: $("#image-model").value, prompt: $("#image-prompt").value, frames: Number($("#walk-frames").value),
      seed: Number($("#image-seed").value), steps: Number($("#image-steps").value),
    };
    const { data } = await (await api("/v1/images/interpolations", { method: "POST", body })).json();
    walk.frames = data.map((image) => image.b64_json);
    const slider = $("#walk-slider");
    slider.max = String(walk.frames.length - 1);
    slider.value = "0";
    $("#walk").hidden = false;
    showFrame();
    $("#image-status").textContent = `${walk.frames.length} frames: move the slider`;
  } catch (e) {
    $("#image-status").textContent = "";
    toast(e.message, true);
  } finally {
    button.disabled = false;
  }
});
$("#walk-slider")?.addEventListener("input", showFrame);

// -- registry: promote and roll back ------------------------------------------------------------------
for (const button of $$("button.promote")) {
  button.addEventListener("click", async () => {
    const { ref, alias } = button.dataset;
    if (!window.confirm(`Point ${ref.split("@")[0]}@${alias} at ${ref}? Serving follows at the next request.`)) return;
    try {
      await api("/admin/models/promote", { method: "POST", body: { ref, alias, reason: "console" } });
      window.location.reload();
    } catch (e) { toast(e.message, true); }
  });
}
for (const button of $$("button.rollback")) {
  button.addEventListener("click", async () => {
    const { name, alias } = button.dataset;
    if (!window.confirm(`Move ${name}@${alias} back to the version it named before?`)) return;
    try {
      await api("/admin/models/rollback", { method: "POST", body: { name, alias } });
      window.location.reload();
    } catch (e) { toast(e.message, true); }
  });
}

// -- review queue --------------------------------------------------------------------------------------
for (const button of $$("button.decide")) {
  button.addEventListener("click", async () => {
    const { id, decision } = button.dataset;
    const body = { decision };
    if (decision === "correct") {
      body.correction = $(`#correction-${id}`).value.trim();
      if (!body.correction) { toast("Write the correction first", true); return; }
    }
    try {
      await api(`/v1/review/${id}`, { method: "POST", body });
      $(`#item-${id}`).remove();
      toast(`Item ${id}: ${decision}d`);
    } catch (e) { toast(e.message, true); }
  });
}

// -- rails ---------------------------------------------------------------------------------------------
$("#rails-form")?.addEventListener("submit", async (event) => {
  event.preventDefault();
  const out = $("#rails-result");
  out.textContent = "Checking…";
  const text = $("#rails-text").value;
  const stage = $('input[name="stage"]:checked').value;
  try {
    const result = await (await api("/admin/rails/test", { method: "POST", body: { text, stage } })).json();
    const rows = result.verdicts.map((v) => el("tr", {}, el("td", {}, v.rail),
      el("td", {}, el("span", { class: `badge ${v.action}` }, v.action)), el("td", {}, (v.score ?? 0).toFixed(2)),
      el("td", {}, (v.reasons || []).join("; "))));
    const table = el("table", {}, el("thead", {}, el("tr", {}, ...["rail", "action", "score", "why"].map((h) =>
      el("th", { scope: "col" }, h)))), el("tbody", {}, ...rows));
    const spans = result.verdicts.flatMap((v) => v.spans || []).sort((a, b) => a.start - b.start);
    const marked = el("p", { class: "marked" });
    let at = 0;
    for (const s of spans) {
      if (s.start < at) continue;
      marked.append(text.slice(at, s.start), el("mark", { title: s.label }, text.slice(s.start, s.end)));
      at = s.end;
    }
    marked.append(text.slice(at));
    const verdict = result.blocked ? el("p", { class: "error" }, `Blocked by ${result.blocked}`)
      : el("p", {}, "Passes as: ", el("q", {}, result.text));
    out.replaceChildren(verdict, el("h2", {}, "Spans"), marked, el("h2", {}, "Verdicts"), table);
  } catch (e) {
    out.textContent = "";
    toast(e.message, true);
  }
});

// -- admin: keys ---------------------------------------------------------------------------------------
$("#key-form")?.addEventListener("submit", async (event) => {
  event.preventDefault();
  const rpm = Number($("#key-rpm").value);
  const body = { name: $("#key-name").value, role: $("#key-role").value, limits: rpm ? { requests_per_minute: rpm } : {} };
  try {
    const made = await (await api("/admin/keys", { method: "POST", body })).json();
    $("#new-key").replaceChildren(el("div", { class: "card secret" },
      el("p", {}, `Key for ${made.name} (${made.role}). Copy it now: it is shown once and never again.`),
      el("label", { for: "made-key" }, "New key"), el("input", { id: "made-key", readonly: "", value: made.key })));
    $("#made-key").select();
  } catch (e) { toast(e.message, true); }
});
for (const button of $$("button.revoke")) {
  button.addEventListener("click", async () => {
    if (!window.confirm(`Revoke the key ${button.dataset.name}? Its clients and console sessions stop at once.`)) return;
    try {
      await api(`/admin/keys/${button.dataset.id}`, { method: "DELETE" });
      window.location.reload();
    } catch (e) { toast(e.message, true); }
  });
}

// -- runs: a live curve --------------------------------------------------------------------------------
const curve = $("#curve");
if (curve && curve.dataset.live === "yes") {
  setInterval(() => { curve.src = curve.src.split("?")[0] + "?t=" + Date.now(); }, 5000);
}
