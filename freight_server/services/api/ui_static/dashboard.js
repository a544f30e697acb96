// Freight's dashboard: a page per hash route (#/jobs, #/jobs/<id>, #/runners) over the API's own
// routes. Every request carries the token the user gave (kept in sessionStorage, this tab only);
// a 401 anywhere brings back the sign-in form. Text from the API is only ever set as text
// (textContent), never parsed as HTML: commands and file names are whatever users wrote.

const TOKEN_KEY = "freight.token";
const STATUSES = ["QUEUED", "PENDING", "RUNNING", "COMPLETE", "FAILED"];
const TERMINAL = new Set(["COMPLETE", "FAILED"]);
const PAGE = 100;
const MAX_ROWS = 1000; // the API's largest page
const JOBS_EVERY_MS = 3000;
const JOB_EVERY_MS = 2000;
const RUNNERS_EVERY_MS = 5000;
const LOG_TAIL = 5000; // lines of an earlier output shown before following it
const LOG_KEEP = 20000; // lines kept on the page while following

// The API is wherever /ui is served from (behind a proxy's path prefix too).
const API = location.pathname.replace(/\/ui(\/.*)?$/, "");

class Unauthorized extends Error {}

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// -- talking to the API --------------------------------------------------------------------------

async function request(path, { method = "GET", headers = {}, signal } = {}) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const sent = { ...headers };
  if (token) sent.Authorization = `Bearer ${token}`;
  const response = await fetch(API + path, { method, headers: sent, signal, cache: "no-store" });
  if (response.status === 401) throw new Unauthorized();
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try {
      message = (await response.json()).message || message;
    } catch {
      // not the API's JSON error: keep the status line
    }
    throw new ApiError(response.status, message);
  }
  return response;
}

async function getJson(path, options) {
  return (await request(path, options)).json();
}

function query(params) {
  const kept = Object.entries(params).filter(([, value]) => value !== "" && value != null);
  return new URLSearchParams(kept).toString();
}

// -- small DOM helpers ---------------------------------------------------------------------------

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value == null || value === false) continue;
    if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : value);
  }
  node.append(...children.flat().filter((c) => c != null).map((c) => (c instanceof Node ? c : String(c))));
  return node;
}

function fromTemplate(id) {
  const view = document.getElementById(id).content.firstElementChild.cloneNode(true);
  const slots = {};
  for (const node of view.querySelectorAll("[data-slot]")) slots[node.dataset.slot] = node;
  return { view, slots };
}

function statusBadge(status) {
  return el("span", { class: `status status-${status.toLowerCase()}` }, status);
}

function shortId(id) {
  return id.length > 8 ? id.slice(0, 8) : id;
}

function when(iso) {
  if (!iso) return "";
  const moment = new Date(iso);
  const today = new Date().toDateString() === moment.toDateString();
  return today ? moment.toLocaleTimeString() : moment.toLocaleString();
}

function ago(iso) {
  if (!iso) return "";
  return `${duration((Date.now() - new Date(iso)) / 1000)} ago`;
}

function duration(seconds) {
  if (seconds == null || Number.isNaN(seconds)) return "";
  seconds = Math.max(0, seconds);
  if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 1 : 0)} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} m ${Math.round(seconds % 60)} s`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ${Math.round((seconds % 3600) / 60)} m`;
  return `${Math.floor(seconds / 86400)} d ${Math.round((seconds % 86400) / 3600)} h`;
}

function ran(job) {
  if (!job.started_at) return "";
  const end = job.finished_at ? new Date(job.finished_at) : new Date();
  return duration((end - new Date(job.started_at)) / 1000);
}

function bytes(size) {
  if (size == null) return "";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = size;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${units[unit]}`;
}

function mebibytes(mb) {
  return mb == null ? "" : bytes(mb * 1024 * 1024);
}

// -- the page's frame: notices, sign-in, routing ---------------------------------------------------

const main = document.getElementById("view");
const notice = document.getElementById("notice");
const signOut = document.getElementById("sign-out");
let current = null; // the view on screen: { stop() }

function say(message) {
  notice.textContent = message;
  notice.hidden = !message;
}

function refreshed() {
  document.getElementById("refreshed").textContent = `updated ${new Date().toLocaleTimeString()}`;
}

// What a view does with an error: a 401 asks for a token; anything else is said at the top.
function report(error) {
  if (error instanceof Unauthorized) {
    showLogin(sessionStorage.getItem(TOKEN_KEY) ? "The API refused this token." : "");
  } else if (error.name !== "AbortError") {
    say(error.message || String(error));
  }
}

function show(view) {
  current?.stop();
  current = view;
}

function showLogin(message) {
  show({ stop() {} });
  sessionStorage.removeItem(TOKEN_KEY);
  signOut.hidden = true;
  say("");
  const { view, slots } = fromTemplate("login-view");
  slots.error.textContent = message;
  view.addEventListener("submit", (event) => {
    event.preventDefault();
    const token = new FormData(view).get("token").trim();
    if (!token) return;
    sessionStorage.setItem(TOKEN_KEY, token);
    route();
  });
  main.replaceChildren(view);
  view.querySelector("input").focus();
}

signOut.addEventListener("click", () => showLogin(""));

// Runs `task` now and every `ms` while the tab is visible, until stopped or refused.
function every(ms, task) {
  const controller = new AbortController();
  let timer = null;
  let stopped = false;
  async function tick() {
    timer = null;
    if (stopped) return;
    if (!document.hidden) {
      try {
        await task(controller.signal);
        say("");
        refreshed();
      } catch (error) {
        if (stopped) return;
        report(error);
        if (error instanceof Unauthorized) return;
      }
    }
    if (!stopped) timer = setTimeout(tick, ms);
  }
  tick();
  return {
    stop() {
      stopped = true;
      if (timer) clearTimeout(timer);
      controller.abort();
    },
    now() {
      if (timer) clearTimeout(timer);
      tick();
    },
  };
}

function route() {
  const [path, search] = location.hash.replace(/^#/, "").split("?");
  const params = new URLSearchParams(search || "");
  signOut.hidden = !sessionStorage.getItem(TOKEN_KEY);
  say("");
  const job = path.match(/^\/jobs\/([^/]+)$/);
  const page = job ? "jobs" : path === "/runners" ? "runners" : "jobs";
  for (const link of document.querySelectorAll("[data-nav]")) {
    link.classList.toggle("active", link.dataset.nav === page);
  }
  if (job) show(jobPage(decodeURIComponent(job[1])));
  else if (path === "/runners") show(runnersPage());
  else show(jobsPage(params));
}

// -- #/jobs: the table ---------------------------------------------------------------------------

function jobsPage(params) {
  const { view, slots } = fromTemplate("jobs-view");
  main.replaceChildren(view);
  const chosen = new Set((params.get("status") || "").split(",").filter((s) => STATUSES.includes(s)));
  const filters = slots.filters.elements;
  filters.owner.value = params.get("owner") || "";
  filters.q.value = params.get("q") || "";
  let rows = PAGE;
  let loaded = { count: 0, results: [], next: null };

  function remember() {
    const kept = query({ status: [...chosen].join(","), owner: filters.owner.value.trim(), q: filters.q.value });
    history.replaceState(null, "", `#/jobs${kept ? `?${kept}` : ""}`);
  }

  function matches(job) {
    const words = filters.q.value.trim().toLowerCase().split(/\s+/).filter(Boolean);
    if (!words.length) return true;
    const text = [job.job_id, job.name, job.command, job.owner, job.image, job.runner, job.reason]
      .filter(Boolean)
      .join(" ")
      .toLowerCase();
    return words.every((word) => text.includes(word));
  }

  function render() {
    const shown = loaded.results.filter(matches);
    slots.rows.replaceChildren(...shown.map(jobRow));
    if (!shown.length) {
      slots.rows.append(el("tr", {}, el("td", { colspan: 10, class: "empty" }, "No jobs match.")));
    }
    const searched = filters.q.value.trim() ? `, ${shown.length} of them match the search` : "";
    slots.summary.textContent = `${loaded.count} jobs; the newest ${loaded.results.length} loaded${searched}.`;
    slots.more.hidden = !loaded.next || rows >= MAX_ROWS;
  }

  async function load(signal) {
    const owner = filters.owner.value.trim();
    const status = chosen.size ? [...chosen].join(",") : "all";
    const [page, ...counts] = await Promise.all([
      getJson(`/jobs?${query({ status, owner, limit: rows })}`, { signal }),
      ...STATUSES.map((s) => getJson(`/jobs?${query({ status: s, owner, limit: 1 })}`, { signal })),
    ]);
    loaded = page;
    renderStates(counts.map((each) => each.count));
    render();
  }

  function renderStates(counts) {
    slots.states.replaceChildren(
      ...STATUSES.map((status, i) =>
        el(
          "button",
          {
            type: "button",
            class: `state status-${status.toLowerCase()}${chosen.has(status) ? " chosen" : ""}`,
            "aria-pressed": String(chosen.has(status)),
            "data-status": status,
            onclick: () => {
              if (chosen.has(status)) chosen.delete(status);
              else chosen.add(status);
              remember();
              poll.now();
            },
          },
          el("span", { class: "state-name" }, status),
          el("span", { class: "state-count" }, counts[i]),
        ),
      ),
    );
  }

  let typing = null;
  filters.owner.addEventListener("input", () => {
    remember();
    clearTimeout(typing);
    typing = setTimeout(() => poll.now(), 300);
  });
  filters.q.addEventListener("input", () => {
    remember();
    render();
  });
  slots.filters.addEventListener("submit", (event) => event.preventDefault());
  slots.more.addEventListener("click", () => {
    rows = Math.min(MAX_ROWS, rows + PAGE);
    poll.now();
  });
  const poll = every(JOBS_EVERY_MS, load);
  return poll;
}

function jobRow(job) {
  const link = el("a", { href: `#/jobs/${encodeURIComponent(job.job_id)}`, title: job.job_id }, shortId(job.job_id));
  const label = job.name ? [el("strong", {}, job.name), " "] : [];
  const gpus = job.gpus ? `${job.gpus}${job.assigned_gpus?.length ? "" : "*"}` : "";
  return el(
    "tr",
    { "data-job": job.job_id },
    el("td", { class: "mono" }, link),
    el("td", { class: "command", title: job.command }, ...label, el("code", {}, job.command)),
    el("td", {}, job.owner),
    el("td", {}, statusBadge(job.status)),
    el("td", { class: "reason" }, job.reason || ""),
    el("td", { class: "num", title: gpus.endsWith("*") ? "asked for, not yet given" : "" }, gpus),
    el("td", {}, job.runner || ""),
    el("td", { class: "time", title: job.created_at }, when(job.created_at)),
    el("td", { class: "time", title: job.started_at || "" }, when(job.started_at)),
    el("td", { class: "num" }, ran(job)),
  );
}

// -- #/jobs/<id>: one job ------------------------------------------------------------------------

function jobPage(jobId) {
  const { view, slots } = fromTemplate("job-view");
  main.replaceChildren(view);
  slots.title.textContent = `Job ${jobId}`;
  const logs = new AbortController();
  let following = false;
  let job = null;

  async function load(signal) {
    const [fresh, history] = await Promise.all([
      getJson(`/jobs/${encodeURIComponent(jobId)}`, { signal }),
      getJson(`/jobs/${encodeURIComponent(jobId)}/events`, { signal }),
    ]);
    const first = job === null;
    const changed = job?.status !== fresh.status || job?.attempt !== fresh.attempt;
    job = fresh;
    renderJob(slots, job);
    renderTimeline(slots.timeline, history.events);
    if (!following) {
      following = true;
      followLog(jobId, job, slots, logs.signal).finally(() => (following = false));
    }
    if (first || changed) files.open(files.path);
    if (TERMINAL.has(job.status)) poll.stop();
  }

  slots.cancel.addEventListener("click", async () => {
    if (!confirm(`Cancel job ${jobId}? It ends FAILED, reason "cancelled".`)) return;
    slots.cancel.disabled = true;
    try {
      const answer = await getJson(`/jobs/${encodeURIComponent(jobId)}`, { method: "DELETE" });
      say(answer.message);
      poll.now();
    } catch (error) {
      report(error);
      slots.cancel.disabled = false;
    }
  });

  const files = fileBrowser(jobId, slots);
  const poll = every(JOB_EVERY_MS, load);
  return {
    stop() {
      poll.stop();
      logs.abort();
    },
  };
}

function renderJob(slots, job) {
  slots.status.replaceChildren(statusBadge(job.status));
  slots.reason.hidden = !job.reason;
  slots.reason.textContent = job.reason ? (job.status === "QUEUED" ? `Waiting: ${job.reason}` : job.reason) : "";
  slots.command.textContent = job.command;
  slots.cancel.hidden = TERMINAL.has(job.status);
  const gpus = (job.assigned_gpus || []).map((g) => `${g.index}: ${g.name || ""} (${g.uuid})`).join(", ");
  const facts = [
    ["Owner", job.owner],
    ["Image", job.image],
    ["GPUs", job.gpus ? `${job.gpus}${job.gpu_memory ? `, ${mebibytes(job.gpu_memory)} each` : ""}` : "none"],
    ["Assigned GPUs", gpus],
    ["CPUs", job.cpus],
    ["Memory", mebibytes(job.memory)],
    ["Runner", job.runner ? `${job.runner} (attempt ${job.attempt} of ${job.max_attempts})` : ""],
    ["Submitted", when(job.created_at)],
    ["Started", when(job.started_at)],
    ["Finished", when(job.finished_at)],
    ["Ran", ran(job)],
    ["Exit code", job.exit_code],
    ["Timeout", job.timeout ? duration(job.timeout) : ""],
    ["Environment", Object.keys(job.env || {}).map((k) => `${k}=${job.env[k]}`).join(" ")],
    ["Secrets", Object.keys(job.secret_env || {}).join(", ")],
  ].filter(([, value]) => value !== "" && value != null);
  slots.facts.replaceChildren(...facts.flatMap(([name, value]) => [el("dt", {}, name), el("dd", {}, value)]));
}

function renderTimeline(list, events) {
  const start = events.length ? new Date(events[0].occurred_at) : null;
  list.replaceChildren(
    ...events.map((event) =>
      el(
        "li",
        { "data-type": event.type },
        el("time", { title: event.occurred_at }, when(event.occurred_at)),
        el("span", { class: "offset" }, `+${duration((new Date(event.occurred_at) - start) / 1000)}`),
        el("strong", {}, event.type),
        el("span", { class: "what" }, describe(event)),
        el("details", {}, el("summary", {}, "event"), el("pre", {}, JSON.stringify(event, null, 2))),
      ),
    ),
  );
}

function describe(event) {
  const data = event.data || {};
  switch (event.type) {
    case "JobSubmitted":
      return `by ${data.owner || "anonymous"}${data.gpus ? `, ${data.gpus} GPU(s)` : ""}`;
    case "JobWaiting":
      return data.reason;
    case "JobAssigned": {
      const gpus = (data.gpus || []).map((g) => g.index).join(", ");
      return `attempt ${data.attempt} on ${data.runner}${gpus ? `, GPUs ${gpus}` : ""}`;
    }
    case "JobStarted":
      return `attempt ${data.attempt} on ${data.runner}`;
    case "JobOutputsSaved":
      return `${(data.files || []).length} files saved${data.error ? `; ${data.error}` : ""}`;
    case "JobFinished":
      return [data.outcome, data.exit_code != null ? `exit code ${data.exit_code}` : "", data.reason]
        .filter(Boolean)
        .join(", ");
    case "JobCancelRequested":
      return "cancel requested";
    default:
      return "";
  }
}

// The output as server-sent events over fetch (EventSource cannot send the token): one event per
// line, `end` when the job has ended. Lines are appended to the page as they arrive.
async function followLog(jobId, job, slots, signal) {
  const box = slots.log;
  const follow = !TERMINAL.has(job.status);
  slots.logState.textContent = follow ? "following…" : "";
  const path = `/jobs/${encodeURIComponent(jobId)}/logs?${query({ follow, tail: LOG_TAIL })}`;
  let lines = 0;
  try {
    const response = await request(path, { headers: { Accept: "text/event-stream" }, signal });
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let pending = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      pending += value;
      let cut;
      const arrived = [];
      while ((cut = pending.indexOf("\n\n")) !== -1) {
        const message = parseEvent(pending.slice(0, cut));
        pending = pending.slice(cut + 2);
        if (message.event === "end") slots.logState.textContent = "(the job has ended)";
        else arrived.push(message.data);
      }
      if (arrived.length) {
        const atBottom = box.scrollTop + box.clientHeight >= box.scrollHeight - 4;
        box.append(arrived.join("\n") + "\n");
        lines += arrived.length;
        if (lines > LOG_KEEP) {
          box.textContent = box.textContent.split("\n").slice(-LOG_KEEP).join("\n");
          lines = LOG_KEEP;
        }
        if (atBottom) box.scrollTop = box.scrollHeight;
      }
    }
    if (!lines) slots.logState.textContent = "(nothing printed)";
  } catch (error) {
    if (error.name === "AbortError") return;
    slots.logState.textContent = "";
    report(error);
  }
}

function parseEvent(block) {
  const message = { event: "message", data: [] };
  for (const line of block.split("\n")) {
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") message.event = value;
    else if (field === "data") message.data.push(value);
  }
  message.data = message.data.join("\n");
  return message;
}

// The job's files: a directory at a time, live while it runs and what it saved once it ended.
function fileBrowser(jobId, slots) {
  const browser = { path: "/", open };
  slots.filesRefresh.addEventListener("click", () => open(browser.path));

  async function open(path) {
    browser.path = path;
    renderCrumbs(path);
    try {
      const listing = await getJson(`/jobs/${encodeURIComponent(jobId)}/files?${query({ path })}`);
      slots.filesNote.textContent = listing.entries.length ? "" : "(empty)";
      slots.files.replaceChildren(...listing.entries.map(entryRow));
    } catch (error) {
      slots.files.replaceChildren();
      if (error instanceof Unauthorized) report(error);
      else slots.filesNote.textContent = error.message;
    }
  }

  function renderCrumbs(path) {
    const parts = path.split("/").filter(Boolean);
    const crumbs = [el("a", { href: "", onclick: (e) => (e.preventDefault(), open("/")) }, "/")];
    parts.forEach((part, i) => {
      const target = `/${parts.slice(0, i + 1).join("/")}`;
      crumbs.push(el("a", { href: "", onclick: (e) => (e.preventDefault(), open(target)) }, part), "/");
    });
    slots.crumbs.replaceChildren(...crumbs);
  }

  function entryRow(entry) {
    const isDir = entry.type === "dir";
    const name = isDir
      ? el("a", { href: "", onclick: (e) => (e.preventDefault(), open(entry.path)) }, `${entry.name}/`)
      : el("span", {}, entry.type === "symlink" ? `${entry.name} → ${entry.target || ""}` : entry.name);
    const action =
      entry.type === "file"
        ? el("button", { type: "button", class: "small", onclick: () => download(jobId, entry) }, "Download")
        : "";
    return el(
      "tr",
      { "data-path": entry.path },
      el("td", { class: "mono" }, name),
      el("td", { class: "num" }, isDir ? "" : bytes(entry.size)),
      el("td", { class: "muted" }, entry.modified ? when(entry.modified) : ""),
      el("td", {}, action),
    );
  }

  return browser;
}

// A download needs the token too, so it is fetched here and handed to the browser as a blob.
async function download(jobId, entry) {
  try {
    const response = await request(`/jobs/${encodeURIComponent(jobId)}/files?${query({ path: entry.path })}`);
    const url = URL.createObjectURL(await response.blob());
    const link = el("a", { href: url, download: entry.name });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
  } catch (error) {
    report(error);
  }
}

// -- #/runners -----------------------------------------------------------------------------------

function runnersPage() {
  const { view, slots } = fromTemplate("runners-view");
  main.replaceChildren(view);

  async function load(signal) {
    const runners = await getJson("/runners", { signal });
    const live = runners.results.filter((r) => r.state === "live");
    const free = live.reduce((n, r) => n + r.gpus.filter((g) => !g.held).length, 0);
    const gpus = live.reduce((n, r) => n + r.gpus.length, 0);
    const slotsFree = live.reduce((n, r) => n + r.slots_free, 0);
    const slotsAll = live.reduce((n, r) => n + r.slots, 0);
    slots.summary.textContent =
      `${live.length} of ${runners.count} runners live; ` +
      `${slotsFree} of ${slotsAll} slots and ${free} of ${gpus} GPUs free.`;
    slots.rows.replaceChildren(...runners.results.map(runnerRow));
    if (!runners.count) {
      slots.rows.append(el("tr", {}, el("td", { colspan: 8, class: "empty" }, "No runner has been heard yet.")));
    }
  }

  return every(RUNNERS_EVERY_MS, load);
}

function runnerRow(runner) {
  const used = runner.slots - runner.slots_free;
  const gpus = runner.gpus.map((gpu) =>
    el(
      "span",
      {
        class: `gpu${gpu.held ? " held" : ""}`,
        title: `${gpu.uuid}${gpu.memory_mb ? `, ${mebibytes(gpu.memory_mb)}` : ""}${gpu.held ? ", held by a job" : ", free"}`,
      },
      `${gpu.index}: ${gpu.name || "GPU"}`,
    ),
  );
  const jobs = runner.jobs.map((job) =>
    el("a", { class: "mono", href: `#/jobs/${encodeURIComponent(job.job_id)}`, title: job.job_id }, shortId(job.job_id)),
  );
  return el(
    "tr",
    { "data-runner": runner.runner_id, class: `runner-${runner.state}` },
    el("td", { class: "mono" }, runner.runner_id),
    el("td", {}, el("span", { class: `state-tag ${runner.state}` }, runner.state)),
    el("td", { title: runner.last_heartbeat }, ago(runner.last_heartbeat)),
    el("td", {}, el("meter", { min: 0, max: runner.slots || 1, value: used }), ` ${used} / ${runner.slots} used`),
    el("td", { class: "gpus" }, gpus.length ? gpus : el("span", { class: "muted" }, "none")),
    el("td", {}, runner.cpus_free == null ? "" : `${runner.cpus_free} / ${runner.cpus}`),
    el("td", {}, runner.memory_free_mb == null ? "" : `${mebibytes(runner.memory_free_mb)} / ${mebibytes(runner.memory_mb)}`),
    el("td", { class: "jobs" }, ...jobs.flatMap((link, i) => (i ? [" ", link] : [link]))),
  );
}

// -- start ---------------------------------------------------------------------------------------

window.addEventListener("hashchange", route);
route();
