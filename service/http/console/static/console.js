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
  if (response.status === 401) { askForKey(); knowRole(null); }
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

keyForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  sessionStorage.setItem(KEY, document.getElementById("key-input").value.trim());
  keyForm.hidden = true;
  await learnRole();
  route();
});

// ---- who is asking: the key's role decides what the page offers -------------------------

let me = null; // GET /keys/me: name, role, models; null until known (or after a 401)

/** Ask the service who this page's key is, before drawing a view, so that a user key is
 * never offered what only an admin may do (the APIs refuse it anyway). */
async function learnRole() {
  try {
    knowRole(await json("/keys/me"));
  } catch (err) {
    if (err.name !== "AbortError" && err.status !== 401) say(`Who is this key? ${err.message}`);
  }
}

/** Mark the page with the role: what is `admin-only` shows for an admin alone (console.css),
 * and the header names the key the page uses (none without keys: the local admin). */
function knowRole(who) {
  me = who;
  if (who) document.body.dataset.role = who.role;
  else delete document.body.dataset.role;
  const badge = document.getElementById("who");
  badge.textContent = who && who.id
    ? `key ${who.name} · ${who.role}${who.models ? ` · ${who.models.join(", ")}` : ""}` : "";
  badge.hidden = !badge.textContent;
}

function isAdmin() { return Boolean(me && me.role === "admin"); }

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
  const whose = me && !isAdmin()
    ? el("p", { class: "muted", id: "jobs-whose", text: `The jobs of the key ${me.name}: ` +
      "other keys' jobs are for an admin key to see." }) : "";
  view.replaceChildren(el("h1", { text: "Jobs" }), whose, form,
    el("div", { class: "table-wrap" }, table), empty);

  const query = new URLSearchParams({ limit: "100" });
  if (status !== "all") query.set("status", status);
  for (const name of ["model", "batch"]) if (params.get(name)) query.set(name, params.get(name));

  poll(async () => {
    const page = await json(`/jobs?${query}`);
    body.replaceChildren(...page.jobs.map(jobRow));
    empty.hidden = page.jobs.length > 0;
  }, "Could not list jobs");
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
  const tokens = el("p", { class: "muted", id: "job-tokens", "aria-live": "off" });
  const metrics = el("dl", { class: "metrics" });
  const prompt = el("pre", { id: "job-prompt", "aria-label": "Prompt" });
  const request = el("pre", { id: "job-request", "aria-label": "Request" });
  view.replaceChildren(title, state, cancel, el("h2", { text: "Prompt" }), prompt,
    el("h2", { text: "Output" }), tokens, output,
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
      const going = ["queued", "running"].includes(job.status);
      cancel.disabled = !going;
      if (job.eval_count != null) tokenCount(tokens, job.eval_count, going);
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

  describe().then((job) => {
    if (job) follow(`${path}/events`, output, describe, (n) => tokenCount(tokens, n, true));
  });
}

function tokenCount(node, n, going) {
  node.textContent = `${n} token${n === 1 ? "" : "s"}${going ? " so far" : ""}`;
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

/** The records of a streamed body (SSE blocks split by a blank line, NDJSON by a newline),
 * each as it arrives. */
async function* records(response, separator) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf(separator)) >= 0) {
      yield buffer.slice(0, end);
      buffer = buffer.slice(end + separator.length);
    }
  }
}

/** Read a job's SSE events with fetch (EventSource cannot send a key): the log replays from
 * its start, so a reload shows the whole answer so far and goes on from there. `counted`
 * hears the tokens generated so far, which each token (and thinking) event carries. */
async function follow(path, output, changed, counted = () => {}) {
  let text = "";
  try {
    const response = await api(path, { headers: { Accept: "text/event-stream" } });
    for await (const block of records(response, "\n\n")) {
      const event = parseEvent(block);
      if (event.data.eval_count != null && event.type !== "done") counted(event.data.eval_count);
      if (event.type === "token") text += event.data.text || "";
      else if (event.type === "status" && event.data.status === "retrying") text = "";
      if (event.type !== "token") changed();
      output.textContent = text;
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

// ---- batches: progress live, lines, results, cancel, upload ------------------------------

function progressOf(batch) {
  const c = batch.counts;
  const started = Date.parse(batch.in_progress_at || batch.created_at);
  const ended = Date.parse(batch.completed_at || batch.failed_at || batch.cancelled_at || "") ||
    Date.now();
  const seconds = Math.max(0.001, (ended - started) / 1000);
  const rate = batch.eval_count ? batch.eval_count / seconds : 0;
  const left = c.total - c.done;
  const eta = c.done && left > 0 ? (seconds / c.done) * left : null;
  return { c, rate, eta, left };
}

function progressBar(batch) {
  const { c } = progressOf(batch);
  return el("progress", { max: String(Math.max(1, c.total)), value: String(c.done),
    "aria-label": `batch ${batch.id}: ${c.done} of ${c.total} lines done` });
}

function countsText(batch) {
  const { c, rate, eta } = progressOf(batch);
  return `${c.succeeded} done · ${c.failed} failed · ${c.running} running · ` +
    `${c.pending + c.queued} waiting · ${rate.toFixed(1)} tok/s` +
    (eta == null ? "" : ` · ETA ${Math.round(eta)} s`);
}

function batchesView() {
  const file = el("input", { type: "file", id: "batch-file", accept: ".jsonl,.ndjson,.txt",
    required: "" });
  const model = el("input", { id: "batch-model", placeholder: "from each line" });
  const form = el("form", { class: "filters", id: "batch-upload" },
    el("label", {}, "JSONL file", file), el("label", {}, "Model", model),
    el("button", { type: "submit", text: "Start batch" }));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!file.files.length) return say("Choose a JSONL file first.");
    const query = model.value.trim() ? `?model=${encodeURIComponent(model.value.trim())}` : "";
    try {
      const batch = await json(`/batches${query}`, { method: "POST", body: file.files[0],
        headers: { "Content-Type": "application/x-ndjson", "X-Filename": file.files[0].name } });
      location.hash = `#/batches/${encodeURIComponent(batch.id)}`;
    } catch (err) {
      if (err.name !== "AbortError") say(`The batch was not started: ${err.message}`);
    }
  });
  const body = el("tbody");
  const table = el("table", {}, el("thead", {}, el("tr", {}, ...["Batch", "Status", "Model",
    "Progress", "Lines"].map((h) => el("th", { scope: "col", text: h })))), body);
  const empty = el("p", { class: "muted", text: "No batches yet." });
  view.replaceChildren(el("h1", { text: "Batches" }), form,
    el("div", { class: "table-wrap" }, table), empty);
  poll(async () => {
    const page = await json("/batches?limit=50");
    body.replaceChildren(...page.batches.map((batch) => el("tr", {},
      el("td", {}, el("a", { href: `#/batches/${encodeURIComponent(batch.id)}`,
        text: batch.id.slice(0, 14) })),
      el("td", { class: `status-${batch.status}`, text: batch.status }),
      el("td", { text: batch.model || "per line" }),
      el("td", {}, progressBar(batch)),
      el("td", { class: "preview", text: countsText(batch) }))));
    empty.hidden = page.batches.length > 0;
  }, "Could not list batches");
}

function batchView(id) {
  const path = `/batches/${encodeURIComponent(id)}`;
  const state = el("p", { class: "muted", text: "Loading…" });
  const bar = el("div");
  const counts = el("p", { id: "batch-counts" });
  const cancel = el("button", { type: "button", class: "danger", text: "Cancel", disabled: "" });
  const download = el("button", { type: "button", text: "Download results" });
  const lines = el("a", { href: `#/?status=all&batch=${encodeURIComponent(id)}`,
    text: "Its lines in the job list" });
  const failures = el("ul", { id: "batch-failures" });
  view.replaceChildren(el("h1", { text: `Batch ${id}` }), state, bar, counts,
    el("p", { class: "filters" }, cancel, download, lines), failures);
  cancel.addEventListener("click", async () => {
    cancel.disabled = true;
    try { await api(`${path}/cancel`, { method: "POST" }); } catch (err) {
      say(`Could not cancel: ${err.message}`);
    }
  });
  download.addEventListener("click", async () => {
    try {
      const blob = await (await api(`${path}/results`)).blob();
      const link = el("a", { href: URL.createObjectURL(blob), download: `${id}.results.jsonl` });
      document.body.append(link);
      link.click();
      link.remove();
    } catch (err) {
      if (err.name !== "AbortError") say(`Could not download the results: ${err.message}`);
    }
  });
  const ended = ["completed", "failed", "cancelled", "expired"];
  poll(async () => {
    const batch = await json(path);
    state.textContent = `${batch.status} · ${batch.model || "model per line"} · ` +
      `created ${when(batch.created_at)}`;
    state.className = `status-${batch.status}`;
    bar.replaceChildren(progressBar(batch));
    counts.textContent = countsText(batch);
    cancel.disabled = ended.includes(batch.status) || batch.status === "cancelling";
    if (!ended.includes(batch.status)) return true;
    if (batch.counts.failed) await showFailures(`${path}/results`, failures);
    return false;
  }, "Could not read the batch");
}

/** The lines that failed, each with what went wrong (a malformed line, a failed job). */
async function showFailures(path, list) {
  const text = await (await api(path)).text();
  const failed = text.split("\n").filter(Boolean).map((line) => JSON.parse(line))
    .filter((row) => row.status === "failed");
  list.replaceChildren(...failed.map((row) => el("li", { class: "status-failed",
    text: `${row.custom_id ? `${row.custom_id}: ` : ""}${row.error || "failed"}` })));
}

/** Run `step` now and every REFRESH_MS while this view lasts (and while it returns anything
 * but false); a failure is said on the page and tried again. */
function poll(step, failing) {
  const signal = leaving.signal;
  async function again() {
    let more = true;
    try {
      more = (await step()) !== false;
      say("");
    } catch (err) {
      if (err.name === "AbortError") return;
      say(err.status === 404 ? `${failing}: not found.` : `${failing}: ${err.message}`);
      if (err.status === 404) return;
    }
    if (more && !signal.aborted) setTimeout(again, REFRESH_MS);
  }
  again();
}

// ---- models and workers: the store, what each worker holds, pull, copy, delete, unload ----

function size(bytes) {
  if (!bytes) return "–";
  const units = ["B", "KB", "MB", "GB", "TB"];
  const power = Math.min(units.length - 1, Math.floor(Math.log(bytes) / Math.log(1000)));
  return `${(bytes / 1000 ** power).toFixed(power ? 1 : 0)} ${units[power]}`;
}

function modelsView() {
  const name = el("input", { id: "pull-name", placeholder: "smollm2:135m", required: "" });
  const insecure = el("input", { type: "checkbox", id: "pull-insecure" });
  const bar = el("progress", { id: "pull-progress", max: "1", value: "0", hidden: "",
    "aria-label": "Pull progress" });
  const pullState = el("span", { id: "pull-state", class: "muted" });
  const form = el("form", { class: "filters admin-only", id: "pull-form" },
    el("label", {}, "Pull a model", name),
    el("label", {}, "Plain HTTP registry", insecure),
    el("button", { type: "submit", text: "Pull" }), bar, pullState);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    pull(name.value.trim(), insecure.checked, bar, pullState);
  });
  const workers = el("tbody");
  const fleet = el("tbody");
  const store = el("tbody");
  view.replaceChildren(el("h1", { text: "Models and workers" }), form,
    el("h2", { text: "Workers" }),
    el("div", { class: "table-wrap" }, el("table", { id: "workers" }, el("thead", {},
      el("tr", {}, ...["Worker", "Device", "Queues", "Models", "Slots free", "Jobs held",
        "Heartbeat"].map((h) => el("th", { scope: "col", text: h })))), fleet)),
    el("h2", { text: "Loaded, by worker" }),
    el("div", { class: "table-wrap" }, el("table", { id: "loaded" }, el("thead", {},
      el("tr", {}, ...["Model", "Worker", "Size", "Until", ""].map((h) =>
        el("th", { scope: "col", text: h })))), workers)),
    el("h2", { text: "The store" }),
    el("div", { class: "table-wrap" }, el("table", { id: "store" }, el("thead", {},
      el("tr", {}, ...["Model", "Family", "Parameters", "Quantization", "Size"].map((h) =>
        el("th", { scope: "col", text: h })), el("th", { scope: "col", class: "admin-only" }))),
      store)));
  let shown = "";
  poll(async () => {
    const [tags, ps, crew] = await Promise.all([json("/api/tags"), json("/api/ps"),
      json("/api/workers")]);
    fleet.replaceChildren(...(crew.workers.length ? crew.workers.map((w) => el("tr", {},
      el("td", { text: w.node || w.worker }),
      el("td", { text: `${w.device || "–"}${w.gpu_layers ? ` · ${w.gpu_layers} layers` : ""}` }),
      el("td", { text: (w.queues || []).join(", ") }),
      el("td", { text: w.models.join(", ") || "–" }),
      el("td", { text: `${w.free_slots ?? "–"} / ${w.slots ?? "–"}` }),
      el("td", { text: w.running ?? "–" }),
      el("td", { class: w.alive ? "" : "status-failed",
        text: `${Math.round(w.heartbeat_age)} s ago${w.alive ? "" : " · not answering"}` })))
      : [el("tr", {}, el("td", { colspan: "7", class: "muted",
        text: "No worker is running: start one with `corral worker`." }))]));
    const seen = JSON.stringify([tags, ps.models.map((m) => [m.name, m.worker])]);
    if (seen === shown) return; // redrawn only on a change, so focus stays where it was
    shown = seen;
    workers.replaceChildren(...(ps.models.length ? ps.models.map((m) => el("tr", {},
      el("td", { text: m.name }), el("td", { text: m.worker || "–" }),
      el("td", { text: size(m.size) }), el("td", { text: when(m.expires_at) }),
      el("td", {}, action("Unload", () => api("/api/generate", post({ model: m.name,
        keep_alive: 0 })))))) : [el("tr", {}, el("td", { colspan: "5", class: "muted",
      text: "No worker holds a model now." }))]));
    store.replaceChildren(...tags.models.map((m) => el("tr", {},
      el("td", { text: m.name }), el("td", { text: m.details?.family || "–" }),
      el("td", { text: m.details?.parameter_size || "–" }),
      el("td", { text: m.details?.quantization_level || "–" }),
      el("td", { text: size(m.size) }),
      el("td", { class: "admin-only" }, action("Copy", () => {
        const destination = prompt(`Copy ${m.name} to which name?`);
        return destination && api("/api/copy", post({ source: m.name, destination }));
      }), " ", action("Delete", () => confirm(`Delete ${m.name}?`) &&
        api("/api/delete", { ...post({ model: m.name }), method: "DELETE" }), "danger")))));
  }, "Could not list the models");
}

function post(body) {
  return { method: "POST", body: JSON.stringify(body),
    headers: { "Content-Type": "application/json" } };
}

/** A button that runs `act` once at a time and says in the page when it failed. */
function action(label, act, kind = "") {
  const button = el("button", { type: "button", class: kind, text: label });
  button.addEventListener("click", async () => {
    button.disabled = true;
    try { await act(); say(""); } catch (err) {
      if (err.name !== "AbortError") say(`${label} failed: ${err.message}`);
    } finally { button.disabled = false; }
  });
  return button;
}

/** Pull with Ollama's progress lines: one bar over every layer's bytes. */
async function pull(model, insecure, bar, state) {
  if (!model) return say("Name the model to pull.");
  const layers = new Map();
  bar.hidden = false;
  bar.value = 0;
  state.textContent = "starting…";
  try {
    const response = await api("/api/pull", post({ model, insecure, stream: true }));
    for await (const record of records(response, "\n")) {
      if (!record.trim()) continue;
      const step = JSON.parse(record);
      if (step.error) throw new ApiError(500, step.error);
      if (step.digest && step.total) layers.set(step.digest, [step.completed || 0, step.total]);
      const [got, all] = [...layers.values()].reduce(([a, b], [c, d]) => [a + c, b + d], [0, 0]);
      bar.max = String(Math.max(1, all));
      bar.value = String(got);
      state.textContent = step.status === "success" ? `${model}: pulled` : step.status;
    }
  } catch (err) {
    if (err.name === "AbortError") return;
    state.textContent = "";
    say(`Could not pull ${model}: ${err.message}`);
  }
}

// ---- throughput: the figures `corral report` prints, and tokens/s over time --------------

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

function throughputView(params) {
  if (me && !isAdmin()) {
    view.replaceChildren(el("h1", { text: "Throughput" }), el("p", { id: "report-admin",
      class: "muted", text: `The throughput report covers every key's jobs: it needs an ` +
      `admin key, and the key ${me.name} is a user's.` }));
    return;
  }
  const since = el("select", { id: "report-since" });
  for (const [value, label] of [["1h", "last hour"], ["24h", "last day"], ["7d", "last week"],
    ["", "all history"]]) {
    const option = el("option", { value, text: label });
    if (value === (params.get("since") ?? "1h")) option.selected = true;
    since.append(option);
  }
  since.addEventListener("change", () => {
    location.hash = `#/throughput?since=${encodeURIComponent(since.value)}`;
  });
  const chart = el("figure", { id: "throughput-chart", class: "chart" });
  const waits = el("figure", { id: "wait-chart", class: "chart" });
  const body = el("tbody");
  view.replaceChildren(el("h1", { text: "Throughput" }),
    el("p", { class: "filters" }, el("label", {}, "History", since)), chart, waits,
    el("h2", { text: "By model and concurrency" }),
    el("div", { class: "table-wrap" }, el("table", { id: "report" }, el("thead", {},
      el("tr", {}, ...["Model", "Concurrency", "Jobs", "Tokens", "tok/s per job",
        "tok/s in all", "TTFT p50", "TTFT p95", "Latency p50", "Latency p95",
        "Queue wait p50"].map((h) =>
        el("th", { scope: "col", text: h })))), body)));
  const span = since.value;
  const bucket = { "1h": 60, "24h": 900, "7d": 3600 }[span] ?? 3600;
  const query = new URLSearchParams({ bucket: String(bucket) });
  if (span) query.set("since", span);
  poll(async () => {
    const data = await json(`/jobs/report?${query}`);
    body.replaceChildren(...data.rows.map((row) => el("tr", {},
      el("td", { text: row.model }), el("td", { text: row.concurrency }),
      el("td", { text: row.requests }), el("td", { text: row.tokens }),
      el("td", { text: row.tokens_per_s_request.toFixed(1) }),
      el("td", { text: row.tokens_per_s_aggregate.toFixed(1) }),
      el("td", { text: row.ttft_p50_ms == null ? "–" : `${row.ttft_p50_ms.toFixed(0)} ms` }),
      el("td", { text: row.ttft_p95_ms == null ? "–" : `${row.ttft_p95_ms.toFixed(0)} ms` }),
      el("td", { text: `${row.latency_p50_s.toFixed(2)} s` }),
      el("td", { text: `${row.latency_p95_s.toFixed(2)} s` }),
      el("td", { text: row.queue_wait_p50_ms == null ? "–" :
        `${row.queue_wait_p50_ms.toFixed(0)} ms` }))));
    drawSeries(chart, data.series, data.bucket_s, "tokens_per_s", "tokens/s");
    drawSeries(waits, data.series.filter((p) => p.queue_wait_p50_ms != null), data.bucket_s,
      "queue_wait_p50_ms", "queue wait p50, ms");
  }, "Could not read the report");
}

/** One figure of the series (tokens/s, or queue wait) by model over time, one polyline per
 * model, drawn as SVG (no library). */
function drawSeries(figure, points, bucket, field, label) {
  if (!points.length) {
    figure.replaceChildren(el("p", { class: "muted", text: "No finished jobs in this span." }));
    return;
  }
  const width = 720, height = 240, pad = { left: 48, right: 12, top: 12, bottom: 28 };
  const t0 = Math.min(...points.map((p) => p.start));
  const t1 = Math.max(...points.map((p) => p.start)) + bucket;
  const top = Math.max(...points.map((p) => p[field])) * 1.1 || 1;
  const x = (t) => pad.left + ((t - t0) / (t1 - t0)) * (width - pad.left - pad.right);
  const y = (v) => height - pad.bottom - (v / top) * (height - pad.top - pad.bottom);
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img",
    "aria-label": `${label} by model over time` });
  chart.append(svg("line", { x1: pad.left, y1: y(0), x2: width - pad.right, y2: y(0),
    class: "axis" }), svg("line", { x1: pad.left, y1: pad.top, x2: pad.left, y2: y(0),
    class: "axis" }));
  for (const v of [0, top / 2, top]) {
    chart.append(svg("text", { x: pad.left - 6, y: y(v) + 4, "text-anchor": "end" },
      v === 0 ? "0" : v >= 10 ? v.toFixed(0) : v.toPrecision(2)));
  }
  for (const t of [t0, t1]) {
    chart.append(svg("text", { x: x(t), y: height - 8, "text-anchor": t === t0 ? "start" : "end" },
      new Date(t * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })));
  }
  const models = [...new Set(points.map((p) => p.model))];
  const legend = el("figcaption");
  models.forEach((model, i) => {
    const mine = points.filter((p) => p.model === model);
    const path = mine.map((p) => `${x(p.start + bucket / 2)},${y(p[field])}`).join(" ");
    chart.append(svg("polyline", { points: path, class: `series series-${i % 4}` }));
    for (const p of mine) {
      chart.append(svg("circle", { cx: x(p.start + bucket / 2), cy: y(p[field]), r: 3,
        class: `series-${i % 4}` }, undefined));
    }
    legend.append(el("span", { class: `key series-${i % 4}`, text: `● ${model}` }), " ");
  });
  legend.append(`${label}, per ${bucket >= 3600 ? `${bucket / 3600} h` : `${bucket / 60} min`}`);
  figure.replaceChildren(chart, legend);
}

// ---- playground: a chat turn as an ordinary job, one model or two side by side -----------

async function playgroundView(params) {
  const models = el("select", { id: "play-model" });
  const second = el("select", { id: "play-model-2" }, el("option", { value: "", text: "none" }));
  const system = el("textarea", { id: "play-system", rows: "2" });
  const temperature = el("input", { id: "play-temperature", type: "number", min: "0", max: "2",
    step: "0.1", value: "0.8" });
  const predict = el("input", { id: "play-predict", type: "number", min: "1", max: "8192",
    value: "256" });
  const text = el("textarea", { id: "play-prompt", rows: "4", required: "" });
  const send = el("button", { type: "submit", text: "Send" });
  const stop = el("button", { type: "button", class: "danger", text: "Stop", disabled: "" });
  const form = el("form", { id: "play-form" },
    el("p", { class: "filters" }, el("label", {}, "Model", models),
      el("label", {}, "Beside it", second), el("label", {}, "Temperature", temperature),
      el("label", {}, "Max tokens", predict)),
    el("label", { class: "block" }, "System prompt", system),
    el("label", { class: "block" }, "Message", text), el("p", {}, send, " ", stop));
  const panes = el("div", { class: "panes" });
  view.replaceChildren(el("h1", { text: "Playground" }), form, panes);
  try {
    const tags = await json("/api/tags");
    for (const m of tags.models) {
      models.append(el("option", { value: m.name, text: m.name }));
      second.append(el("option", { value: m.name, text: m.name }));
    }
    if (!tags.models.length) say("The store has no model yet: pull one under Models.");
  } catch (err) {
    if (err.name !== "AbortError") say(`Could not list the models: ${err.message}`);
  }
  let running = [];
  const show = (ids) => {
    running = ids;
    stop.disabled = !ids.length;
    panes.replaceChildren(...ids.map((id) => {
      const title = el("h2", { text: "…" });
      const tokens = el("p", { class: "muted play-tokens" });
      const output = el("pre", { class: "play-output", "aria-label": "Answer" });
      const pane = el("section", {}, title, tokens, output);
      const describe = async () => {
        const job = await json(`/jobs/${encodeURIComponent(id)}`);
        title.textContent = `${job.model} · ${job.status}`;
        const ended = !["queued", "running"].includes(job.status);
        if (job.eval_count != null) tokenCount(tokens, job.eval_count, !ended);
        if (ended) running = running.filter((other) => other !== id);
        stop.disabled = !running.length;
        return job;
      };
      describe().then(() => follow(`/jobs/${encodeURIComponent(id)}/events`, output,
        () => describe().catch(() => {}), (n) => tokenCount(tokens, n, true)),
      (err) => say(`Could not read the job: ${err.message}`));
      return pane;
    }));
  };
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const messages = [];
    if (system.value.trim()) messages.push({ role: "system", content: system.value });
    messages.push({ role: "user", content: text.value });
    const options = { temperature: Number(temperature.value), num_predict: Number(predict.value) };
    try {
      const ids = [];
      for (const model of [models.value, second.value].filter(Boolean)) {
        const job = await json("/jobs", post({ kind: "chat", model, messages, options }));
        ids.push(job.id);
      }
      // The jobs' ids in the URL: a reload follows the same answers on from where they are.
      history.replaceState(null, "", `#/playground?jobs=${ids.join(",")}`);
      show(ids);
    } catch (err) {
      if (err.name !== "AbortError") say(`Not sent: ${err.message}`);
    }
  });
  stop.addEventListener("click", async () => {
    for (const id of running) {
      try { await api(`/jobs/${encodeURIComponent(id)}`, { method: "DELETE" }); } catch (err) {
        if (err.status !== 409) say(`Could not stop: ${err.message}`); // 409: it had ended
      }
    }
  });
  const earlier = (params.get("jobs") || "").split(",").filter(Boolean);
  if (earlier.length) show(earlier);
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
  const batch = where.match(/^\/batches\/([^/]+)$/);
  if (batch) return batchView(decodeURIComponent(batch[1]));
  if (where === "/batches") return batchesView();
  if (where === "/models") return modelsView();
  if (where === "/throughput") return throughputView(params);
  if (where === "/playground") return playgroundView(params);
  if (where === "/history") params.set("status", params.get("status") || "all");
  return jobsView(params);
}

window.addEventListener("hashchange", route);
learnRole().then(route);
