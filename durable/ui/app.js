// durable status page: a single page over the JSON API, hash-routed, no dependencies.
//
// Every URL is relative (the page may live under an API Gateway stage such as
// /prod/), and every piece of data reaches the DOM as text: elements are built
// with textContent and setAttribute, never innerHTML.
"use strict";

(() => {
  const STATUSES = ["PENDING", "RUNNING", "COMPLETED", "FAILED", "CANCELED", "TERMINATED", "STUCK"];
  const TERMINAL = new Set(["COMPLETED", "FAILED", "CANCELED", "TERMINATED"]);
  const FINAL_KINDS = new Set([
    "WorkflowCompleted",
    "WorkflowFailed",
    "WorkflowCanceled",
    "WorkflowContinuedAsNew",
    "WorkflowTerminated",
  ]);
  const SVG = "http://www.w3.org/2000/svg";
  const REFRESH_MS = 3000;
  const HISTORY_PAGE = 500;
  const TOKEN_KEY = "durable-token";

  const main = document.getElementById("main");
  const autoBox = document.getElementById("auto-refresh");
  const dot = document.getElementById("refresh-dot");
  const refreshedAt = document.getElementById("refreshed-at");

  let view = null; // {refresh(): Promise<void>, stop?: () => void}
  let timer = null;
  let generation = 0;

  // ------------------------------------------------------------------ DOM helpers

  function build(ns, tag, attrs, kids) {
    const node = ns ? document.createElementNS(ns, tag) : document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "text") node.textContent = String(value);
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const kid of kids) {
      if (kid === null || kid === undefined || kid === false) continue;
      node.append(kid instanceof Node ? kid : String(kid));
    }
    return node;
  }
  const h = (tag, attrs, ...kids) => build(null, tag, attrs, kids);
  const s = (tag, attrs, ...kids) => build(SVG, tag, attrs, kids);

  function badge(status) {
    const known = STATUSES.includes(status) ? status : "PENDING";
    return h("span", { class: `badge ${known}`, "data-status": status, text: status });
  }

  function pad(n, width = 2) {
    return String(n).padStart(width, "0");
  }

  function formatTime(iso) {
    if (!iso) return "—";
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return String(iso);
    return (
      `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
      `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`
    );
  }

  function timeCell(iso) {
    return h("time", { datetime: iso, title: iso, text: formatTime(iso) });
  }

  function formatDuration(ms) {
    const sign = ms < 0 ? "-" : "";
    ms = Math.abs(ms);
    if (ms < 1000) return `${sign}${Math.round(ms)} ms`;
    if (ms < 60_000) return `${sign}${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`;
    if (ms < 3_600_000) return `${sign}${Math.floor(ms / 60_000)} min ${Math.round((ms % 60_000) / 1000)} s`;
    if (ms < 86_400_000) return `${sign}${Math.floor(ms / 3_600_000)} h ${Math.round((ms % 3_600_000) / 60_000)} min`;
    return `${sign}${Math.floor(ms / 86_400_000)} d ${Math.round((ms % 86_400_000) / 3_600_000)} h`;
  }

  function json(value, indent = 2) {
    if (value === undefined) return "";
    try {
      return JSON.stringify(value, null, indent);
    } catch {
      return String(value);
    }
  }

  function short(value, max = 120) {
    const text = typeof value === "string" ? value : json(value, 0);
    return text.length > max ? `${text.slice(0, max - 1)}…` : text;
  }

  function instanceHref(id) {
    return `#/instances/${encodeURIComponent(id)}`;
  }

  function instancePath(id) {
    return `instances/${encodeURIComponent(id)}`;
  }

  // ------------------------------------------------------------------ API

  class ApiError extends Error {
    constructor(status, body) {
      const message = body && body.message ? body.message : `HTTP ${status}`;
      super(message);
      this.status = status;
      this.body = body;
    }
  }

  async function api(path, { method = "GET", body } = {}) {
    const headers = { Accept: "application/json" };
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers.Authorization = `Bearer ${token}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(path, { method, headers, body, cache: "no-store" });
    let data = null;
    try {
      data = await response.json();
    } catch {
      data = null;
    }
    if (!response.ok) throw new ApiError(response.status, data);
    return data;
  }

  // ------------------------------------------------------------------ refresh loop

  function schedule() {
    clearTimeout(timer);
    timer = null;
    dot.classList.toggle("on", autoBox.checked);
    if (autoBox.checked && view) timer = setTimeout(tick, REFRESH_MS);
  }

  let inFlight = false;
  let again = false;

  // One refresh at a time (two would append the same history page twice); a
  // refresh asked for meanwhile runs right after.
  async function tick(force = false) {
    if (!view) return;
    if (inFlight) {
      again = true;
      return;
    }
    const mine = generation;
    if (document.hidden && !force) {
      schedule(); // nothing to see: no requests until the tab shows again
      return;
    }
    inFlight = true;
    dot.classList.add("busy");
    try {
      await view.refresh();
      if (mine === generation) refreshedAt.textContent = formatTime(new Date().toISOString()).slice(11);
    } catch (error) {
      if (mine === generation) showFailure(error);
    } finally {
      inFlight = false;
      dot.classList.remove("busy");
      if (again) {
        again = false;
        if (view) tick(true);
      } else if (mine === generation) {
        schedule();
      }
    }
  }

  autoBox.addEventListener("change", () => (autoBox.checked ? tick() : schedule()));
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && autoBox.checked) tick();
  });

  function showFailure(error) {
    if (error instanceof ApiError && error.status === 401) {
      showTokenForm();
      return;
    }
    const box = document.getElementById("load-error");
    if (box) box.textContent = `Could not load: ${error.message}`;
  }

  function showTokenForm() {
    stopView();
    const input = h("input", { type: "password", placeholder: "token", "aria-label": "API token", autocomplete: "off" });
    const form = h(
      "form",
      {
        onsubmit: (event) => {
          event.preventDefault();
          sessionStorage.setItem(TOKEN_KEY, input.value.trim());
          route();
        },
      },
      input,
      h("button", { class: "primary", type: "submit", text: "Use token" }),
    );
    main.replaceChildren(
      h(
        "div",
        { class: "card token" },
        h("h2", { text: "This server needs a token" }),
        h("div", { class: "muted", text: "It is kept in this tab only (sessionStorage) and sent as Authorization: Bearer." }),
        form,
      ),
    );
    input.focus();
  }

  function stopView() {
    generation += 1;
    clearTimeout(timer);
    timer = null;
    if (view && view.stop) view.stop();
    view = null;
  }

  function start(newView) {
    view = newView;
    tick(true);
  }

  // ------------------------------------------------------------------ routing

  function route() {
    stopView();
    const hash = location.hash || "#/";
    const match = /^#\/instances\/(.+)$/.exec(hash);
    if (match) {
      let id;
      try {
        id = decodeURIComponent(match[1]);
      } catch {
        id = match[1];
      }
      start(instanceView(id));
    } else {
      const query = new URLSearchParams(hash.includes("?") ? hash.slice(hash.indexOf("?") + 1) : "");
      start(listView(query.get("status") || "", query.get("workflow") || ""));
    }
    window.scrollTo(0, 0);
  }

  window.addEventListener("hashchange", route);

  // ------------------------------------------------------------------ list view

  function listView(status, workflow) {
    document.title = "durable · instances";
    const statusSelect = h(
      "select",
      { id: "filter-status", "aria-label": "Status" },
      h("option", { value: "", text: "All statuses" }),
      ...STATUSES.map((st) => h("option", { value: st, text: st })),
    );
    statusSelect.value = status;
    const workflowSelect = h(
      "select",
      { id: "filter-workflow", "aria-label": "Workflow" },
      h("option", { value: "", text: "All workflows" }),
    );
    const count = h("span", { class: "count muted" });
    const body = h("tbody", {});
    const navigate = () => {
      const query = new URLSearchParams();
      if (statusSelect.value) query.set("status", statusSelect.value);
      if (workflowSelect.value) query.set("workflow", workflowSelect.value);
      const text = query.toString();
      location.hash = text ? `#/?${text}` : "#/";
    };
    statusSelect.addEventListener("change", navigate);
    workflowSelect.addEventListener("change", navigate);

    main.replaceChildren(
      h(
        "section",
        { class: "card", id: "instances" },
        h(
          "div",
          { class: "toolbar" },
          h("h1", { text: "Instances" }),
          h("label", { class: "field" }, "Status", statusSelect),
          h("label", { class: "field" }, "Workflow", workflowSelect),
          count,
        ),
        h("div", { class: "notice error", id: "load-error" }),
        h(
          "div",
          { class: "scroll" },
          h(
            "table",
            { id: "instance-table" },
            h(
              "thead",
              {},
              h(
                "tr",
                {},
                ...["Instance", "Status", "Workflow", "Custom status", "Created", "Updated"].map((t) => h("th", { text: t })),
              ),
            ),
            body,
          ),
        ),
      ),
    );

    let workflowsLoaded = false;
    async function loadWorkflows() {
      const data = await api("workflows");
      const names = data.workflows.map((w) => w.name);
      if (workflow && !names.includes(workflow)) names.push(workflow);
      workflowSelect.replaceChildren(
        h("option", { value: "", text: "All workflows" }),
        ...names.map((name) => h("option", { value: name, text: name })),
      );
      workflowSelect.value = workflow;
      workflowsLoaded = true;
    }

    return {
      async refresh() {
        const mine = generation;
        if (!workflowsLoaded) await loadWorkflows();
        const query = new URLSearchParams({ limit: "200" });
        if (status) query.set("status", status);
        if (workflow) query.set("workflow", workflow);
        const data = await api(`instances?${query}`);
        if (mine !== generation) return;
        const rows = data.instances.slice().sort((a, b) => (a.created_at < b.created_at ? 1 : a.created_at > b.created_at ? -1 : 0));
        count.textContent = `${rows.length} instance${rows.length === 1 ? "" : "s"}`;
        document.getElementById("load-error").textContent = "";
        if (!rows.length) {
          body.replaceChildren(h("tr", { class: "empty" }, h("td", { colspan: 6, text: "No instances match." })));
          return;
        }
        body.replaceChildren(
          ...rows.map((row) =>
            h(
              "tr",
              { "data-instance": row.instance_id, "data-status": row.status },
              h("td", { class: "id", title: row.instance_id }, h("a", { href: instanceHref(row.instance_id), text: row.instance_id })),
              h("td", {}, badge(row.status)),
              h("td", { text: row.workflow }),
              h("td", { class: "detail", title: row.custom_status == null ? null : json(row.custom_status), text: row.custom_status == null ? "" : short(row.custom_status, 60) }),
              h("td", {}, timeCell(row.created_at)),
              h("td", {}, timeCell(row.updated_at)),
            ),
          ),
        );
      },
    };
  }

  // ------------------------------------------------------------------ instance view

  function instanceView(id) {
    document.title = `durable · ${id}`;
    const head = h("div", { class: "title" });
    const facts = h("dl", { class: "facts" });
    const data = h("div", { class: "grid2", id: "data" });
    const timelineBox = h("div", { class: "timeline", id: "timeline" });
    const legendBox = legend();
    const tableBody = h("tbody", {});
    const runPicker = h("select", { id: "run-picker", "aria-label": "Run" });
    const actions = actionsCard(id, () => tick());

    main.replaceChildren(
      h("div", { class: "crumbs" }, h("a", { href: "#/", text: "← Instances" })),
      head,
      h("div", { class: "notice error", id: "load-error" }),
      h("section", { class: "card" }, facts),
      data,
      actions.node,
      h(
        "section",
        { class: "card", id: "timeline-card" },
        h("div", { class: "toolbar" }, h("h2", { text: "Timeline", style: "margin:0" }), h("label", { class: "field", id: "run-field", hidden: true }, "Run", runPicker)),
        timelineBox,
        legendBox,
      ),
      h(
        "section",
        { class: "card" },
        h("h2", { text: "History" }),
        h(
          "div",
          { class: "scroll" },
          h(
            "table",
            { id: "event-table" },
            h("thead", {}, h("tr", {}, ...["#", "Time", "+", "Kind", "Task", "Name", "Details"].map((t) => h("th", { class: t === "Time" ? "col-time" : null, text: t })))),
            tableBody,
          ),
        ),
      ),
    );

    let header = null;
    let events = [];
    let run = null; // the run shown; null: the latest
    let loadedRun = null;

    runPicker.addEventListener("change", () => {
      run = Number(runPicker.value);
      tick();
    });

    const onResize = () => {
      if (header) drawTimeline(timelineBox, events, header, Date.now());
    };
    let resizeTimer = null;
    const resized = () => {
      clearTimeout(resizeTimer);
      resizeTimer = setTimeout(onResize, 100);
    };
    window.addEventListener("resize", resized);

    async function loadHistory(wanted) {
      // Only the events after the last one already shown are fetched, page by page (`next`).
      if (loadedRun !== wanted) {
        events = [];
        loadedRun = wanted;
      }
      let after = events.length ? events[events.length - 1].seq : 0;
      for (;;) {
        const query = new URLSearchParams({ run: String(wanted), after: String(after), limit: String(HISTORY_PAGE) });
        const page = await api(`${instancePath(id)}/history?${query}`);
        events.push(...page.events);
        if (!page.next || !page.events.length) break;
        const next = new URL(page.next, location.href).searchParams;
        after = Number(next.get("after") || page.events[page.events.length - 1].seq);
      }
    }

    return {
      stop() {
        window.removeEventListener("resize", resized);
      },
      async refresh() {
        const mine = generation;
        const previous = header;
        const fresh = await api(instancePath(id));
        if (mine !== generation) return;
        const wanted = run === null ? fresh.run : run;
        const changed = !previous || previous.version !== fresh.version || loadedRun !== wanted;
        if (changed) await loadHistory(wanted);
        if (mine !== generation) return;
        header = fresh;
        document.getElementById("load-error").textContent = "";
        if (changed) {
          renderHead(head, header);
          renderFacts(facts, header);
          renderData(data, header);
          renderEvents(tableBody, events);
          actions.update(header);
          runPicker.replaceChildren(
            ...Array.from({ length: header.run }, (_, i) => h("option", { value: i + 1, text: `${i + 1}${i + 1 === header.run ? " (latest)" : ""}` })),
          );
          runPicker.value = String(wanted);
          document.getElementById("run-field").hidden = header.run < 2;
        }
        // Redrawn while it runs: pending bars grow with the clock.
        if (changed || !TERMINAL.has(header.status)) drawTimeline(timelineBox, events, header, Date.now());
      },
    };
  }

  function renderHead(node, header) {
    node.replaceChildren(
      h("h1", { class: "mono", id: "instance-id", text: header.instance_id }),
      h("span", { id: "instance-status" }, badge(header.status)),
      h("span", { class: "muted", text: header.workflow }),
    );
  }

  function renderFacts(node, header) {
    const items = [
      ["Workflow", header.workflow],
      ["Created", timeCell(header.created_at)],
      ["Updated", timeCell(header.updated_at)],
      ["Run", String(header.run)],
    ];
    if (header.wake_at) items.push(["Next timer", timeCell(header.wake_at)]);
    if (header.parent_id) items.push(["Parent", h("a", { href: instanceHref(header.parent_id), class: "mono", text: header.parent_id })]);
    node.replaceChildren(...items.flatMap(([label, value]) => [h("div", {}, h("dt", { text: label }), h("dd", {}, value))]));
  }

  function jsonBlock(value, id) {
    return h("pre", { class: "json", id, text: value === undefined ? "" : json(value) });
  }

  function renderData(node, header) {
    const left = h("section", { class: "card" }, h("h2", { text: "Input" }), jsonBlock(header.input, "input"));
    const right = h("section", { class: "card", id: "result" });
    if (header.error) {
      const err = header.error;
      right.append(
        h("h2", { text: "Error" }),
        h("div", { class: "err-head", id: "error" }, `${err.type || "Error"}: ${err.message || ""}`),
        err.traceback ? h("pre", { class: "trace", text: err.traceback }) : null,
      );
    } else if (header.status === "COMPLETED" || header.output !== null) {
      right.append(h("h2", { text: "Output" }), jsonBlock(header.output, "output"));
    } else {
      right.append(h("h2", { text: "Output" }), h("div", { class: "muted", text: `none yet (${header.status.toLowerCase()})` }));
    }
    const extra = [];
    if (header.custom_status !== null && header.custom_status !== undefined) {
      extra.push(h("div", { class: "section-label", text: "Custom status" }), jsonBlock(header.custom_status, "custom-status"));
    }
    if (header.waiting_on !== null && header.waiting_on !== undefined) {
      extra.push(h("div", { class: "section-label", text: "Waiting on" }), jsonBlock(header.waiting_on, "waiting-on"));
    }
    if (extra.length) left.append(...extra);
    node.replaceChildren(left, right);
  }

  // ------------------------------------------------------------------ actions

  function actionsCard(id, refresh) {
    const name = h("input", { type: "text", id: "event-name", placeholder: "approve", autocomplete: "off" });
    const data = h("textarea", { id: "event-data", placeholder: '{"approved": true}', rows: 1, spellcheck: "false" });
    const raise = h("button", { type: "submit", class: "primary", id: "raise-event", text: "Raise event" });
    const cancel = h("button", { type: "button", id: "cancel", text: "Cancel…" });
    const terminate = h("button", { type: "button", class: "danger", id: "terminate", text: "Terminate…" });
    const notice = h("div", { class: "notice", id: "action-result", role: "status" });
    const ended = h("div", { class: "muted", id: "actions-ended", hidden: true, text: "The instance has ended: it takes no more events, cancels or terminations." });

    function say(text, ok) {
      notice.className = `notice ${ok ? "ok" : "error"}`;
      notice.textContent = text;
    }

    const form = h(
      "form",
      {
        class: "raise",
        id: "raise-form",
        onsubmit: async (event) => {
          event.preventDefault();
          const eventName = name.value.trim();
          if (!eventName) {
            say("Give the event a name.", false);
            return;
          }
          let body;
          if (data.value.trim()) {
            try {
              JSON.parse(data.value);
            } catch (error) {
              say(`The data is not JSON: ${error.message}`, false);
              return;
            }
            body = data.value;
          }
          try {
            await api(`${instancePath(id)}/events/${encodeURIComponent(eventName)}`, { method: "POST", body });
            say(`Event “${eventName}” raised.`, true);
            refresh();
          } catch (error) {
            say(`Event refused: ${error.message}`, false);
          }
        },
      },
      h("label", { class: "field" }, "Event name", name),
      h("label", { class: "field" }, "Data (JSON, optional)", data),
      raise,
    );

    async function stop(what) {
      const verb = what === "cancel" ? "Cancel" : "Terminate";
      const consequence =
        what === "cancel"
          ? "The workflow sees a cancellation at its current step and may clean up."
          : "The instance ends at once; none of its code runs again.";
      if (!window.confirm(`${verb} instance ${id}?\n\n${consequence}`)) return;
      try {
        await api(`${instancePath(id)}/${what}`, { method: "POST" });
        say(`${verb} requested.`, true);
        refresh();
      } catch (error) {
        say(`${verb} refused: ${error.message}`, false);
      }
    }
    cancel.addEventListener("click", () => stop("cancel"));
    terminate.addEventListener("click", () => stop("terminate"));

    const node = h(
      "section",
      { class: "card", id: "actions" },
      h("h2", { text: "Actions" }),
      h("div", { class: "actions", id: "action-controls" }, form, h("div", { class: "stop" }, cancel, terminate)),
      ended,
      notice,
    );
    return {
      node,
      update(header) {
        const over = TERMINAL.has(header.status);
        for (const control of [name, data, raise, cancel, terminate]) control.disabled = over;
        node.querySelector("#action-controls").hidden = over;
        ended.hidden = !over;
      },
    };
  }

  // ------------------------------------------------------------------ history table

  const SKIP = new Set(["seq", "timestamp", "kind", "task_id", "name"]);

  function details(event) {
    const rest = {};
    for (const [key, value] of Object.entries(event)) {
      if (SKIP.has(key) || value === null) continue;
      if (key === "error" && value) {
        rest.error = `${value.type}: ${value.message}`;
      } else {
        rest[key] = value;
      }
    }
    return rest;
  }

  function renderEvents(body, events) {
    if (!events.length) {
      body.replaceChildren(h("tr", { class: "empty" }, h("td", { colspan: 7, text: "No events yet." })));
      return;
    }
    const t0 = Date.parse(events[0].timestamp);
    body.replaceChildren(
      ...events.map((event) => {
        const rest = details(event);
        const text = Object.keys(rest).length ? json(rest, 0) : "";
        return h(
          "tr",
          { "data-kind": event.kind },
          h("td", { class: "num", text: event.seq }),
          h("td", { class: "col-time" }, timeCell(event.timestamp)),
          h("td", { class: "num muted", title: event.timestamp, text: formatDuration(Date.parse(event.timestamp) - t0) }),
          h("td", { text: event.kind }),
          h("td", { class: "num", text: event.task_id ?? "" }),
          h("td", { text: event.name ?? "" }),
          h("td", { class: "detail", title: text.length > 100 ? text : null, text: short(text, 100) }),
        );
      }),
    );
  }

  // ------------------------------------------------------------------ timeline

  // Lanes of the timeline, built from the history:
  //   workflow   start -> final event (or now), with markers for status, side effects, cancels
  //   activity   one segment per attempt (scheduled -> completed / failed / retry), dashed backoff between
  //   timer      scheduled -> fired (or now)
  //   wait       started -> the event that answered it, its timeout, or now; the event as a diamond
  //   child      scheduled -> completed / failed, linked to the child's own view
  function lanesOf(events, header, now) {
    const at = (e) => Date.parse(e.timestamp);
    const start = events.length ? at(events[0]) : Date.parse(header.created_at);
    const final = events.find((e) => FINAL_KINDS.has(e.kind));
    const end = final ? at(final) : now;
    const workflow = {
      kind: "workflow",
      label: header.workflow,
      title: `workflow ${header.workflow}`,
      segments: [],
      marks: [],
    };
    const tasks = new Map();
    const raised = [];
    const lane = (event, kind, label) => {
      let found = tasks.get(event.task_id);
      if (!found) {
        found = { kind, label, task: event.task_id, segments: [], marks: [], gaps: [] };
        tasks.set(event.task_id, found);
      }
      return found;
    };
    const open = (task) => tasks.get(task);

    for (const e of events) {
      const t = at(e);
      switch (e.kind) {
        case "ActivityScheduled": {
          const l = lane(e, "activity", e.name || e.activity);
          const last = l.segments[l.segments.length - 1];
          if (last && last.retryAt !== undefined) l.gaps.push({ from: last.to, to: t, title: `backoff before attempt ${e.attempt}` });
          l.segments.push({ from: t, to: null, cls: "running", attempt: e.attempt, title: `${e.activity} attempt ${e.attempt}\nscheduled ${formatTime(e.timestamp)}` });
          break;
        }
        case "ActivityCompleted":
        case "ActivityFailed":
        case "ActivityRetryScheduled": {
          const l = open(e.task_id);
          if (!l) break;
          const seg = l.segments.find((x) => x.attempt === e.attempt && x.to === null) || l.segments[l.segments.length - 1];
          if (!seg) break;
          seg.to = t;
          seg.cls = e.kind === "ActivityCompleted" ? "ok" : "failed";
          seg.title += `\n${e.kind === "ActivityCompleted" ? "completed" : "failed"} ${formatTime(e.timestamp)} (${formatDuration(t - seg.from)})`;
          if (e.error) seg.title += `\n${e.error.type}: ${e.error.message}`;
          if (e.kind === "ActivityCompleted") seg.title += `\nresult: ${short(e.result, 200)}`;
          if (e.kind === "ActivityRetryScheduled") {
            seg.retryAt = Date.parse(e.fire_at);
            seg.title += `\nretry at ${formatTime(e.fire_at)}`;
          }
          break;
        }
        case "ActivityRedispatched": {
          const l = open(e.task_id);
          const seg = l && l.segments.find((x) => x.attempt === e.attempt && x.to === null);
          if (seg) seg.title += `\ndispatched again ${formatTime(e.timestamp)} (no outcome came)`;
          break;
        }
        case "TimerScheduled": {
          const l = lane(e, "timer", e.name || "sleep");
          l.segments.push({ from: t, to: null, cls: "timer", title: `timer ${e.name || ""}\nscheduled ${formatTime(e.timestamp)}\nfires at ${formatTime(e.fire_at)}` });
          break;
        }
        case "TimerFired": {
          const l = open(e.task_id);
          if (!l || !l.segments.length) break;
          const seg = l.segments[l.segments.length - 1];
          if (l.kind === "wait") {
            if (seg.to === null) {
              seg.to = t;
              seg.title += `\ntimed out ${formatTime(e.timestamp)}`;
              seg.cls = "wait timedout";
            }
          } else if (seg.to === null) {
            seg.to = t;
            seg.title += `\nfired ${formatTime(e.timestamp)} (${formatDuration(t - seg.from)})`;
          }
          break;
        }
        case "EventWaitStarted": {
          const l = lane(e, "wait", e.name || `wait “${e.event}”`);
          l.event = e.event;
          l.segments.push({ from: t, to: null, cls: "wait", seq: e.seq, title: `waiting for event “${e.event}”\nsince ${formatTime(e.timestamp)}${e.timeout_at ? `\ntimeout at ${formatTime(e.timeout_at)}` : ""}` });
          break;
        }
        case "EventRaised":
          raised.push(e);
          break;
        case "ChildScheduled": {
          const l = lane(e, "child", e.name || e.workflow);
          l.href = instanceHref(e.child_id);
          l.segments.push({ from: t, to: null, cls: "child", title: `child ${e.workflow}\n${e.child_id}\nscheduled ${formatTime(e.timestamp)}` });
          break;
        }
        case "ChildCompleted":
        case "ChildFailed": {
          const l = open(e.task_id);
          if (!l || !l.segments.length) break;
          const seg = l.segments[l.segments.length - 1];
          seg.to = t;
          seg.cls = e.kind === "ChildCompleted" ? "child" : "failed";
          seg.title += `\n${e.kind === "ChildCompleted" ? "completed" : (e.status || "failed").toLowerCase()} ${formatTime(e.timestamp)} (${formatDuration(t - seg.from)})`;
          if (e.error) seg.title += `\n${e.error.type}: ${e.error.message}`;
          break;
        }
        case "SideEffectRecorded":
          workflow.marks.push({ at: t, shape: "dot", cls: "effect", title: `ctx.${e.effect}() = ${short(e.value, 80)}` });
          break;
        case "StatusSet":
          workflow.marks.push({ at: t, shape: "dot", cls: "status", title: `custom status: ${short(e.value, 120)}` });
          break;
        case "PatchMarker":
          workflow.marks.push({ at: t, shape: "dot", cls: "effect", title: `patched("${e.patch_id}")` });
          break;
        case "CancelRequested":
          workflow.marks.push({ at: t, shape: "cross", cls: "cancel", title: `cancel requested${e.reason ? `: ${e.reason}` : ""}` });
          break;
        default:
          break;
      }
    }

    // An event answers the oldest wait on its name that was still open; one raised
    // before any wait was buffered and answers the next wait at once.
    const unmatched = [];
    const waits = [...tasks.values()].filter((l) => l.kind === "wait");
    for (const e of raised) {
      const t = at(e);
      const target = waits.find((l) => l.event === e.event && l.segments[0].to === null);
      const seg = target && target.segments[0];
      const mark = { at: t, shape: "diamond", cls: "event", title: `event “${e.event}” raised ${formatTime(e.timestamp)}${e.data !== null && e.data !== undefined ? `\ndata: ${short(e.data, 200)}` : ""}` };
      if (seg && seg.to === null) {
        seg.to = Math.max(t, seg.from);
        seg.answeredBy = e.seq;
        seg.title += `\nanswered ${formatTime(e.timestamp)} (${formatDuration(seg.to - seg.from)})`;
        mark.at = seg.to;
        target.marks.push(mark);
      } else {
        unmatched.push(mark);
      }
    }
    if (unmatched.length) workflow.marks.push(...unmatched);

    const status = header.status;
    workflow.segments.push({
      from: start,
      to: end,
      cls: `wf ${status}`,
      title: `workflow ${header.workflow}: ${status}\nstarted ${formatTime(new Date(start).toISOString())}${final ? `\nended ${formatTime(final.timestamp)} (${formatDuration(end - start)})` : "\nstill running"}`,
    });
    const lanes = [workflow, ...[...tasks.values()].sort((a, b) => a.task - b.task)];
    for (const l of lanes) {
      for (const seg of l.segments) {
        if (seg.to === null) {
          seg.to = end;
          seg.pending = true;
          if (!final) seg.title += "\n(pending)";
        }
      }
    }
    return { lanes, start, end: Math.max(end, start + 1), running: !final };
  }

  const COLORS = {
    ok: "#2e9d5b",
    failed: "#d64545",
    running: "#3b82f6",
    timer: "#e0a100",
    wait: "#a78bfa",
    "wait timedout": "#c4b5fd",
    child: "#0d9488",
    event: "#6d28d9",
    status: "#6b7280",
    effect: "#9ca3af",
    cancel: "#b42318",
  };
  const WF_COLORS = {
    COMPLETED: "#b5e0c6",
    FAILED: "#f5bcbc",
    CANCELED: "#f3d899",
    TERMINATED: "#d6c6f3",
    STUCK: "#fbc99a",
    RUNNING: "#bcd0fb",
    PENDING: "#d6dae0",
  };

  function niceStep(span, target) {
    const raw = span / Math.max(1, target);
    const units = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000, 15_000, 30_000, 60_000, 120_000, 300_000, 600_000, 900_000, 1_800_000, 3_600_000, 7_200_000, 10_800_000, 21_600_000, 43_200_000, 86_400_000];
    for (const unit of units) if (unit >= raw) return unit;
    return Math.ceil(raw / 86_400_000) * 86_400_000;
  }

  function tickLabel(ms, step) {
    if (step < 1000) return ms >= 1000 ? `${ms / 1000} s` : `${ms} ms`;
    if (step < 60_000) return `${ms / 1000} s`;
    if (step < 3_600_000) return `${ms / 60_000} min`;
    if (step < 86_400_000) return `${ms / 3_600_000} h`;
    return `${ms / 86_400_000} d`;
  }

  function drawTimeline(box, events, header, now) {
    const { lanes, start, end, running } = lanesOf(events, header, now);
    const width = Math.max(280, box.clientWidth || 800);
    const labelWidth = Math.min(200, Math.round(width * 0.3));
    const right = 14;
    const top = 26;
    const rowHeight = 28;
    const barHeight = 14;
    const height = top + lanes.length * rowHeight + 6;
    const plot = width - labelWidth - right;
    const span = end - start;
    const x = (t) => labelWidth + ((Math.min(Math.max(t, start), end) - start) / span) * plot;

    const svg = s("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "timeline of the instance's history" });

    // axis: relative time since the start
    const axis = s("g", { class: "axis" });
    const step = niceStep(span, Math.max(2, Math.floor(plot / 75)));
    for (let ms = 0; ms <= span + 1e-9; ms += step) {
      const px = labelWidth + (ms / span) * plot;
      axis.append(s("line", { class: "grid", x1: px, x2: px, y1: top - 6, y2: height - 4 }));
      const anchor = px > width - 40 ? "end" : ms === 0 ? "start" : "middle";
      axis.append(s("text", { x: px, y: 14, "text-anchor": anchor, text: `+${tickLabel(ms, step)}` }));
    }
    svg.append(axis);

    const lanesGroup = s("g", { class: "lanes" });
    lanes.forEach((l, i) => {
      const y = top + i * rowHeight;
      const mid = y + rowHeight / 2;
      const g = s("g", { class: `lane ${l.kind}`, "data-kind": l.kind, "data-task": l.task ?? "" });
      g.append(s("rect", { class: "band", x: 0, y, width, height: rowHeight, fill: "transparent" }));
      const labelText = l.kind === "workflow" ? l.label : `${l.label}`;
      const maxChars = Math.max(4, Math.floor((labelWidth - 12) / 7));
      const shown = labelText.length > maxChars ? `${labelText.slice(0, maxChars - 1)}…` : labelText;
      const label = s("text", { class: "label", x: 6, y: mid + 4, "font-weight": l.kind === "workflow" ? 600 : null }, s("title", { text: `${kindName(l.kind)}: ${labelText}` }), shown);
      g.append(l.href ? s("a", { href: l.href, class: "child-link" }, label) : label);

      for (const gap of l.gaps || []) {
        g.append(
          s("line", { class: "backoff", x1: x(gap.from), x2: x(gap.to), y1: mid, y2: mid, stroke: "#9ca3af", "stroke-width": 2, "stroke-dasharray": "3 3" }, s("title", { text: gap.title })),
        );
      }
      for (const seg of l.segments) {
        const x1 = x(seg.from);
        const w = Math.max(3, x(seg.to) - x1);
        const isWf = l.kind === "workflow";
        const fill = isWf ? WF_COLORS[header.status] || "#d6dae0" : COLORS[seg.cls] || "#9ca3af";
        const rect = s("rect", {
          class: `bar ${seg.cls}${seg.pending ? " pending" : ""}`,
          "data-attempt": seg.attempt ?? null,
          x: x1,
          y: mid - (isWf ? barHeight / 2 + 1 : barHeight / 2),
          width: Math.min(w, width - right - x1 + 2),
          height: isWf ? barHeight + 2 : barHeight,
          rx: 3,
          fill,
          "fill-opacity": seg.pending ? 0.55 : 1,
          stroke: seg.pending ? fill : null,
          "stroke-dasharray": seg.pending ? "4 2" : null,
        });
        const wrap = s("g", { class: "bar-wrap" }, rect, s("title", { text: seg.title }));
        if (seg.attempt !== undefined && l.segments.length > 1 && w > 18) {
          wrap.append(s("text", { x: x1 + 4, y: mid + 4, fill: "#fff", "font-size": 10, "pointer-events": "none", text: `#${seg.attempt}` }));
        }
        g.append(l.href ? s("a", { href: l.href }, wrap) : wrap);
      }
      for (const mark of l.marks) {
        g.append(markShape(mark, x(mark.at), mid));
      }
      lanesGroup.append(g);
    });
    svg.append(lanesGroup);

    if (running) {
      const px = x(end);
      svg.append(s("line", { class: "now", x1: px, x2: px, y1: top - 6, y2: height - 4 }, s("title", { text: "now" })));
    }
    box.replaceChildren(svg);
  }

  function markShape(mark, px, mid) {
    const color = COLORS[mark.cls] || "#6b7280";
    let shape;
    if (mark.shape === "diamond") {
      shape = s("path", { class: `mark ${mark.cls}`, d: `M ${px} ${mid - 7} L ${px + 6} ${mid} L ${px} ${mid + 7} L ${px - 6} ${mid} Z`, fill: color, stroke: "#fff", "stroke-width": 1 });
    } else if (mark.shape === "cross") {
      shape = s("path", { class: `mark ${mark.cls}`, d: `M ${px - 5} ${mid - 5} L ${px + 5} ${mid + 5} M ${px + 5} ${mid - 5} L ${px - 5} ${mid + 5}`, stroke: color, "stroke-width": 2.5 });
    } else {
      shape = s("circle", { class: `mark ${mark.cls}`, cx: px, cy: mid, r: 3.5, fill: color, stroke: "#fff", "stroke-width": 1 });
    }
    return s("g", {}, shape, s("title", { text: mark.title }));
  }

  function kindName(kind) {
    return { workflow: "workflow", activity: "activity", timer: "timer", wait: "event wait", child: "child workflow" }[kind] || kind;
  }

  function legend() {
    const item = (color, text, style = "") => h("span", {}, h("i", { style: `background:${color};${style}` }), text);
    return h(
      "div",
      { class: "legend" },
      item(COLORS.ok, "activity attempt ok"),
      item(COLORS.failed, "failed attempt"),
      item(COLORS.running, "running"),
      item("repeating-linear-gradient(90deg,#9ca3af 0 3px,transparent 3px 6px)", "retry backoff", "height:2px"),
      item(COLORS.timer, "timer"),
      item(COLORS.wait, "event wait"),
      item(COLORS.event, "event raised", "width:8px;height:8px;transform:rotate(45deg);border-radius:1px"),
      item(COLORS.child, "child workflow"),
      item(COLORS.status, "status / side effect", "width:7px;height:7px;border-radius:50%"),
    );
  }

  route();
})();
