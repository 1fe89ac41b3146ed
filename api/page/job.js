// The job status page (SPEC "The job status page"): one job, shown to the restaurant owner.
//
// The page's address is /jobs/<job id>?token=<view token>; every request it makes carries
// that token as ?token= (an EventSource cannot send headers), never an API key.
//
// Live updates: the event stream (/events), whose ids are the job's versions, so events the
// first read already showed are skipped and the browser's own reconnection (it sends
// Last-Event-ID) resumes where it stopped. When the stream cannot be had (refused, or it
// fails twice without opening in between) the page polls /progress with If-None-Match every
// 3 s instead, and reads the whole job only when that says it changed. It never does both:
// the stream is closed before polling starts, and polling does not go back to the stream.
"use strict";

(() => {
  const PHASES = {
    phase1: "Phase 1 · Accounts and uploads",
    phase2: "Phase 2 · Restaurant, website, services and payments",
    phase3: "Phase 3 · Menu",
    phase4: "Phase 4 · Item tags",
  };
  const STEP_WORDS = {
    pending: "Waiting",
    running: "In progress",
    retrying: "Trying again",
    action_required: "Needs your input",
    completed: "Done",
    failed: "Failed",
    skipped: "Skipped",
    cancelled: "Cancelled",
  };
  const JOB_WORDS = {
    pending: "Not started yet",
    in_progress: "In progress",
    completed: "Complete",
    failed: "Stopped",
    cancelled: "Cancelled",
  };
  const JOB_ANNOUNCE = {
    in_progress: "The set-up has started.",
    completed: "The set-up is complete.",
    failed: "The set-up stopped.",
    cancelled: "The set-up was cancelled.",
  };
  const FIELD_LABELS = {
    "account.email": "Email address for your ordering platform account",
    "account.password": "Password for your ordering platform account",
    "account.phone": "Your phone number",
    "restaurant.name": "Restaurant name",
    "restaurant.address": "Restaurant address",
    "restaurant.city": "City",
    "restaurant.phone": "Restaurant phone number",
    "restaurant.subdomain": "Web address (the part before the platform's domain)",
    "onboarding.user_name": "Your name",
    "onboarding.user_email": "Email address for onboarding",
    "onboarding.user_password": "Password for onboarding",
  };
  const FINAL = new Set(["completed", "failed", "cancelled"]);
  const POLL_MS = 3000;
  // Errors of the event stream with no open in between before the page polls instead.
  const STREAM_FAILURES = 2;

  const parts = location.pathname.split("/").filter(Boolean);
  const jobId = decodeURIComponent(parts[parts.length - 1] || "");
  const token = new URLSearchParams(location.search).get("token") || "";
  const base = new URL(`../api/registration-jobs/${encodeURIComponent(jobId)}`, location.href);

  const state = {
    job: null,
    steps: new Map(),
    rows: new Map(),
    phases: new Map(),
    version: 0,
    jobEtag: null,
    progressEtag: null,
    mode: "starting", // then "stream", "poll" or "done"
    source: null,
    pollTimer: null,
    formKey: null,
    announcements: [],
    announceTimer: null,
  };

  const $ = (id) => document.getElementById(id);

  function api(path) {
    const url = new URL(base.href + path);
    url.searchParams.set("token", token);
    return url.href;
  }

  function make(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function versionOf(etag) {
    const n = Number(String(etag || "").replace(/^W\//, "").replace(/"/g, ""));
    return Number.isFinite(n) ? n : 0;
  }

  // ------------------------------------------------------------------ announcements

  function announce(text) {
    state.announcements.push(text);
    if (state.announceTimer) return;
    // A burst of events is read out as one sentence, not cut off by the next.
    state.announceTimer = setTimeout(() => {
      $("announce").textContent = state.announcements.join(" ");
      state.announcements = [];
      state.announceTimer = null;
    }, 400);
  }

  function setConnection(text) {
    $("connection").textContent = text;
  }

  // ------------------------------------------------------------------ steps

  function duration(ms) {
    if (ms === null || ms === undefined) return "";
    if (ms < 1000) return `${ms} ms`;
    const seconds = Math.round(ms / 100) / 10;
    if (seconds < 60) return `${seconds} s`;
    const whole = Math.round(ms / 1000);
    return `${Math.floor(whole / 60)} min ${whole % 60} s`;
  }

  function phaseList(phase) {
    let list = state.phases.get(phase);
    if (list) return list;
    const section = make("section", "phase");
    const heading = make("h2", "", PHASES[phase] || phase);
    heading.id = `heading-${phase}`;
    section.setAttribute("aria-labelledby", heading.id);
    list = make("ol");
    section.append(heading, list);
    // Phases in their order, whatever order their first step arrives in.
    const after = [...state.phases.keys()].filter((p) => p > phase).sort()[0];
    const container = $("phases");
    if (after) container.insertBefore(section, state.phases.get(after).parentElement);
    else container.append(section);
    state.phases.set(phase, list);
    return list;
  }

  function row(step) {
    let found = state.rows.get(step.step_id);
    if (found) return found;
    const li = make("li", "step");
    li.dataset.step = step.step_id;
    li.dataset.number = String(step.step_number);
    found = {
      li,
      label: make("span", "step-label"),
      status: make("span", "badge step-status"),
      meta: make("span", "step-meta"),
      warning: make("p", "step-note warning"),
      error: make("p", "step-note error"),
      info: make("p", "step-note info"),
      evidence: make("div", "step-evidence"),
    };
    li.append(found.label, found.status, found.meta, found.info, found.warning, found.error,
      found.evidence);
    const list = phaseList(step.phase);
    const next = [...list.children].find((other) => Number(other.dataset.number) > step.step_number);
    list.insertBefore(li, next || null);
    state.rows.set(step.step_id, found);
    return found;
  }

  function show(node, text) {
    node.textContent = text || "";
    node.hidden = !text;
  }

  function skipWords(step) {
    if (step.status !== "skipped" || !step.skip_reason) return "";
    if (step.skip_reason === "disabled") return "Not needed for this set-up.";
    const reason = step.skip_reason;
    // The reasons say "not run: ..." themselves.
    if (/^not run/i.test(reason)) return reason.charAt(0).toUpperCase() + reason.slice(1);
    return `Not run: ${reason}`;
  }

  function renderStep(step, loud) {
    const before = state.steps.get(step.step_id);
    state.steps.set(step.step_id, step);
    const r = row(step);
    r.li.dataset.status = step.status;
    r.label.textContent = step.step_label;
    r.status.textContent = STEP_WORDS[step.status] || step.status;
    r.status.dataset.status = step.status;
    const meta = [];
    if (step.attempts) meta.push(step.attempts === 1 ? "1 attempt" : `${step.attempts} attempts`);
    if (step.duration_ms !== null && step.duration_ms !== undefined) meta.push(duration(step.duration_ms));
    show(r.meta, meta.join(" · "));
    show(r.info, skipWords(step) || (step.status === "running" || step.status === "retrying" ? step.progress : ""));
    show(r.warning, step.warning ? `Note: ${step.warning}` : "");
    show(r.error, step.error_message ? `Problem: ${step.error_message}` : "");
    renderEvidence(r.evidence, step);
    if (loud && before && before.status !== step.status) {
      announce(`${step.step_label}: ${(STEP_WORDS[step.status] || step.status).toLowerCase()}.`);
    }
  }

  function renderEvidence(node, step) {
    const shots = step.evidence || [];
    const last = shots[shots.length - 1];
    const key = last ? String(last.evidence_id) : "";
    if (node.dataset.shown === key) return;
    node.dataset.shown = key;
    node.replaceChildren();
    node.hidden = !last;
    if (!last) return;
    const href = api(`/evidence/${encodeURIComponent(last.evidence_id)}`);
    const link = make("a");
    link.href = href;
    link.target = "_blank";
    link.rel = "noopener noreferrer";
    const img = make("img");
    img.src = href;
    img.loading = "lazy";
    img.alt = `Screenshot of ${step.step_label}, attempt ${last.attempt} (opens in a new tab)`;
    link.append(img);
    node.append(link);
  }

  // ------------------------------------------------------------------ the job

  function labelOf(stepId) {
    const step = state.steps.get(stepId);
    return step ? step.step_label : stepId;
  }

  function nextActionWords(job) {
    switch (job.next_action) {
      case "retry":
        return "Nothing you entered has to change: it can be tried again as it is. " +
          "Ask the team that sent you this link to retry it.";
      case "retry_from_step":
        return `It can be tried again from “${labelOf(job.failed_step)}”. ` +
          "Ask the team that sent you this link to retry it.";
      case "fix_config":
        return "Some of the set-up details need correcting before it can run again. " +
          "Contact the team that sent you this link.";
      case "provide_input":
        return "We need something from you: see the form above.";
      default:
        return job.status === "cancelled" ? "It was cancelled before it finished." : "";
    }
  }

  function renderJob(job, loud) {
    const before = state.job;
    state.job = { ...(state.job || {}), ...job };
    const name = job.restaurant_name || "Restaurant set-up";
    $("title").textContent = name;
    const waiting = Boolean(job.action_required);
    const words = waiting ? "Waiting for you" : JOB_WORDS[job.status] || job.status;
    $("status").textContent = words;
    $("status").dataset.status = waiting ? "action_required" : job.status;
    document.title = `${name}: ${words}`;
    const percent = Math.max(0, Math.min(100, Number(job.progress_percent) || 0));
    $("bar").value = percent;
    $("bar-label").textContent = `${percent}% done`;

    const stopped = job.status === "failed" || job.status === "cancelled";
    $("stopped").hidden = !stopped;
    if (stopped) {
      $("stopped-title").textContent =
        job.status === "failed" ? "The set-up stopped" : "The set-up was cancelled";
      let where = "";
      if (job.failed_step) {
        const failed = state.steps.get(job.failed_step);
        where = `It stopped at “${labelOf(job.failed_step)}”`;
        const why = (failed && failed.error_message) || job.error_message;
        where += why ? `: ${why}` : ".";
      } else if (job.error_message) {
        where = job.error_message;
      }
      show($("stopped-step"), where);
      show($("stopped-next"), nextActionWords(job));
    }
    renderForm(job.action_required || null);

    if (loud && before && before.status !== job.status && JOB_ANNOUNCE[job.status]) {
      announce(JOB_ANNOUNCE[job.status]);
    }
    if (loud && waiting && !(before && before.action_required)) {
      announce("We need something from you to carry on: see the form.");
    }
    $("job").setAttribute("aria-busy", "false");
    if (FINAL.has(job.status)) finish();
  }

  function applyWholeJob(job, etag, loud) {
    // Steps first: the job's own words name them.
    for (const step of job.steps || []) renderStep(step, loud);
    renderJob(job, loud);
    state.jobEtag = etag;
    state.version = Math.max(state.version, versionOf(etag));
  }

  // ------------------------------------------------------------------ the input form

  function inputKind(field) {
    const last = field.split(".").pop();
    if (/password/.test(last)) return { type: "password", autocomplete: "new-password" };
    if (/email/.test(last)) return { type: "email", autocomplete: "email" };
    if (/phone/.test(last)) return { type: "tel", autocomplete: "tel" };
    return { type: "text", autocomplete: "off" };
  }

  function fieldLabel(field) {
    if (FIELD_LABELS[field]) return FIELD_LABELS[field];
    const last = field.split(".").pop().replace(/_/g, " ");
    return last.charAt(0).toUpperCase() + last.slice(1);
  }

  function fieldId(field) {
    return `field-${field.replace(/[^A-Za-z0-9_-]/g, "-")}`;
  }

  function renderForm(asked) {
    const section = $("needs-you");
    if (!asked) {
      section.hidden = true;
      state.formKey = null;
      $("input-fields").replaceChildren();
      return;
    }
    const key = JSON.stringify([asked.step_id, asked.fields, asked.since]);
    section.hidden = false;
    $("needs-you-title").textContent = `We need something from you for “${labelOf(asked.step_id)}”`;
    show($("needs-you-reason"), asked.reason || "");
    show($("needs-you-expiry"), asked.expires_at
      ? `Please answer before ${new Date(asked.expires_at).toLocaleString()}.` : "");
    if (state.formKey === key) return; // the same question: keep what is being typed
    state.formKey = key;
    $("form-message").textContent = "";
    $("form-message").className = "form-message";
    const fields = (asked.fields || []).map((field) => {
      const id = fieldId(field);
      const wrap = make("div", "field");
      const label = make("label", "", fieldLabel(field));
      label.htmlFor = id;
      const input = make("input");
      const kind = inputKind(field);
      input.id = id;
      input.name = field;
      input.type = kind.type;
      input.autocomplete = kind.autocomplete;
      input.required = true;
      input.spellcheck = false;
      input.dataset.field = field;
      const error = make("p", "field-error");
      error.id = `${id}-error`;
      error.setAttribute("aria-live", "polite");
      input.setAttribute("aria-describedby", error.id);
      wrap.append(label, input, error);
      return wrap;
    });
    $("input-fields").replaceChildren(...fields);
  }

  function clearErrors() {
    for (const input of $("input-fields").querySelectorAll("input")) {
      input.removeAttribute("aria-invalid");
      $(`${input.id}-error`).textContent = "";
    }
    $("form-message").textContent = "";
    $("form-message").className = "form-message";
  }

  function fieldError(field, message) {
    const input = [...$("input-fields").querySelectorAll("input")]
      .find((candidate) => candidate.dataset.field === field);
    if (!input) return false;
    input.setAttribute("aria-invalid", "true");
    $(`${input.id}-error`).textContent = message;
    return true;
  }

  function errorsOf(detail) {
    // FastAPI's list ({loc, msg}), or one message (a string, or {message}).
    if (Array.isArray(detail)) {
      return detail.map((e) => {
        const loc = (e.loc || []).map(String);
        const at = loc.indexOf("execution_config");
        return { field: at >= 0 ? loc.slice(at + 1).join(".") : (e.field || ""), msg: e.msg || String(e) };
      });
    }
    if (detail && typeof detail === "object") {
      return [{ field: detail.field || "", msg: detail.message || detail.msg || "" }];
    }
    return [{ field: "", msg: String(detail || "") }];
  }

  async function submitInput(event) {
    event.preventDefault();
    clearErrors();
    const inputs = [...$("input-fields").querySelectorAll("input")];
    const config = {};
    let missing = null;
    for (const input of inputs) {
      if (!input.value) {
        fieldError(input.dataset.field, "Please fill this in.");
        missing = missing || input;
        continue;
      }
      const path = input.dataset.field.split(".");
      let at = config;
      for (const part of path.slice(0, -1)) at = at[part] = at[part] || {};
      at[path[path.length - 1]] = input.value;
    }
    if (missing) {
      missing.focus();
      return;
    }
    const button = $("input-submit");
    button.disabled = true;
    let response = null;
    try {
      response = await fetch(api("/input"), {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ execution_config: config }),
        cache: "no-store",
        credentials: "omit",
      });
    } catch (_) {
      response = null;
    } finally {
      button.disabled = false;
      // What was typed into a password field is never kept on the page once sent.
      for (const input of inputs) if (input.type === "password") input.value = "";
    }
    const message = $("form-message");
    if (response === null) {
      message.textContent = "Could not reach the server. Check your connection and send it again.";
      return;
    }
    if (response.ok) {
      for (const input of inputs) input.value = "";
      message.className = "form-message ok";
      message.textContent = "Thank you: the set-up carries on with what you sent.";
      announce("Thank you: the set-up carries on.");
      return;
    }
    if (response.status === 404) return gone();
    let detail = "";
    try {
      detail = (await response.json()).detail;
    } catch (_) {
      detail = "";
    }
    if (response.status === 422) {
      let first = null;
      for (const { field, msg } of errorsOf(detail)) {
        if (fieldError(field, msg)) first = first || field;
        else message.textContent = msg;
      }
      const target = first && inputs.find((input) => input.dataset.field === first);
      if (target) target.focus();
      return;
    }
    if (response.status === 409) {
      message.textContent = "This is not waiting for an answer any more.";
      refreshJob(true);
      return;
    }
    message.textContent = `Something went wrong (${response.status}). Please send it again.`;
  }

  // ------------------------------------------------------------------ reading the job

  async function refreshJob(loud) {
    const headers = state.jobEtag ? { "If-None-Match": state.jobEtag } : {};
    const response = await fetch(api(""), { headers, cache: "no-store", credentials: "omit" });
    if (response.status === 404) return gone();
    if (response.status === 304) return;
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    applyWholeJob(await response.json(), response.headers.get("ETag"), loud);
  }

  function onEvent(message, apply) {
    const id = Number(message.lastEventId);
    // Already shown (by the first read, or before a reconnection).
    if (id && id <= state.version) return;
    if (id) state.version = id;
    apply(JSON.parse(message.data));
  }

  function openStream() {
    if (state.mode !== "starting") return;
    if (!("EventSource" in window)) return startPolling();
    state.mode = "stream";
    const source = new EventSource(api("/events"));
    state.source = source;
    let failures = 0;
    source.onopen = () => {
      failures = 0;
      setConnection("Live");
    };
    source.addEventListener("step", (message) => onEvent(message, (step) => renderStep(step, true)));
    source.addEventListener("job", (message) => onEvent(message, (job) => renderJob(job, true)));
    source.onerror = () => {
      if (state.mode !== "stream") return;
      failures += 1;
      if (source.readyState === EventSource.CLOSED || failures >= STREAM_FAILURES) {
        closeStream();
        startPolling();
      } else {
        setConnection("Reconnecting…");
      }
    };
  }

  function closeStream() {
    if (state.source) state.source.close();
    state.source = null;
  }

  function startPolling() {
    if (state.mode === "done" || state.mode === "poll") return;
    state.mode = "poll";
    setConnection("Checking for changes every 3 seconds");
    state.pollTimer = setTimeout(poll, POLL_MS);
  }

  async function poll() {
    state.pollTimer = null;
    try {
      const headers = state.progressEtag ? { "If-None-Match": state.progressEtag } : {};
      const response = await fetch(api("/progress"), { headers, cache: "no-store", credentials: "omit" });
      if (response.status === 404) return gone();
      if (response.status === 200) {
        state.progressEtag = response.headers.get("ETag");
        await refreshJob(true);
      }
    } catch (_) {
      // The network or the server: asked again at the next tick.
    }
    if (state.mode === "poll") state.pollTimer = setTimeout(poll, POLL_MS);
  }

  function finish() {
    state.mode = "done";
    closeStream();
    if (state.pollTimer) clearTimeout(state.pollTimer);
    state.pollTimer = null;
    setConnection("");
  }

  function gone() {
    finish();
    const main = $("job");
    const heading = make("h1", "", "This link does not open a set-up any more");
    const text = make("p", "",
      "It may have expired. Ask whoever sent it to you for a new link.");
    main.replaceChildren(heading, text);
    main.setAttribute("aria-busy", "false");
    document.title = "Link not valid";
  }

  async function start() {
    try {
      await refreshJob(false);
    } catch (_) {
      setConnection("Could not reach the server; trying again…");
      setTimeout(start, POLL_MS);
      return;
    }
    if (state.mode === "starting") openStream();
  }

  $("input-form").addEventListener("submit", submitInput);
  start();
})();
