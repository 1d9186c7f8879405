// Tandem's page: send an image to POST /predict, show the fast label at once, then follow the
// job's events (GET /job/<id>/events) until the slow model's label arrives. Plain JS, no
// dependencies; everything it fetches is on this origin. With an API key (for a gateway that
// requires one), every job request carries `Authorization: Bearer <key>`, and the events are
// read with fetch, since EventSource cannot send headers. The "Slow model" choice is sent as
// `escalate` (`?escalate=always|auto|never` on the page's own URL preselects it); the card says
// who decided the label: the fast model (not escalated, or the deadline passed: `expired`), the
// cache (the same image answered before) or the slow model.

const FINAL = new Set(["succeeded", "failed", "cancelled", "expired"]);
const EVENTS = ["queued", "running", "succeeded", "failed", "cancelled", "expired"];
const DECIDERS = { fast: "fast model", cache: "cache", slow: "slow model" };
const HISTORY_MAX = 12;

const $ = (id) => document.getElementById(id);
const ui = {
  result: $("result"),
  file: $("file"),
  drop: $("drop"),
  preview: $("preview"),
  previewName: $("preview-name"),
  fast: {
    model: $("fast-model"),
    label: $("fast-label"),
    score: $("fast-score"),
    time: $("fast-time"),
    more: $("fast-more"),
  },
  slow: {
    box: $("slow"),
    model: $("slow-model"),
    label: $("slow-label"),
    score: $("slow-score"),
    time: $("slow-time"),
    more: $("slow-more"),
    verdict: $("slow-verdict"),
  },
  status: $("status"),
  decidedBy: $("decided-by"),
  escalate: $("escalate"),
  history: $("history"),
  historyEmpty: $("history-empty"),
  key: $("api-key"),
  keyBox: $("key-box"),
};

/** This page's jobs, newest first (nothing is stored anywhere else). */
const jobs = [];
let current = null;
let serial = 0;

// ---- formatting ----

function ms(value) {
  if (typeof value !== "number" || !Number.isFinite(value)) return "";
  return value < 1000 ? `${Math.round(value)} ms` : `${(value / 1000).toFixed(1)} s`;
}

function score(value) {
  return typeof value === "number" ? value.toFixed(2) : "";
}

function runnersUp(prediction) {
  const rest = (prediction.top_k || []).slice(1, 3);
  return rest.length ? `then ${rest.map((c) => `${c.label} ${score(c.score)}`).join(" · ")}` : "";
}

function differs(job) {
  return Boolean(job.fast && job.slow && job.fast.label !== job.slow.label);
}

function set(el, text) {
  if (el.textContent !== text) el.textContent = text;
  if (el.classList.contains("label")) el.title = text;
}

// ---- state of one job ----

/** Where the slow answer stands: idle | pending | succeeded | skipped | expired | failed. */
function slowState(job) {
  if (job.slow) return "succeeded";
  if (!job.id) return "idle"; // not (yet) accepted
  if (job.status === "expired") return "expired"; // the deadline passed: the fast label is final
  if (job.decidedBy === "fast") return "skipped"; // not escalated: the fast label is final
  if (job.done) return "failed"; // ended without a slow answer
  return "pending";
}

/** Who decided a final record's label: fast | cache | slow (undefined while not final). */
function decider(record) {
  if (record.status === "expired") return "fast";
  if (record.status !== "succeeded") return undefined;
  if (record.cached) return "cache";
  return record.decided_by === "fast" ? "fast" : "slow";
}

function statusText(job) {
  if (job.error) return job.error;
  if (!job.fast) return `Sending ${job.name}…`;
  if (job.status === "expired") {
    return `Final: the fast label (${job.fast.label}); the deadline passed before the slow model answered.`;
  }
  if (job.decidedBy === "fast") {
    const why = job.reason ? ` (${job.reason})` : "";
    return `Final: the fast label (${job.fast.label}); the slow model was not asked${why}.`;
  }
  if (job.slow) {
    const from = job.decidedBy === "cache" ? ", from the cache (this image was answered before)" : "";
    const refined = `refined: ${job.slow.label} ${score(job.slow.score)}${from}`;
    return differs(job)
      ? `${refined}, different from the fast label (${job.fast.label}).`
      : `${refined}, the same as the fast label.`;
  }
  switch (job.status) {
    case "failed":
      return `The slow model failed${job.slowError ? `: ${job.slowError}` : "."}`;
    case "cancelled":
      return "The job was cancelled before the slow model finished.";
    case "running":
      return (job.attempts || 0) > 1
        ? `The slow model is on it (attempt ${job.attempts})…`
        : "The slow model is on it…";
    default:
      return queueText(job.queue);
  }
}

/** Where a queued job stands (`queue: {ahead, eta_ms}` of its record), in words. */
function queueText(queue) {
  const base = "Fast label ready; the job is queued for the slow model";
  if (!queue) return `${base}…`;
  const ahead =
    queue.ahead === 0 ? "next in line" : `${queue.ahead} job${queue.ahead === 1 ? "" : "s"} ahead`;
  const eta = typeof queue.eta_ms === "number" ? `, about ${waitText(queue.eta_ms)} to go` : "";
  return `${base}: ${ahead}${eta}…`;
}

function waitText(milliseconds) {
  const seconds = Math.max(1, Math.round(milliseconds / 1000));
  if (seconds < 90) return `${seconds} s`;
  return `${Math.round(seconds / 60)} min`;
}

// ---- drawing ----

function show(job) {
  current = job;
  for (const other of jobs) other.button?.setAttribute("aria-current", String(other === job));
  ui.slow.box.classList.remove("arrived", "differs");
  job.justArrived = false; // the wash is for an answer arriving, not for looking back
  draw(job);
}

function draw(job) {
  if (job !== current) return;
  const slowNow = slowState(job);
  ui.result.dataset.fast = job.fast ? "done" : job.error ? "failed" : "pending";
  ui.result.dataset.slow = slowNow;
  ui.result.dataset.job = job.id || "";
  ui.result.dataset.decided = job.decidedBy || "";
  set(ui.decidedBy, DECIDERS[job.decidedBy] || "—");

  if (job.previewable) {
    if (ui.preview.src !== job.url) ui.preview.src = job.url;
    ui.preview.alt = `The image sent: ${job.name}`;
  } else {
    ui.preview.removeAttribute("src");
    ui.preview.alt = "";
  }
  ui.preview.hidden = !job.previewable;
  set(ui.previewName, job.id ? `${job.name} · job ${job.id.slice(0, 8)}` : job.name);

  const f = ui.fast;
  if (job.fast) {
    set(f.model, job.fast.model);
    set(f.label, job.fast.label);
    set(f.score, score(job.fast.score));
    set(f.time, `${ms(job.fastMs)} round trip · model ${ms(job.fast.inference_ms)}`);
    set(f.more, runnersUp(job.fast));
  } else {
    set(f.model, "");
    set(f.label, job.error ? "—" : "classifying");
    set(f.score, "");
    set(f.time, "");
    set(f.more, "");
  }

  const s = ui.slow;
  s.verdict.className = "verdict";
  if (job.slow) {
    set(s.model, job.slow.model);
    set(s.label, job.slow.label);
    set(s.score, score(job.slow.score));
    set(s.time, `${ms(job.slowMs)} after submit · model ${ms(job.slow.inference_ms)}`);
    set(s.more, runnersUp(job.slow));
    const changed = differs(job);
    s.verdict.classList.add(changed ? "changed" : "same");
    set(s.verdict, changed ? "changed" : "agrees");
    if (job.justArrived) {
      job.justArrived = false;
      s.box.classList.remove("arrived", "differs");
      void s.box.offsetWidth; // restart the fade
      s.box.classList.add("arrived");
      s.box.classList.toggle("differs", changed);
    }
  } else {
    set(s.model, "");
    set(s.score, "");
    set(s.more, "");
    set(s.verdict, "");
    if (slowNow === "skipped") {
      set(s.label, "not needed");
      set(s.time, "");
    } else if (slowNow === "failed" || slowNow === "expired") {
      const failed = job.status === "cancelled" ? "cancelled" : "no refined label";
      set(s.label, slowNow === "expired" ? "expired" : failed);
      set(s.time, job.finishedMs ? `${ms(job.finishedMs)} after submit` : "");
    } else {
      set(s.label, job.status === "running" ? "refining" : job.id ? "waiting for a worker" : "—");
      set(s.time, "");
    }
  }

  set(ui.status, statusText(job));
  ui.status.classList.toggle("error", Boolean(job.error) || job.status === "failed");
}

function drawHistoryItem(job) {
  if (!job.item) {
    job.item = document.createElement("li");
    job.button = document.createElement("button");
    job.button.type = "button";
    job.button.className = "job";
    const thumb = document.createElement("img");
    thumb.alt = "";
    if (job.previewable) thumb.src = job.url;
    thumb.addEventListener("error", () => thumb.removeAttribute("src"));
    job.labels = document.createElement("span");
    job.labels.className = "job-labels";
    job.meta = document.createElement("span");
    job.meta.className = "job-meta";
    job.button.append(thumb, job.labels, job.meta);
    job.button.addEventListener("click", () => show(job));
    job.item.append(job.button);
  }
  const fast = job.fast ? job.fast.label : job.error ? "not accepted" : "…";
  let slow;
  let slowClass;
  if (job.slow) {
    slow = job.slow.label;
    slowClass = differs(job) ? "changed" : "";
  } else if (job.error) {
    slow = "";
  } else if (slowState(job) === "skipped" || slowState(job) === "expired") {
    slow = slowState(job) === "expired" ? "final (expired)" : "final (fast model)";
    slowClass = "final";
  } else if (slowState(job) === "failed") {
    slow = job.status === "cancelled" ? "cancelled" : "failed";
    slowClass = "failed";
  } else {
    slow = "refining…";
    slowClass = "pending";
  }
  const fastSpan = document.createElement("span");
  fastSpan.textContent = fast;
  if (job.error) fastSpan.className = "failed";
  const parts = [fastSpan];
  if (slow) {
    const arrow = document.createElement("span");
    arrow.className = "arrow";
    arrow.setAttribute("aria-hidden", "true");
    arrow.textContent = "→";
    const slowSpan = document.createElement("span");
    slowSpan.className = slowClass;
    slowSpan.textContent = slow;
    parts.push(arrow, slowSpan);
  }
  job.labels.replaceChildren(...parts);
  const name = document.createElement("span");
  name.className = "name";
  name.textContent = job.name;
  const times = [ms(job.fastMs), ms(job.slowMs)].filter(Boolean);
  job.meta.replaceChildren(name, ...times.map((t) => ` · ${t}`));
  job.button.setAttribute(
    "aria-label",
    `${job.name}: fast ${fast}${slow ? `, refined ${slow}` : ""}${
      job.decidedBy ? `, decided by the ${DECIDERS[job.decidedBy]}` : ""
    }. Show this job.`,
  );
  job.button.setAttribute("aria-current", String(job === current));
}

function update(job) {
  draw(job);
  drawHistoryItem(job);
}

function remember(job) {
  jobs.unshift(job);
  drawHistoryItem(job);
  ui.history.prepend(job.item);
  ui.historyEmpty.hidden = true;
  while (jobs.length > HISTORY_MAX) {
    const old = jobs.pop();
    old.source?.close();
    old.forgotten = true;
    old.item.remove();
    URL.revokeObjectURL(old.url);
  }
}

// ---- the API key: kept in this tab's sessionStorage only ----

const KEY_STORE = "tandem.apiKey";

function storedKey() {
  try {
    return sessionStorage.getItem(KEY_STORE) || "";
  } catch {
    return ""; // storage disabled: the key lives in the field only
  }
}

ui.key.value = storedKey();
ui.keyBox.open = Boolean(ui.key.value);
ui.key.addEventListener("input", () => {
  try {
    const key = ui.key.value.trim();
    if (key) sessionStorage.setItem(KEY_STORE, key);
    else sessionStorage.removeItem(KEY_STORE);
  } catch {
    // Not kept: fine.
  }
});

function authHeaders() {
  const key = ui.key.value.trim();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

function askForKey() {
  ui.keyBox.open = true;
  ui.key.focus();
}

// ---- talking to the gateway ----

async function submit(blob, name) {
  const job = {
    key: ++serial,
    name: name || "image",
    url: URL.createObjectURL(blob),
    // A file the browser cannot show is still sent: the gateway says what is wrong with it.
    previewable: !blob.type || blob.type.startsWith("image/"),
  };
  remember(job);
  show(job);
  const type = blob.type && blob.type.startsWith("image/") ? blob.type : "application/octet-stream";
  job.t0 = performance.now();
  let response;
  let body = null;
  const escalate = ui.escalate.value;
  const target = escalate ? `/predict?escalate=${encodeURIComponent(escalate)}` : "/predict";
  try {
    response = await fetch(target, {
      method: "POST",
      headers: { "Content-Type": type, Accept: "application/json", ...authHeaders() },
      body: blob,
    });
    body = await response.json().catch(() => null);
  } catch (error) {
    job.error = `Could not reach the gateway (${error.message}).`;
    update(job);
    return;
  }
  job.fastMs = performance.now() - job.t0;
  if (!response.ok) {
    if (response.status === 401 || response.status === 403) askForKey();
    const reason = body?.error?.message || `the gateway answered HTTP ${response.status}`;
    job.error = `Not accepted: ${reason}`;
    update(job);
    return;
  }
  job.id = body.job_id;
  job.fast = body.fast;
  // The reply's status may already be final (the slow model can beat the fast reply); the
  // record with the slow answer comes as the stream's first event either way.
  job.status = FINAL.has(body.status) ? "running" : body.status;
  job.jobUrl = body.job_url;
  job.eventsUrl = body.events_url;
  update(job);
  follow(job);
}

/** Applies one version of the job's record (from an event or a poll). */
function apply(job, record) {
  if (job.forgotten || job.done) return;
  job.done = FINAL.has(record.status);
  job.status = record.status;
  job.attempts = record.attempts;
  job.queue = record.status === "queued" ? record.queue : undefined;
  if (record.fast && !job.fast) job.fast = record.fast;
  job.decidedBy = decider(record);
  job.reason = record.escalation?.reason || "";
  if (record.status === "succeeded" && record.slow) {
    job.slow = record.slow;
    job.slowMs = performance.now() - job.t0;
    job.justArrived = true;
  } else if (FINAL.has(record.status)) {
    // Failed, cancelled, expired, or final with the fast label (not escalated).
    job.slowError = record.error || "";
    job.finishedMs = performance.now() - job.t0;
  }
  update(job);
}

/** Follows the job's events until a final state; polls if the stream cannot be opened. */
function follow(job) {
  if (authHeaders().Authorization) {
    followWithKey(job);
    return;
  }
  const source = new EventSource(job.eventsUrl);
  job.source = source;
  const onEvent = (event) => {
    let record;
    try {
      record = JSON.parse(event.data);
    } catch {
      return;
    }
    apply(job, record);
    // The server ends the stream after a final state; closing stops the browser reconnecting.
    if (FINAL.has(record.status)) source.close();
  };
  for (const name of EVENTS) source.addEventListener(name, onEvent);
  source.addEventListener("error", () => {
    // Open or reconnecting: the browser resumes by itself (Last-Event-ID). Closed: poll.
    if (source.readyState === EventSource.CLOSED && !job.done) poll(job);
  });
}

/** The same as `follow`, over fetch (which can send the key), resuming with Last-Event-ID. */
async function followWithKey(job) {
  const controller = new AbortController();
  job.source = { close: () => controller.abort() };
  let lastId = "";
  for (let attempt = 0; attempt < 5 && !job.done && !job.forgotten; attempt += 1) {
    try {
      const headers = { Accept: "text/event-stream", ...authHeaders() };
      if (lastId) headers["Last-Event-ID"] = lastId;
      const response = await fetch(job.eventsUrl, { headers, signal: controller.signal });
      if (!response.ok) break;
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value.replace(/\r\n?/g, "\n");
        for (let end = buffer.indexOf("\n\n"); end >= 0; end = buffer.indexOf("\n\n")) {
          const data = [];
          for (const line of buffer.slice(0, end).split("\n")) {
            if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
            else if (line.startsWith("id:")) lastId = line.slice(3).trim();
          }
          buffer = buffer.slice(end + 2);
          if (!data.length) continue;
          try {
            apply(job, JSON.parse(data.join("\n")));
          } catch {
            // Not a record: skip it.
          }
        }
      }
    } catch {
      if (controller.signal.aborted) return;
    }
    if (!job.done) await new Promise((resolve) => setTimeout(resolve, 1000));
  }
  if (!job.done && !job.forgotten) poll(job);
}

async function poll(job) {
  for (let i = 0; i < 120 && !job.done && !job.forgotten; i += 1) {
    await new Promise((resolve) => setTimeout(resolve, 1000));
    try {
      const response = await fetch(job.jobUrl, {
        headers: { Accept: "application/json", ...authHeaders() },
      });
      if (response.ok) apply(job, await response.json());
    } catch {
      // Try again on the next round.
    }
  }
}

// ---- input: file picker, drag and drop, paste, samples; the escalation policy ----

{
  const asked = new URLSearchParams(location.search).get("escalate");
  if (asked && Array.from(ui.escalate.options).some((o) => o.value === asked)) {
    ui.escalate.value = asked;
  }
}

function submitFile(file) {
  if (!file) return;
  submit(file, file.name);
}

ui.preview.addEventListener("error", () => {
  if (!current || !ui.preview.getAttribute("src")) return;
  current.previewable = false;
  draw(current);
});

ui.file.addEventListener("change", () => {
  submitFile(ui.file.files[0]);
  ui.file.value = ""; // choosing the same file again still submits it
});

const carriesFiles = (event) => Array.from(event.dataTransfer?.types || []).includes("Files");
let dragDepth = 0;
document.addEventListener("dragenter", (event) => {
  if (!carriesFiles(event)) return;
  event.preventDefault();
  dragDepth += 1;
  ui.drop.classList.add("dragging");
});
document.addEventListener("dragleave", (event) => {
  if (!carriesFiles(event)) return;
  dragDepth = Math.max(0, dragDepth - 1);
  if (dragDepth === 0) ui.drop.classList.remove("dragging");
});
document.addEventListener("dragover", (event) => {
  if (!carriesFiles(event)) return;
  event.preventDefault();
  event.dataTransfer.dropEffect = "copy";
});
document.addEventListener("drop", (event) => {
  if (!carriesFiles(event)) return;
  event.preventDefault();
  dragDepth = 0;
  ui.drop.classList.remove("dragging");
  submitFile(event.dataTransfer.files[0]);
});

document.addEventListener("paste", (event) => {
  const item = Array.from(event.clipboardData?.items || []).find(
    (i) => i.kind === "file" && i.type.startsWith("image/"),
  );
  if (!item) return;
  event.preventDefault();
  const file = item.getAsFile();
  submit(file, file.name && file.name !== "image.png" ? file.name : "pasted image");
});

for (const button of document.querySelectorAll("button.sample")) {
  button.addEventListener("click", async () => {
    button.setAttribute("aria-busy", "true");
    try {
      const response = await fetch(button.dataset.sample);
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      await submit(await response.blob(), button.dataset.name);
    } catch (error) {
      set(ui.status, `Could not load the sample (${error.message}).`);
      ui.status.classList.add("error");
    } finally {
      button.removeAttribute("aria-busy");
    }
  });
}
