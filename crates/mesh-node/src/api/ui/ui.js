// The read-only web view of an Agent Mesh node (served at /ui by the node).
//
// It reads this node's HTTP API every few seconds and redraws each section
// from the answers. Every string from the API goes into the page as text
// (textContent, attribute values); nothing is parsed as HTML. The observer
// token lives in this tab's sessionStorage and is sent only in the
// Authorization header; see docs/web-ui.md.
"use strict";

(() => {
  /** Time between the end of one refresh and the start of the next. */
  const REFRESH_MS = 4000;
  /** A request that takes longer is abandoned and its section shows why. */
  const REQUEST_TIMEOUT_MS = 8000;
  /** Jobs drawn (the newest first); the mesh may hold many more. */
  const JOBS_SHOWN_MAX = 12;
  /** Peers listed; the rest are counted. */
  const PEERS_SHOWN_MAX = 64;
  /** Reputation rows listed; the rest are counted. */
  const REPUTATION_SHOWN_MAX = 64;
  /** Where the token is kept: this tab only, gone when it closes. */
  const TOKEN_KEY = "agent-mesh.observer-token";
  /** A URL fragment that hands the page a token once (then removed). */
  const TOKEN_FRAGMENT = "#token=";
  const SVG_NS = "http://www.w3.org/2000/svg";

  // ---- DOM helpers: the only way this script puts anything on the page ----

  /** An element with attributes and children (strings become text nodes). */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    setAttributes(node, attrs);
    append(node, children);
    return node;
  }

  /** An SVG element with attributes and children. */
  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG_NS, tag);
    setAttributes(node, attrs);
    append(node, children);
    return node;
  }

  function setAttributes(node, attrs) {
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      node.setAttribute(name, value === true ? "" : String(value));
    }
  }

  function append(node, children) {
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
  }

  /** A long id shortened for display; the full id stays in the title. */
  function shortId(id) {
    const text = String(id ?? "");
    const shown = text.length > 20 ? `${text.slice(0, 8)}…${text.slice(-6)}` : text;
    return el("span", { class: "id", title: text, "data-id": text }, shown);
  }

  function fixed(value, digits) {
    return typeof value === "number" && Number.isFinite(value) ? value.toFixed(digits) : "—";
  }

  function percent(value) {
    return typeof value === "number" && Number.isFinite(value) ? `${(value * 100).toFixed(1)}%` : "—";
  }

  function duration(seconds) {
    if (typeof seconds !== "number" || !Number.isFinite(seconds)) return "—";
    const s = Math.floor(seconds);
    const h = Math.floor(s / 3600);
    const m = Math.floor((s % 3600) / 60);
    const rest = s % 60;
    if (h > 0) return `${h}h ${String(m).padStart(2, "0")}m`;
    if (m > 0) return `${m}m ${String(rest).padStart(2, "0")}s`;
    return `${rest}s`;
  }

  function millis(ms) {
    if (typeof ms !== "number" || !Number.isFinite(ms)) return "—";
    if (ms < 10) return `${ms.toFixed(1)} ms`;
    return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(1)} s`;
  }

  /** A definition list from [label, value] pairs (values: text or nodes). */
  function facts(pairs) {
    const list = el("dl", { class: "facts" });
    for (const [label, value] of pairs) {
      list.append(el("dt", {}, label), el("dd", {}, value));
    }
    return list;
  }

  function badge(text, kind) {
    return el("span", { class: `badge ${kind}` }, text);
  }

  /** A table; headings ending in "#" head numeric (right-aligned) columns. */
  function table(headings, rows) {
    const cells = headings.map((h) => (h.endsWith("#")
      ? el("th", { scope: "col", class: "num" }, h.slice(0, -1))
      : el("th", { scope: "col" }, h)));
    return el(
      "table",
      {},
      el("thead", {}, el("tr", {}, cells)),
      el("tbody", {}, rows),
    );
  }

  // ---- Sections: each shows its content or why it has none ----

  function section(id) {
    const root = document.getElementById(id);
    return {
      error: root.querySelector(".error"),
      content: root.querySelector(".content"),
    };
  }

  function show(id, ...nodes) {
    const { error, content } = section(id);
    error.hidden = true;
    error.textContent = "";
    content.replaceChildren(...nodes.filter((n) => n !== null && n !== undefined));
    content.classList.remove("stale");
  }

  /** Shows why a section could not be drawn; its last content stays, dimmed. */
  function fail(id, message) {
    const { error, content } = section(id);
    error.textContent = message;
    error.hidden = false;
    content.classList.add("stale");
  }

  // ---- The token ----

  function token() {
    try {
      return sessionStorage.getItem(TOKEN_KEY) || "";
    } catch (_) {
      return "";
    }
  }

  function setToken(value) {
    try {
      if (value) sessionStorage.setItem(TOKEN_KEY, value);
      else sessionStorage.removeItem(TOKEN_KEY);
    } catch (_) {
      // Storage disabled: the token lasts until the page reloads.
      memoryToken = value;
    }
  }

  let memoryToken = "";

  function currentToken() {
    return token() || memoryToken;
  }

  /** Takes a `#token=` fragment once and removes it from the address bar and history entry. */
  function takeFragmentToken() {
    if (!window.location.hash.startsWith(TOKEN_FRAGMENT)) return;
    let value = "";
    try {
      value = decodeURIComponent(window.location.hash.slice(TOKEN_FRAGMENT.length)).trim();
    } catch (_) {
      value = "";
    }
    history.replaceState(null, "", window.location.pathname + window.location.search);
    if (value) setToken(value);
  }

  function showTokenState() {
    const state = document.getElementById("token-state");
    state.textContent = currentToken()
      ? "token set for this tab"
      : "no token: jobs and reputation hidden";
  }

  // ---- Requests ----

  class RequestFailed extends Error {}

  /** GET `path` as JSON, with the token when `needsToken`; throws RequestFailed with a readable message. */
  async function getJson(path, needsToken) {
    const headers = { Accept: "application/json" };
    if (needsToken) {
      const bearer = currentToken();
      if (!bearer) {
        throw new RequestFailed(
          `${path} needs an observer token: paste one above (make one with agent-mesh token).`,
        );
      }
      headers.Authorization = `Bearer ${bearer}`;
    }
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), REQUEST_TIMEOUT_MS);
    let response;
    try {
      response = await fetch(path, {
        headers,
        cache: "no-store",
        credentials: "omit",
        redirect: "error",
        signal: abort.signal,
      });
    } catch (err) {
      const why = err && err.name === "AbortError" ? `no answer in ${REQUEST_TIMEOUT_MS / 1000} s` : "the node is unreachable";
      throw new RequestFailed(`GET ${path} failed: ${why}.`);
    } finally {
      clearTimeout(timer);
    }
    const text = await response.text();
    if (!response.ok) {
      let reason = "";
      try {
        reason = JSON.parse(text).error || "";
      } catch (_) {
        reason = text.trim().slice(0, 200);
      }
      const hint = response.status === 401 || response.status === 403 ? " Check the observer token." : "";
      throw new RequestFailed(`GET ${path} answered ${response.status}${reason ? `: ${reason}` : ""}.${hint}`);
    }
    try {
      return JSON.parse(text);
    } catch (_) {
      throw new RequestFailed(`GET ${path} did not answer JSON.`);
    }
  }

  /** GET a plain-text probe: its status and first line. */
  async function getProbe(path) {
    try {
      const response = await fetch(path, { cache: "no-store", credentials: "omit" });
      const text = (await response.text()).trim().split("\n")[0].slice(0, 300);
      return { ok: response.ok, text };
    } catch (_) {
      return { ok: false, text: "no answer" };
    }
  }

  // ---- This node ----

  let nodeId = "";

  function renderNode(status, ready) {
    nodeId = status.node_id || "";
    document.getElementById("mesh-name").textContent = `mesh ${status.mesh_id || "?"}`;
    document.title = `Agent Mesh: ${status.mesh_id || "?"}`;
    const readiness = ready.ok ? badge("ready", "good") : badge(ready.text || "not ready", "warn");
    const pairs = [
      ["Node id", el("span", { class: "id full", "data-node-id": nodeId }, nodeId)],
      ["Mesh", status.mesh_id ?? "—"],
    ];
    if (status.zone) pairs.push(["Zone", status.zone]);
    pairs.push(
      ["Readiness", readiness],
      ["Roles", (status.roles || []).map((r) => badge(r, "role"))],
      ["Version", status.version ?? "—"],
      ["Uptime", duration(status.uptime_s)],
      ["Peers", `${status.peers_connected ?? 0} connected, ${status.peers_admitted ?? 0} admitted`],
      ["Listens on", (status.listen_addrs || []).map((a) => el("div", { class: "addr" }, a))],
    );
    show("node", facts(pairs));
  }

  // ---- Committee ----

  function member(consensus, memberStr) {
    const peer = (consensus.member_peers || {})[memberStr];
    const row = el("li", { "data-member": memberStr, "data-peer": peer || "" });
    row.append(peer ? shortId(peer) : el("span", { class: "id" }, `member ${memberStr}`));
    if (memberStr === consensus.leader_str) row.append(" ", badge("leader", "good"));
    if (memberStr === consensus.member_str) row.append(" ", badge("this node", "role"));
    return row;
  }

  function renderCommittee(c) {
    const leaderPeer = c.leader_str ? (c.member_peers || {})[c.leader_str] || "" : "";
    const leader = c.leader_str
      ? el("span", { id: "leader", "data-leader-peer": leaderPeer, "data-leader-member": c.leader_str },
        leaderPeer ? shortId(leaderPeer) : `member ${c.leader_str}`)
      : badge("no leader known", "warn");
    const voters = el("ul", { class: "members", id: "voters" }, (c.voters_str || []).map((m) => member(c, m)));
    const learners = (c.learners_str || []).length
      ? el("ul", { class: "members" }, c.learners_str.map((m) => member(c, m)))
      : el("span", { class: "muted" }, "none");
    const stats = facts([
      ["Leader", leader],
      ["This node", `${c.role ?? "?"}${c.rejoining ? " (rejoining)" : ""}`],
      ["Term", el("span", { "data-term": c.term }, String(c.term ?? "—"))],
      ["Commit index", el("span", { "data-commit-index": c.commit_index ?? "" }, String(c.commit_index ?? "—"))],
      ["Applied", `${c.last_applied ?? "—"} (lag ${c.apply_lag ?? 0})`],
      ["Leader heard", c.leader_contact_ms_ago === null ? "never" : `${millis(c.leader_contact_ms_ago)} ago`],
      ["State hash", el("span", { class: "id", title: c.state_hash || "" }, (c.state_hash || "—").slice(0, 16))],
    ]);
    show("committee", stats, el("h3", {}, `Voters (${(c.voters_str || []).length})`), voters,
      el("h3", {}, "Learners"), learners);
  }

  // ---- Peers ----

  function renderPeers(peers) {
    const sorted = [...peers].sort((a, b) => String(a.peer_id).localeCompare(String(b.peer_id)));
    const rows = sorted.slice(0, PEERS_SHOWN_MAX).map((p) => {
      const kind = p.state === "admitted" ? "good" : p.state === "connected" ? "role" : "warn";
      const addresses = p.addresses || [];
      return el(
        "tr",
        { "data-peer": p.peer_id },
        el("td", {}, shortId(p.peer_id)),
        el("td", {}, badge(p.state ?? "?", kind)),
        el("td", { class: "num" }, p.rtt_ms === null || p.rtt_ms === undefined ? "—" : millis(p.rtt_ms)),
        el("td", { class: "num" }, p.last_seen_ms_ago === null || p.last_seen_ms_ago === undefined ? "—" : `${millis(p.last_seen_ms_ago)} ago`),
        el("td", { class: "addr", title: addresses.join("\n") }, addresses[0] ?? "—",
          addresses.length > 1 ? el("span", { class: "muted" }, ` +${addresses.length - 1}`) : null),
      );
    });
    const more = peers.length > PEERS_SHOWN_MAX
      ? el("p", { class: "muted" }, `${peers.length - PEERS_SHOWN_MAX} more peers not shown.`)
      : null;
    show("peers", peers.length
      ? table(["Peer", "State", "RTT#", "Last heard#", "Address"], rows)
      : el("p", { class: "muted" }, "No peers known yet."), more);
  }

  // ---- Reputation ----

  function renderReputation(rows) {
    if (!rows.length) {
      show("reputation", el("p", { class: "ok-note" },
        "No evidence against any member: every score is 1000 and nobody is quarantined."));
      return;
    }
    const sorted = [...rows].sort((a, b) => a.score - b.score);
    const quarantined = rows.filter((r) => r.quarantined).length;
    const body = sorted.slice(0, REPUTATION_SHOWN_MAX).map((r) =>
      el("tr", { "data-node": r.node, "data-quarantined": r.quarantined ? "true" : "false" },
        el("td", {}, shortId(r.node), r.node === nodeId ? [" ", badge("this node", "role")] : null),
        el("td", { class: "num" }, String(r.score)),
        el("td", {}, r.quarantined ? badge("quarantined", "bad") : badge("selected", "good"))));
    show("reputation",
      el("p", {}, `${rows.length} member(s) with evidence against them, ${quarantined} quarantined (score below 500).`),
      table(["Node", "Score#", "Selection"], body),
      rows.length > REPUTATION_SHOWN_MAX ? el("p", { class: "muted" }, `${rows.length - REPUTATION_SHOWN_MAX} more not shown.`) : null);
  }

  // ---- Jobs ----

  /** Per-round metrics of a job's committed record, in round order. */
  function roundsOf(job) {
    const rounds = (job.detail && job.detail.rounds) || [];
    return rounds.map((record, index) => {
      const done = record.completion;
      return {
        round: index,
        done: Boolean(done),
        accuracy: done ? done.metrics.accuracy : null,
        loss: done ? done.metrics.loss : null,
        updates: done ? done.metrics.updates_count : null,
        epsilon: done ? done.privacy_spent_epsilon_micros / 1e6 : null,
        participants: (record.participants || []).length,
        aborted: record.aborted_attempts || 0,
      };
    });
  }

  /** Whether the job reports accuracy (a regression job does not). */
  function hasAccuracy(job) {
    return !(job.rounds_completed > 0 && (job.accuracy === null || job.accuracy === undefined));
  }

  const CHART = { width: 440, height: 190, left: 40, right: 46, top: 12, bottom: 30 };

  /** An SVG chart of accuracy (left axis, 0-100%) and loss (right axis, 0-max) per completed round. */
  function chart(job, rounds) {
    const done = rounds.filter((r) => r.done);
    const { width, height, left, right, top, bottom } = CHART;
    const plotW = width - left - right;
    const plotH = height - top - bottom;
    const lastRound = Math.max(1, job.rounds - 1, ...done.map((r) => r.round));
    const x = (round) => left + (plotW * round) / lastRound;
    const lossMax = Math.max(1e-9, ...done.map((r) => r.loss));
    const yAcc = (a) => top + plotH * (1 - a);
    const yLoss = (l) => top + plotH * (1 - l / lossMax);
    const showAccuracy = hasAccuracy(job);

    const parts = [];
    for (let i = 0; i <= 4; i += 1) {
      const y = top + (plotH * i) / 4;
      parts.push(svg("line", { class: "grid", x1: left, x2: width - right, y1: y, y2: y }));
      if (showAccuracy) parts.push(svg("text", { class: "tick", x: left - 6, y: y + 4, "text-anchor": "end" }, `${100 - 25 * i}%`));
      const lossTick = i === 4 ? "0" : (lossMax * (1 - i / 4)).toPrecision(2);
      parts.push(svg("text", { class: "tick loss", x: width - right + 6, y: y + 4 }, lossTick));
    }
    const step = Math.max(1, Math.ceil((lastRound + 1) / 10));
    for (let r = 0; r <= lastRound; r += step) {
      parts.push(svg("text", { class: "tick", x: x(r), y: height - bottom + 16, "text-anchor": "middle" }, String(r)));
    }
    parts.push(svg("text", { class: "axis-label", x: left + plotW / 2, y: height - 2, "text-anchor": "middle" }, "round"));

    const series = [];
    if (showAccuracy) series.push(["accuracy", (r) => yAcc(r.accuracy), (r) => `round ${r.round}: accuracy ${percent(r.accuracy)}`, (r) => r.accuracy]);
    series.push(["loss", (r) => yLoss(r.loss), (r) => `round ${r.round}: loss ${fixed(r.loss, 4)}`, (r) => r.loss]);
    for (const [name, y, label, value] of series) {
      const points = done.map((r) => `${x(r.round).toFixed(1)},${y(r).toFixed(1)}`).join(" ");
      parts.push(svg("polyline", {
        class: `series ${name}`,
        points,
        "data-series": name,
        "data-rounds": done.map((r) => r.round).join(","),
        "data-values": done.map((r) => String(value(r))).join(","),
      }));
      for (const r of done) {
        parts.push(svg("circle", { class: `dot ${name}`, cx: x(r.round).toFixed(1), cy: y(r).toFixed(1), r: 3.5, "data-round": r.round },
          svg("title", {}, label(r))));
      }
    }
    if (!done.length) {
      parts.push(svg("text", { class: "empty", x: left + plotW / 2, y: top + plotH / 2, "text-anchor": "middle" }, "no round completed yet"));
    }
    return svg("svg", {
      class: "chart",
      viewBox: `0 0 ${width} ${height}`,
      role: "img",
      "aria-label": `${showAccuracy ? "accuracy and " : ""}loss per round of job ${job.job}`,
      "data-job": job.job,
      "data-points": done.length,
    }, svg("title", {}, `Job ${job.job}: ${showAccuracy ? "accuracy and " : ""}validation loss per round`), parts);
  }

  function legend(job) {
    return el("div", { class: "legend" },
      hasAccuracy(job) ? el("span", { class: "key accuracy" }, "accuracy") : null,
      el("span", { class: "key loss" }, "validation loss"));
  }

  function statusBadge(status) {
    const kind = { Completed: "good", RoundRunning: "role", WaitingForRound: "role", BudgetExhausted: "warn", Cancelled: "bad" }[status] || "warn";
    return badge(status ?? "?", kind);
  }

  function roundsTable(job, rounds) {
    const accuracy = hasAccuracy(job);
    const rows = rounds.slice(-8).map((r) => el("tr", { "data-round": r.round },
      el("td", { class: "num" }, String(r.round)),
      el("td", {}, r.done ? "done" : "running", r.aborted ? ` (${r.aborted} aborted)` : ""),
      accuracy ? el("td", { class: "num" }, r.done ? percent(r.accuracy) : "—") : null,
      el("td", { class: "num" }, r.done ? fixed(r.loss, 4) : "—"),
      el("td", { class: "num" }, r.done ? `${r.updates}/${r.participants}` : `—/${r.participants}`),
      el("td", { class: "num" }, r.done ? fixed(r.epsilon, 3) : "—")));
    const headings = ["Round#", "State", accuracy ? "Accuracy#" : null, "Loss#", "Updates#", "ε spent#"].filter(Boolean);
    return el("div", { class: "rounds" },
      table(headings, rows),
      rounds.length > 8 ? el("p", { class: "muted" }, `Last 8 of ${rounds.length} rounds.`) : null);
  }

  function jobCard(job) {
    const rounds = roundsOf(job);
    const spec = (job.detail && job.detail.spec) || {};
    const declined = (job.declined || []).length
      ? el("ul", { class: "declined" }, job.declined.map((d) => el("li", {}, d)))
      : null;
    const summary = facts([
      ["Status", statusBadge(job.status)],
      ["Rounds", `${job.rounds_completed} of ${job.rounds} done${job.rounds_aborted ? `, ${job.rounds_aborted} aborted` : ""}`],
      hasAccuracy(job) ? ["Accuracy", el("strong", {}, percent(job.accuracy))] : ["Task", "regression"],
      ["Loss", fixed(job.loss, 4)],
      ["Rule", `${spec.rule_name ?? "?"}${spec.secagg ? ", secure aggregation" : ""}`],
      ["Privacy", job.privacy && job.privacy !== "off" ? `${job.privacy}, ε ${fixed(job.epsilon_spent, 3)} spent` : "off (no DP)"],
      ["Model", job.model_hash ? el("span", { class: "id", title: job.model_hash }, job.model_hash.slice(0, 16)) : "—"],
    ]);
    return el("article", { class: "job", "data-job": job.job, "data-status": job.status },
      el("h3", {}, el("span", { class: "job-name" }, job.job), " ", statusBadge(job.status)),
      el("div", { class: "job-body" },
        el("div", { class: "job-chart" }, chart(job, rounds), legend(job)),
        el("div", { class: "job-facts" }, summary, declined),
        roundsTable(job, rounds)));
  }

  function createdIndex(job) {
    return (job.detail && job.detail.created_index) || 0;
  }

  function renderJobs(jobs) {
    const newest = [...jobs].sort((a, b) => createdIndex(b) - createdIndex(a)).slice(0, JOBS_SHOWN_MAX);
    show("jobs",
      jobs.length ? el("div", { class: "job-list" }, newest.map(jobCard)) : el("p", { class: "muted" }, "No jobs yet. Submit one with agent-mesh job submit."),
      jobs.length > JOBS_SHOWN_MAX ? el("p", { class: "muted" }, `The ${JOBS_SHOWN_MAX} newest of ${jobs.length} jobs.`) : null);
    renderPrivacy(newest);
  }

  // ---- Privacy ----

  function renderPrivacy(jobs) {
    if (!jobs.length) {
      show("privacy", el("p", { class: "muted" }, "No jobs yet."));
      return;
    }
    const rows = jobs.map((job) => {
      const budget = job.detail && job.detail.spec && job.detail.spec.dp_budget;
      const total = budget ? budget.epsilon_micros / 1e6 : null;
      const share = total ? Math.min(1, job.epsilon_spent / total) : 0;
      const bar = total
        ? el("div", { class: "bar", title: `${percent(share)} of the budget` },
          el("meter", { min: 0, max: 1, value: share.toFixed(4), "data-share": share.toFixed(4) }))
        : el("span", { class: "muted" }, "no DP budget");
      return el("tr", { "data-job": job.job, "data-epsilon-spent": job.epsilon_spent },
        el("td", {}, job.job),
        el("td", {}, job.privacy || "off"),
        el("td", { class: "num" }, fixed(job.epsilon_spent, 3)),
        el("td", { class: "num" }, total === null ? "—" : fixed(total, 3)),
        el("td", { class: "num" }, budget ? String(budget.delta) : "—"),
        el("td", {}, bar));
    });
    show("privacy", table(["Job", "Protection", "ε spent#", "ε budget#", "δ#", "Used"], rows));
  }

  // ---- The refresh loop ----

  /** Loads one section: draws it, or shows why not. */
  async function load(ids, fetchAll, render) {
    try {
      const values = await fetchAll();
      render(...values);
    } catch (err) {
      const message = err instanceof RequestFailed ? err.message : `Could not draw this section: ${err && err.message}`;
      ids.forEach((id) => fail(id, message));
      return false;
    }
    return true;
  }

  async function refresh() {
    const results = await Promise.all([
      load(["node"], () => Promise.all([getJson("/v1/status", false), getProbe("/readyz")]), renderNode),
      load(["committee"], () => Promise.all([getJson("/v1/consensus", false)]), renderCommittee),
      load(["peers"], () => Promise.all([getJson("/v1/peers", false)]), renderPeers),
      load(["jobs", "privacy"], () => Promise.all([getJson("/v1/jobs", true)]), renderJobs),
      load(["reputation"], () => Promise.all([getJson("/v1/reputation", true)]), renderReputation),
    ]);
    const failed = results.filter((ok) => !ok).length;
    const state = document.getElementById("refresh-state");
    const time = new Date().toLocaleTimeString();
    state.textContent = failed
      ? `updated ${time}; ${failed} section(s) unavailable`
      : `updated ${time}`;
    state.className = failed ? "warn-text" : "muted";
    document.body.dataset.refreshed = String(Number(document.body.dataset.refreshed || 0) + 1);
  }

  let timer = null;

  async function loop() {
    clearTimeout(timer);
    try {
      await refresh();
    } finally {
      timer = setTimeout(loop, REFRESH_MS);
    }
  }

  function start() {
    takeFragmentToken();
    showTokenState();
    const form = document.getElementById("token-form");
    const input = document.getElementById("token-input");
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      setToken(input.value.trim());
      input.value = "";
      showTokenState();
      loop();
    });
    document.getElementById("token-forget").addEventListener("click", () => {
      setToken("");
      memoryToken = "";
      showTokenState();
      loop();
    });
    loop();
  }

  start();
})();
