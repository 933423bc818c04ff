// corral's operations console: one page, routed by the URL's fragment, drawn from the same
// JSON APIs the CLI uses. Every piece of data (prompts, output, names, errors) is set as
// textContent, never as HTML: a job's text is the user's, and may be anything.

const KEY = "corral.key";
const REFRESH_MS = 2000;
const view = document.getElementById("view");
const notice = document.getElementById("notice");
const keyForm = document.getElementById("key-form");
let leaving = new AbortController(); // aborted when the view changes: its polls and streams stop

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

/** One API call with the key, if the user gave one; the body's `error` becomes the message. */
async function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  const key = sessionStorage.getItem(KEY);
  if (key) headers.set("Authorization", `Bearer ${key}`);
  let response;
  try {
    response = await fetch(path, { ...options, headers, signal: options.signal || leaving.signal });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, "corral does not answer: is `corral serve` running?");
  }
  if (response.status === 401) askForKey();
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try { message = (await response.json()).error || message; } catch { /* not JSON */ }
    throw new ApiError(response.status, message);
  }
  return response;
}

async function json(path, options) { return (await api(path, options)).json(); }

function askForKey() {
  keyForm.hidden = false;
  document.getElementById("key-input").focus();
}

keyForm.addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(KEY, document.getElementById("key-input").value.trim());
  keyForm.hidden = true;
  route();
});

function say(message) {
  notice.textContent = message;
  notice.hidden = !message;
}

/** An element with text and attributes; children may be elements or strings (as text). */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === "text") node.textContent = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function age(iso) {
  if (!iso) return "–";
  const seconds = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (seconds < 90) return `${Math.round(seconds)} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

function when(iso) { return iso ? new Date(iso).toLocaleString() : "–"; }

function ms(ns) { return ns == null ? "–" : `${(ns / 1e6).toFixed(1)} ms`; }

// ---- the queue and the job list ----------------------------------------------------------

const FILTERED = { "": "queued,running" };
const PHONE_HIDES = new Set([2, 4, 5, 8, 9]); // columns a phone's width leaves out: position,
// kind, priority, worker, output (the job's page has them all)

function jobsView(params) {
  const status = params.get("status") ?? "queued,running";
  const form = el("form", { class: "filters", role: "search" });
  const statusBox = el("select", { name: "status", id: "f-status" });
  for (const [value, label] of [["queued,running", "queued and running"], ["all", "all"],
    ["queued", "queued"], ["running", "running"], ["succeeded", "succeeded"],
    ["failed", "failed"], ["cancelled", "cancelled"]]) {
    const option = el("option", { value, text: label });
    if (value === status) option.selected = true;
    statusBox.append(option);
  }
  const model = el("input", { name: "model", id: "f-model", value: params.get("model") || "" });
  const batch = el("input", { name: "batch", id: "f-batch", value: params.get("batch") || "" });
  form.append(el("label", {}, "Status", statusBox), el("label", {}, "Model", model),
    el("label", {}, "Batch", batch), el("button", { type: "submit", text: "Filter" }));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const query = new URLSearchParams();
    query.set("status", statusBox.value);
    if (model.value.trim()) query.set("model", model.value.trim());
    if (batch.value.trim()) query.set("batch", batch.value.trim());
    location.hash = `#/?${query}`;
  });
  const body = el("tbody");
  const table = el("table", {},
    el("thead", {}, el("tr", {}, ...["Job", "Status", "Pos.", "Model", "Kind", "Prio.", "Age",
      "Tokens", "Worker", "Output"].map((h, i) =>
      el("th", { scope: "col", class: PHONE_HIDES.has(i) ? "wide" : "", text: h })))), body);
  const empty = el("p", { class: "muted", text: "No jobs here." });
  view.replaceChildren(el("h1", { text: "Jobs" }), form, el("div", { class: "table-wrap" }, table),
    empty);

  const query = new URLSearchParams({ limit: "100" });
  if (status !== "all") query.set("status", FILTERED[status] ?? status);
  for (const name of ["model", "batch"]) if (params.get(name)) query.set(name, params.get(name));

  const signal = leaving.signal;
  async function refresh() {
    try {
      const page = await json(`/jobs?${query}`);
      say("");
      body.replaceChildren(...page.jobs.map(jobRow));
      empty.hidden = page.jobs.length > 0;
    } catch (err) {
      if (err.name === "AbortError") return;
      say(`Could not list jobs: ${err.message}`);
    }
    if (!signal.aborted) setTimeout(refresh, REFRESH_MS);
  }
  refresh();
}

function jobRow(job) {
  const link = el("a", { href: `#/jobs/${encodeURIComponent(job.id)}`, text: job.id.slice(0, 12) });
  return el("tr", {},
    el("td", {}, link),
    el("td", { class: `status-${job.status}`, text: job.status }),
    el("td", { class: "wide", text: job.position ?? "–" }),
    el("td", { text: job.model }),
    el("td", { class: "wide", text: job.kind }),
    el("td", { class: "wide", text: String(job.priority ?? 0) }),
    el("td", { text: age(job.created_at) }),
    el("td", { text: job.eval_count ?? "–" }),
    el("td", { class: "wide", text: job.worker_host || "–" }),
    el("td", { class: "wide preview", text: job.error || job.preview || "" }));
}

// ---- one job: its request, its output streaming in, its metrics, cancel -------------------

function jobView(id) {
  const title = el("h1", { text: `Job ${id}` });
  const state = el("p", { class: "muted", text: "Loading…" });
  const cancel = el("button", { type: "button", class: "danger", text: "Cancel", disabled: "" });
  const output = el("pre", { id: "job-output", "aria-label": "Output" });
  const metrics = el("dl", { class: "metrics" });
  const prompt = el("pre", { id: "job-prompt", "aria-label": "Prompt" });
  const request = el("pre", { id: "job-request", "aria-label": "Request" });
  view.replaceChildren(title, state, cancel, el("h2", { text: "Prompt" }), prompt,
    el("h2", { text: "Output" }), output,
    el("h2", { text: "Metrics" }), metrics, el("h2", { text: "Request" }), request);
  const path = `/jobs/${encodeURIComponent(id)}`;

  cancel.addEventListener("click", async () => {
    cancel.disabled = true;
    try {
      await api(path, { method: "DELETE" });
      say("");
    } catch (err) {
      say(`Could not cancel: ${err.message}`);
      cancel.disabled = false;
    }
  });

  async function describe() {
    try {
      const job = await json(path);
      state.textContent = `${job.status} · ${job.kind} · ${job.model}` +
        (job.worker_host ? ` · on ${job.worker_host}` : "") +
        (job.error ? ` · ${job.error}` : "");
      state.className = `status-${job.status}`;
      cancel.disabled = !["queued", "running"].includes(job.status);
      prompt.textContent = promptOf(job.request || {});
      request.textContent = JSON.stringify(job.request, null, 2);
      const rows = [["created", when(job.created_at)], ["started", when(job.started_at)],
        ["first token", when(job.first_token_at)], ["finished", when(job.finished_at)],
        ["prompt tokens", job.prompt_eval_count], ["output tokens", job.eval_count],
        ["prompt eval", ms(job.prompt_eval_duration)], ["eval", ms(job.eval_duration)],
        ["total", ms(job.total_duration)], ["attempts", job.attempts],
        ["done reason", job.done_reason]];
      metrics.replaceChildren(...rows.flatMap(([name, value]) =>
        [el("dt", { text: name }), el("dd", { text: value ?? "–" })]));
      return job;
    } catch (err) {
      if (err.name !== "AbortError") {
        state.textContent = err.status === 404 ? "No such job." : `Could not read the job: ${err.message}`;
        state.className = "status-failed";
      }
      return null;
    }
  }

  describe().then((job) => { if (job) follow(`${path}/events`, output, describe); });
}

/** What the job was asked, as a person reads it: the prompt, or the conversation. */
function promptOf(request) {
  if (Array.isArray(request.messages)) {
    return request.messages.map((m) => `${m.role}: ${typeof m.content === "string"
      ? m.content : JSON.stringify(m.content)}`).join("\n\n");
  }
  if (request.input !== undefined) return JSON.stringify(request.input, null, 2);
  return [request.system && `system: ${request.system}`, request.prompt ?? ""]
    .filter(Boolean).join("\n\n");
}

/** Read a job's SSE events with fetch (EventSource cannot send a key): the log replays from
 * its start, so a reload shows the whole answer so far and goes on from there. */
async function follow(path, output, changed) {
  let text = "";
  try {
    const response = await api(path, { headers: { Accept: "text/event-stream" } });
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const event = parseEvent(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
        if (event.type === "token") text += event.data.text || "";
        else if (event.type === "status" && event.data.status === "retrying") text = "";
        if (event.type !== "token") changed();
        output.textContent = text;
      }
    }
  } catch (err) {
    if (err.name !== "AbortError") say(`The output stream stopped: ${err.message}`);
  }
  changed();
}

function parseEvent(block) {
  const event = { type: "message", data: {} };
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith("event:")) event.type = line.slice(6).trim();
    else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
  }
  try { event.data = JSON.parse(data.join("\n") || "{}"); } catch { event.data = {}; }
  return event;
}

// ---- routing --------------------------------------------------------------------------------

function route() {
  leaving.abort();
  leaving = new AbortController();
  say("");
  const [where, query = ""] = location.hash.replace(/^#/, "").split("?");
  const params = new URLSearchParams(query);
  const job = where.match(/^\/jobs\/([^/]+)$/);
  if (job) return jobView(decodeURIComponent(job[1]));
  if (where === "/history") params.set("status", params.get("status") || "all");
  return jobsView(params);
}

window.addEventListener("hashchange", route);
route();
