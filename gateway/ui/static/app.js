// teegate auditor page. Data comes from the gateway's API with the admin
// key as a Bearer header; verdicts come from the wasm verifier
// (cmd/teegate-wasm) running in this browser. No inline script, no
// innerHTML with data: every value is set as text.
"use strict";

const KEY = "teegate.adminKey";
const $ = (id) => document.getElementById(id);
let verifierReady = null; // Promise resolved when the wasm verifier is up
let fleetTimer = null;

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else if (k.startsWith("data-")) e.setAttribute(k, v); else e[k] = v;
  }
  for (const k of kids) if (k != null) e.append(k instanceof Node ? k : document.createTextNode(String(k)));
  return e;
}

function key() { return sessionStorage.getItem(KEY) || ""; }

async function api(path) {
  const r = await fetch(path, { headers: { Authorization: "Bearer " + key() }, cache: "no-store" });
  const text = await r.text();
  if (!r.ok) {
    let msg = r.status + " " + r.statusText;
    try { msg = JSON.parse(text).error.message || msg; } catch (_) { /* not JSON */ }
    const err = new Error(msg); err.status = r.status; throw err;
  }
  return text;
}

// ---- the verifier ----------------------------------------------------

async function loadVerifier() {
  const status = $("verifier-status");
  const resp = await fetch("verifier.wasm", { cache: "no-store" });
  if (!resp.ok) {
    status.textContent = "verifier not built";
    status.className = "pill bad";
    status.title = await resp.text();
    $("verifier-hash").textContent = "—";
    throw new Error(status.title);
  }
  const bytes = await resp.arrayBuffer();
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  $("verifier-hash").textContent = Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("").slice(0, 16) + "…";
  $("verifier-hash").title = Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
  const go = new Go();
  const ready = new Promise((resolve) => window.addEventListener("teegate-verifier-ready", resolve, { once: true }));
  const { instance } = await WebAssembly.instantiate(bytes, go.importObject);
  go.run(instance);
  await ready;
  status.textContent = "verifier ready (WebAssembly, " + (bytes.byteLength / 1048576).toFixed(1) + " MiB)";
  status.className = "pill ok";
  return window.teegateVerifier;
}

async function verifier() {
  if (!verifierReady) verifierReady = loadVerifier();
  return verifierReady;
}

// ---- sign in -----------------------------------------------------------

function showLogin(msg) {
  $("app").hidden = true; $("login").hidden = false; $("live").hidden = true; $("signout").hidden = true;
  const e = $("login-error"); e.hidden = !msg; e.textContent = msg || "";
  if (fleetTimer) { clearInterval(fleetTimer); fleetTimer = null; }
}

async function connect() {
  try {
    await refreshFleet();
  } catch (err) {
    if (err.status === 401 || err.status === 403) {
      sessionStorage.removeItem(KEY);
      showLogin(err.status === 403 ? "This key is not an admin key." : "The gateway does not know this key.");
      return;
    }
  }
  $("login").hidden = true; $("app").hidden = false; $("live").hidden = false; $("signout").hidden = false;
  refreshAudit();
  fleetTimer = setInterval(() => { refreshFleet().catch(() => {}); refreshAudit(); }, 3000);
}

// ---- fleet -------------------------------------------------------------

function age(seconds) {
  if (seconds == null || seconds < 0) return "—";
  if (seconds < 90) return seconds + " s";
  if (seconds < 5400) return Math.round(seconds / 60) + " min";
  return (seconds / 3600).toFixed(1) + " h";
}

function since(t) {
  if (!t) return "—";
  const s = Math.max(0, Math.round((Date.now() - Date.parse(t)) / 1000));
  return age(s) + " ago";
}

function short(h) { return h ? h.slice(0, 12) + "…" : ""; }

function decisionPill(d) {
  const cls = d === "admitted" ? "ok" : d === "refused" ? "bad" : "wait";
  return el("span", { class: "pill decision " + cls }, d);
}

async function refreshFleet() {
  let data;
  try {
    data = JSON.parse(await api("/v1/attestation/workers")).data || [];
    $("fleet-error").hidden = true;
  } catch (err) {
    $("fleet-error").hidden = false; $("fleet-error").textContent = "Fleet: " + err.message;
    throw err;
  }
  const body = $("fleet").querySelector("tbody");
  body.replaceChildren();
  for (const w of data) {
    const c = w.claims || {};
    const meas = el("div", { class: "meas" });
    if (c.mrtd) meas.append(el("div", { title: c.mrtd }, "MRTD " + short(c.mrtd)));
    if (c.mrenclave) meas.append(el("div", { title: c.mrenclave }, "MRENCLAVE " + short(c.mrenclave)));
    if (c.measurement) meas.append(el("div", { title: c.measurement }, "MEASUREMENT " + short(c.measurement)));
    if (c.tcb_status) meas.append(el("div", {}, "TCB " + c.tcb_status));
    const tee = el("td", {}, c.tee || "—");
    if (c.simulated) tee.append(el("span", { class: "pill sim" }, "simulated"));
    if (c.debug) tee.append(el("span", { class: "pill bad" }, "debug"));
    const dec = el("td", {}, decisionPill(w.decision));
    if (w.reasons && w.reasons.length) dec.append(el("div", { class: "reasons" }, w.reasons.join("; ")));
    if (w.policy) dec.append(el("div", { class: "reasons" }, "policy " + w.policy));
    const btn = el("button", { class: "small", type: "button" }, "Claims");
    btn.disabled = !w.evidence_id;
    btn.addEventListener("click", () => showClaims(w));
    body.append(el("tr", { "data-worker": w.worker_id, "data-decision": w.decision },
      el("td", { class: "mono" }, w.worker_id),
      el("td", {}, (w.models || []).join(", ")),
      tee,
      el("td", {}, (c.gpus || []).join(", ") || "—"),
      el("td", {}, meas),
      dec,
      el("td", {}, age(w.evidence_age_seconds)),
      el("td", {}, w.serving ? since(w.heartbeat_at) : "not serving"),
      el("td", {}, btn)));
  }
  $("fleet-empty").hidden = data.length > 0;
  $("fleet-updated").textContent = "updated " + new Date().toLocaleTimeString();
}

async function showClaims(w) {
  $("claims-card").hidden = false;
  $("claims-worker").textContent = w.worker_id;
  $("claims-json").textContent = "";
  const v = $("claims-verdict");
  v.className = ""; v.textContent = "Fetching evidence " + short(w.evidence_id) + " and verifying it in this browser…";
  try {
    const evidence = await api("/v1/attestation/evidence/" + encodeURIComponent(w.evidence_id));
    const ver = await verifier();
    const rep = JSON.parse(await ver.verifyEvidence(JSON.stringify({ evidence, allow_simulated: $("allow-sim").checked })));
    if (rep.ok) {
      v.className = "verdict ok";
      v.textContent = "✓ Evidence " + short(rep.evidence_id) + " verified in this browser" + (rep.claims.simulated ? " (simulated TEE: not a real one)" : "");
      $("claims-json").textContent = JSON.stringify(rep.claims, null, 2);
    } else {
      v.className = "verdict bad";
      v.textContent = "✗ " + rep.error;
    }
  } catch (err) {
    v.className = "verdict bad"; v.textContent = "✗ " + err.message;
  }
}

// ---- receipts ----------------------------------------------------------

let lastLookup = "";

async function lookup() {
  const id = $("rid").value.trim();
  const errEl = $("lookup-error");
  errEl.hidden = true;
  $("steps").replaceChildren(); $("verdict").hidden = true;
  if (!id) return;
  try {
    const receipt = await api("/v1/attestation/receipts/" + encodeURIComponent(id));
    $("receipt").value = receipt;
    let evidenceID = "";
    try { evidenceID = JSON.parse(receipt).receipt.evidence_id; } catch (_) { /* the verifier reports it */ }
    $("evidence").value = evidenceID ? await api("/v1/attestation/evidence/" + encodeURIComponent(evidenceID)) : "";
    lastLookup = id;
    $("verify").disabled = false;
    await verify();
  } catch (err) {
    errEl.hidden = false; errEl.textContent = err.status === 404 ? "No receipt for " + id + "." : err.message;
  }
}

const STEP_ICON = { ok: "✓", failed: "✗", skipped: "–", not_reached: "·" };
const STEP_LABEL = { receipt: "receipt", evidence: "evidence", "key binding": "key binding", signature: "signature", hashes: "hashes", policy: "policy" };

async function verify() {
  $("verify").disabled = true;
  const steps = $("steps"), verdict = $("verdict");
  steps.replaceChildren(el("li", { "data-status": "not_reached" }, el("span", { class: "icon" }, "…"), el("span", { class: "name" }, "verifying"), el("span", { class: "detail" }, "in this browser")));
  verdict.hidden = true;
  try {
    const ver = await verifier();
    const input = {
      receipt: $("receipt").value, evidence: $("evidence").value,
      request: $("req-bytes").value, response: $("resp-bytes").value,
      allow_simulated: $("allow-sim").checked, policy: $("policy").value,
    };
    const rep = JSON.parse(await ver.verifyReceipt(JSON.stringify(input)));
    steps.replaceChildren();
    for (const s of rep.steps || []) {
      steps.append(el("li", { "data-step": s.name, "data-status": s.status },
        el("span", { class: "icon" }, STEP_ICON[s.status] || "?"),
        el("span", { class: "name" }, STEP_LABEL[s.name] || s.name),
        el("span", { class: "detail" }, s.detail || (s.status === "not_reached" ? "not reached" : ""))));
    }
    verdict.hidden = false;
    if (rep.verified) {
      verdict.className = "verdict ok"; verdict.dataset.result = "verified";
      verdict.textContent = "✓ Verified in this browser: request " + rep.request_id + " was answered by attested code" +
        (rep.claims && rep.claims.simulated ? " (simulated TEE — development only)" : "") + ".";
    } else if (rep.error) {
      verdict.className = "verdict bad"; verdict.dataset.result = "failed"; verdict.dataset.cause = rep.cause || "";
      verdict.textContent = "✗ Not verified — " + rep.error;
    } else {
      verdict.className = "verdict partial"; verdict.dataset.result = "partial";
      verdict.textContent = "Signature and evidence verified; the hashes were not checked (paste the exact request and response bytes).";
    }
  } catch (err) {
    steps.replaceChildren();
    verdict.hidden = false; verdict.className = "verdict bad"; verdict.dataset.result = "error";
    verdict.textContent = "✗ " + err.message;
  } finally {
    $("verify").disabled = false;
  }
}

// ---- audit log ---------------------------------------------------------

async function refreshAudit() {
  const box = $("audit");
  let st;
  try {
    st = JSON.parse(await api("/v1/audit/state"));
  } catch (err) {
    box.replaceChildren(el("p", { class: "muted", "data-audit": "off" },
      err.status === 404 || err.status === 501 ? "Audit log not configured on this gateway." : "Audit log: " + err.message));
    return;
  }
  if (!st.records) {
    box.replaceChildren(el("p", { class: "muted", "data-audit": "empty" }, "Audit log not configured, or empty: no records yet."));
    return;
  }
  const kv = el("dl", { class: "kv", "data-audit": st.verified ? "verified" : "unverified" });
  const add = (k, v) => kv.append(el("dt", {}, k), el("dd", {}, v));
  add("records", st.records + " (first " + st.first_seq + ")");
  add("head", "#" + st.head_seq + " " + (st.head_hash || ""));
  if (st.checkpoint) add("last checkpoint", "#" + st.checkpoint.seq + " signs #" + st.checkpoint.head_seq + ", " + since(st.checkpoint.time) + ", key " + short(st.checkpoint.signer));
  add("chain since checkpoint", st.verified ? "links (checked by the gateway; run teegate audit verify to check it yourself)" : "NOT verified: " + (st.tail_error || "unknown"));
  box.replaceChildren(kv);
  $("audit-updated").textContent = "updated " + new Date().toLocaleTimeString();
}

// ---- wiring ------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  verifier().catch(() => {});
  $("login-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const k = $("key").value.trim();
    if (!k) return;
    sessionStorage.setItem(KEY, k);
    $("key").value = "";
    connect();
  });
  $("signout").addEventListener("click", () => { sessionStorage.removeItem(KEY); showLogin(""); });
  $("lookup-form").addEventListener("submit", (e) => { e.preventDefault(); lookup(); });
  $("verify").addEventListener("click", () => verify());
  $("claims-close").addEventListener("click", () => { $("claims-card").hidden = true; });
  if (key()) connect(); else showLogin("");
});
