// keygate kiosk page. Plain JavaScript, no framework, nothing loaded from elsewhere.
// The user comes only from the upstream sign-in's signed handoff (#handoff=...) or a trusted
// reverse-proxy header; there is no field to type a user name. All state is cleared after
// inactivity and after each success (see reset); every node that shows a student's data or
// an outcome carries data-clear, so that reset empties it.
// Texts (T, E) come from texts.js.
"use strict";

const $ = (id) => document.getElementById(id);
const S = {
  lang: "nl", cfg: null, user: null, displayName: null, device: null, pin: null,
  kind: null, ceremony: null, es: null, challenge: null, lastInput: Date.now(),
  timers: [], retry: null, screen: "start", signingOut: null,
};

function t(key, vars) {
  let s = T[S.lang][key] || key;
  for (const [k, v] of Object.entries(vars || {})) s = fill(s, k, v);
  return s;
}

// `{key}` in `s` replaced by `value` as plain text (a string replacement would read `$&`, `$'`
// in Graph's reason or a name as patterns).
function fill(s, key, value) { return s.replace("{" + key + "}", () => String(value)); }

function applyLanguage() {
  document.documentElement.lang = S.lang;
  for (const el of document.querySelectorAll("[data-t]")) el.textContent = t(el.dataset.t);
  $("lang-nl").setAttribute("aria-pressed", String(S.lang === "nl"));
  $("lang-en").setAttribute("aria-pressed", String(S.lang === "en"));
  renderStart();
}

function show(name) {
  S.screen = name;
  // A screen the student has not seen yet gets the whole inactivity time: an outcome after a
  // long wait for a touch must not be reset the moment it shows.
  S.lastInput = Date.now();
  for (const s of document.querySelectorAll(".screen")) s.classList.add("hidden");
  const el = $("screen-" + name);
  el.classList.remove("hidden");
  document.body.dataset.screen = name;
  const focus = el.querySelector("input, select, button.primary, button");
  if (focus) focus.focus();
}

function clearTimers() { S.timers.forEach((x) => clearInterval(x)); S.timers = []; }

async function api(method, path, body) {
  const opts = { method, credentials: "same-origin", headers: {} };
  if (body !== undefined) { opts.headers["content-type"] = "application/json"; opts.body = JSON.stringify(body); }
  let res;
  try { res = await fetch(path, opts); } catch (e) { return { status: 0, body: { error: { code: "generic" } } }; }
  let json = {};
  try { json = await res.json(); } catch (e) { json = {}; }
  return { status: res.status, body: json };
}

function maskUser(u) { return u.length <= 5 ? u[0] + "•••" : u.slice(0, 3) + "•••" + u.slice(-2); }

function showError(code, extra, retry) {
  const table = E[S.lang];
  const [title, text, next] = table[code] || table.generic;
  const mins = extra && extra.retry_after ? Math.ceil(extra.retry_after / 60) : 1;
  $("error-title").textContent = title;
  const what = fill(text, "reason", (extra && (extra.reason || extra.message)) || "");
  $("error-text").textContent = what;
  $("error-next").textContent = fill(next, "m", mins);
  announce(title + ". " + what);
  document.body.dataset.error = code;
  S.retry = retry || null;
  $("btn-retry").classList.toggle("hidden", !S.retry);
  show("error");
}

function showSuccess(title, detail) {
  $("success-title").textContent = title;
  $("success-detail").textContent = detail;
  announce(title + ". " + detail);
  show("success");
  // The next student sees nothing of this one: reset soon after a success.
  S.timers.push(setTimeout(reset, 10000));
}

function renderStart() {
  $("greeting").textContent = S.user ? t("hello", { name: S.displayName || S.user }) : "";
  $("signin-hint").classList.toggle("hidden", !!S.user);
  $("btn-enroll").classList.toggle("hidden", !S.user);
  $("btn-phone").classList.toggle("hidden", !S.user || !(S.cfg && S.cfg.sms));
}

// ---- inactivity -----------------------------------------------------------------------------

function touched() { S.lastInput = Date.now(); }
["pointerdown", "keydown", "input"].forEach((ev) => document.addEventListener(ev, touched, true));

setInterval(() => {
  if (!S.cfg) return;
  const idle = Date.now() - S.lastInput;
  // While the key waits for a touch or keygate talks to Microsoft, the ceremony's own deadline
  // applies (a student who waited at the touch screen must not lose a registration under way).
  if (!["start", "touch", "working"].includes(S.screen) && idle > S.cfg.inactivity_secs * 1000) reset();
  if (S.screen === "start" && S.user && idle > S.cfg.inactivity_secs * 1000) reset();
}, 500);

// Back to the page as the first student found it: Dutch, no student (here and on the
// server: the session acts for nobody until the next handoff), no running ceremony or SMS
// challenge, every form field at its default and every data-clear node empty.
function reset() {
  clearTimers();
  if (S.es) { S.es.close(); S.es = null; }
  if (S.ceremony && S.kind) api("DELETE", `/v1/${S.kind}/${S.ceremony}`);
  if (S.challenge) api("DELETE", `/v1/sms/challenges/${S.challenge}`);
  signOut();
  Object.assign(S, { lang: "nl", user: null, displayName: null, device: null, pin: null, kind: null, ceremony: null, challenge: null, retry: null });
  for (const f of document.forms) f.reset();
  for (const i of document.querySelectorAll("input")) i.value = "";
  for (const sel of document.querySelectorAll("select")) sel.selectedIndex = 0;
  for (const e of document.querySelectorAll("[data-clear], .error")) e.textContent = "";
  $("btn-retry").classList.add("hidden");
  $("btn-resend").disabled = false;
  $("bar-fill").style.width = "";
  delete document.body.dataset.error;
  S.lastInput = Date.now();
  applyLanguage();
  show("start");
}

// Unbind the session server-side; a handoff that follows waits for this (identify).
function signOut() {
  const prev = S.signingOut || Promise.resolve();
  S.signingOut = prev.then(() => api("DELETE", "/v1/kiosk/handoff"));
  return S.signingOut;
}

// ---- keys -----------------------------------------------------------------------------------

async function waitForKey(next) {
  show("plug");
  $("plug-status").textContent = t("plug_none");
  const poll = async () => {
    if (S.screen !== "plug") return;
    const r = await api("GET", "/v1/devices");
    if (r.status !== 200) { clearTimers(); return showError((r.body.error || {}).code || "generic"); }
    const devs = r.body.devices || [];
    if (devs.length === 1) { clearTimers(); S.device = devs[0]; next(devs[0]); }
    else $("plug-status").textContent = devs.length > 1 ? t("plug_many") : t("plug_none");
  };
  S.timers.push(setInterval(poll, 1000));
  poll();
}

function askPin(model, message) {
  $("pin-model").textContent = model || "";
  $("pin-error").textContent = message || "";
  $("pin-input").value = "";
  show("pin");
}

function keyModel(d) { return (d && (d.model || d.product)) || ""; }

function startEnroll() {
  S.kind = "enrollments";
  waitForKey((d) => {
    if (d.pin_set === null || d.pin_set === undefined) return showError("uv_unsupported", null, startEnroll);
    if (d.pin_set === false) {
      $("pin-new-model").textContent = keyModel(d);
      $("pin-new-error").textContent = "";
      show("pin-new");
    } else askPin(keyModel(d));
  });
}

function startVerify() {
  S.kind = "assertions";
  waitForKey((d) => {
    if (!d.pin_set) return showError(d.pin_set === false ? "pin_not_set" : "uv_unsupported", null, startVerify);
    askPin(keyModel(d));
  });
}

async function submitNewPin(ev) {
  ev.preventDefault();
  const a = $("pin-new-1").value, b = $("pin-new-2").value;
  if ([...a].length < 4) { $("pin-new-error").textContent = t("pin_short"); return; }
  if (a !== b) { $("pin-new-error").textContent = t("pin_mismatch"); return; }
  const r = await api("POST", `/v1/devices/${encodeURIComponent(S.device.id)}/pin`, { new_pin: a });
  if (r.status !== 200) {
    const e = r.body.error || {};
    if (e.code === "pin_policy_violation") { $("pin-new-error").textContent = t("pin_short"); return; }
    return showError(e.code || "generic", e, startEnroll);
  }
  S.pin = a;
  begin();
}

function submitPin(ev) {
  ev.preventDefault();
  const pin = $("pin-input").value;
  if ([...pin].length < 4) { $("pin-error").textContent = t("pin_short"); return; }
  if (S.ceremony) {
    // Answering needs_pin of a running ceremony (after a wrong PIN).
    api("POST", `/v1/${S.kind}/${S.ceremony}/pin`, { pin }).then((r) => {
      if (r.status >= 400) { const e = r.body.error || {}; finishFailed(e.code, e); }
    });
    return;
  }
  S.pin = pin;
  begin();
}

async function begin() {
  const timeout_ms = S.cfg.touch_timeout_secs * 1000;
  const body = S.kind === "enrollments"
    ? { user: S.user, display_name: S.displayName || S.user, pin: S.pin, device: S.device.id, timeout_ms, discoverable: true, target: entra() ? "entra" : "local" }
    : { pin: S.pin, device: S.device.id, timeout_ms, target: entra() ? "entra" : "local" };
  S.pin = null;
  if (entra() && S.kind === "enrollments") showWorking(t("entra_contacting"));
  const r = await api("POST", `/v1/${S.kind}`, body);
  if (r.status >= 400) { const e = r.body.error || {}; return finishFailed(e.code, e); }
  S.ceremony = r.body.id;
  follow();
}

// Where enrollments go: the kiosk's `[kiosk] enroll_target` (keygate itself or Microsoft Entra ID).
function entra() { return !!(S.cfg && S.cfg.enroll_target === "entra"); }

// keygate talks to Microsoft (no key action needed): whatever counted down before stops.
// The same step reported twice (the key's progress and the ceremony's state) is shown and
// announced once.
function showWorking(text) {
  clearTimers();
  if (S.screen === "working" && $("working-status").textContent === text) return;
  $("working-status").textContent = text;
  announce(text);
  show("working");
}

// Entra's registration window (5 minutes from its challenge), shown under the touch countdown.
function startWindowCountdown(until) {
  const at = Date.parse(until);
  if (!at) return;
  const tick = () => {
    const left = Math.max(0, Math.ceil((at - Date.now()) / 1000));
    const mmss = Math.floor(left / 60) + ":" + String(left % 60).padStart(2, "0");
    $("entra-window").textContent = t("entra_window", { t: mmss });
  };
  tick();
  S.timers.push(setInterval(tick, 500));
}

// What a screen reader hears: the start, each of the last ten seconds, the Microsoft steps and
// the outcome; the visible countdown (redrawn every 250 ms) is hidden from it, and Microsoft's
// window (#entra-window, redrawn every 500 ms) is in no live region.
function announce(text) {
  $("announce").textContent = text;
}

function startCountdown() {
  clearTimers();
  const total = S.cfg.touch_timeout_secs;
  const started = Date.now();
  let announced = null;
  const tick = () => {
    const left = Math.max(0, total - Math.floor((Date.now() - started) / 1000));
    $("countdown").textContent = String(left);
    $("bar-fill").style.width = (100 * left / total) + "%";
    const say = announced === null ? t("touch_announce", { n: left }) : left <= 10 && left !== announced ? t("touch_left", { n: left }) : null;
    if (say !== null && left !== announced) { announce(say); announced = left; }
  };
  tick();
  S.timers.push(setInterval(tick, 250));
}

function follow() {
  const kind = S.kind, id = S.ceremony;
  const es = new EventSource(`/v1/${kind}/${id}/events`);
  S.es = es;
  es.addEventListener("waiting_touch", async () => {
    if (S.screen === "touch") return;
    show("touch"); startCountdown();
    if (kind === "enrollments" && entra()) {
      const r = await api("GET", `/v1/${kind}/${id}`);
      const w = r.body && r.body.entra;
      if (w && w.challenge_expires_at && S.screen === "touch") startWindowCountdown(w.challenge_expires_at);
    }
  });
  es.addEventListener("processing", () => { if (kind === "enrollments" && entra()) showWorking(t("entra_registering")); });
  es.addEventListener("needs_pin", async () => {
    clearTimers();
    const r = await api("GET", `/v1/${kind}/${id}`);
    const e = (r.body && r.body.error) || {};
    const left = r.body.pin_retries;
    askPin(keyModel(S.device), e.code === "pin_invalid" && left != null ? t("pin_wrong", { n: left }) : "");
  });
  const end = async () => {
    es.close(); S.es = null; clearTimers();
    const r = await api("GET", `/v1/${kind}/${id}`);
    const v = r.body || {};
    if (v.state === "succeeded") finishOk(v);
    else { const e = v.error || {}; finishFailed(e.code || v.state, e); }
  };
  ["done", "failed", "cancelled"].forEach((ev) => es.addEventListener(ev, end));
  es.onerror = () => { if (S.es === es && es.readyState === EventSource.CLOSED) end(); };
}

function fmtDate(iso) {
  try {
    return new Date(iso).toLocaleDateString(S.lang === "nl" ? "nl-BE" : "en-GB", { day: "numeric", month: "long", year: "numeric" });
  } catch (e) { return iso; }
}

function finishOk(v) {
  const kind = S.kind;
  S.ceremony = null; S.kind = null;
  const res = v.result || {};
  if (kind === "enrollments" && res.entra) {
    const model = res.entra.model || keyModel(S.device);
    showSuccess(t("enrolled_title"), t("entra_enrolled_text", { model, name: res.entra.display_name || model }));
  } else if (kind === "enrollments") {
    const model = (res.credential && (res.credential.nickname || res.credential.model)) || keyModel(S.device);
    showSuccess(t("enrolled_title"), t("enrolled_text", { model, user: S.displayName || S.user }));
  } else if (res.entra) {
    showSuccess(t("verified_title"), t("entra_verified_text", { user: maskUser(res.user || "?"), name: res.entra.display_name || "" }));
  } else {
    showSuccess(t("verified_title"), t("verified_text", { user: maskUser(res.user || "?"), date: fmtDate(res.enrolled_at) }));
  }
}

function finishFailed(code, extra) {
  const retry = S.kind === "enrollments" ? startEnroll : S.kind === "assertions" ? startVerify : null;
  S.ceremony = null;
  showError(code || "generic", extra, retry);
}

async function cancel() {
  clearTimers();
  if (S.es) { S.es.close(); S.es = null; }
  if (S.ceremony && S.kind) await api("DELETE", `/v1/${S.kind}/${S.ceremony}`);
  if (S.challenge) await api("DELETE", `/v1/sms/challenges/${S.challenge}`);
  Object.assign(S, { ceremony: null, kind: null, challenge: null, pin: null });
  show("start");
}

// ---- phone ----------------------------------------------------------------------------------

function startPhone() {
  $("phone-error").textContent = "";
  show("phone");
}

function normalise(cc, typed) {
  const v = typed.trim();
  if (v.startsWith("+") || v.startsWith("00")) return v;
  return "+" + cc + " " + v.replace(/^0/, "");
}

async function submitPhone(ev) {
  ev.preventDefault();
  const number = normalise($("country").value, $("phone-number").value);
  const r = await api("POST", `/v1/users/${encodeURIComponent(S.user)}/phones`, { number, locale: S.lang });
  if (r.status !== 201) {
    const e = r.body.error || {};
    if (["invalid_phone_number", "country_not_allowed", "not_a_mobile_number"].includes(e.code)) {
      $("phone-error").textContent = E[S.lang][e.code][1] + " " + E[S.lang][e.code][2];
      return;
    }
    return showError(e.code || "generic", e, startPhone);
  }
  openCode(r.body.challenge);
}

function openCode(ch) {
  S.challenge = ch.id;
  $("code-number").textContent = ch.masked_number;
  $("code-error").textContent = "";
  $("code-input").value = "";
  show("code");
  resendCountdown(ch.resend_available_at);
}

function resendCountdown(at) {
  clearTimers();
  const until = Date.parse(at);
  const btn = $("btn-resend");
  const tick = () => {
    const left = Math.ceil((until - Date.now()) / 1000);
    btn.disabled = left > 0;
    btn.textContent = left > 0 ? t("resend_in", { n: left }) : t("resend");
  };
  tick();
  S.timers.push(setInterval(tick, 250));
}

async function submitCode(ev) {
  ev.preventDefault();
  const code = $("code-input").value.replace(/\s/g, "");
  if (!/^[0-9]{6}$/.test(code)) { $("code-error").textContent = t("code_format"); return; }
  const r = await api("POST", `/v1/sms/challenges/${S.challenge}/verify`, { code });
  if (r.status === 200) {
    const masked = r.body.challenge.masked_number;
    S.challenge = null; clearTimers();
    return showSuccess(t("phone_ok_title"), t("phone_ok_text", { number: masked }));
  }
  const e = r.body.error || {};
  if (e.code === "wrong_code") { $("code-error").textContent = t("code_wrong", { n: e.attempts_left }); $("code-input").value = ""; return; }
  S.challenge = null; clearTimers();
  showError(e.code || "generic", e, startPhone);
}

async function resend() {
  const r = await api("POST", `/v1/sms/challenges/${S.challenge}/resend`);
  if (r.status === 200) { resendCountdown(r.body.resend_available_at); return; }
  const e = r.body.error || {};
  if (e.code === "resend_too_soon") { $("code-error").textContent = E[S.lang].resend_too_soon[2]; return; }
  S.challenge = null; clearTimers();
  showError(e.code || "generic", e, startPhone);
}

async function codeBack() {
  clearTimers();
  if (S.challenge) await api("DELETE", `/v1/sms/challenges/${S.challenge}`);
  S.challenge = null;
  startPhone();
}

// ---- start-up -------------------------------------------------------------------------------

async function identify() {
  const m = /[#&]handoff=([^&]+)/.exec(location.hash);
  if (S.signingOut) await S.signingOut;
  if (m) {
    history.replaceState(null, "", location.pathname);
    const r = await api("POST", "/v1/kiosk/handoff", { token: decodeURIComponent(m[1]) });
    if (r.status === 200) { S.user = r.body.user; S.displayName = r.body.display_name; S.lastInput = Date.now(); }
    else { const e = r.body.error || {}; showError(e.code || "handoff_invalid", e); }
  } else if (S.cfg.trusted_user_header && !S.user) {
    const r = await api("GET", "/v1/kiosk/whoami");
    if (r.status === 200) { S.user = r.body.user; S.displayName = r.body.display_name; }
  }
  renderStart();
}

async function init() {
  $("lang-nl").addEventListener("click", () => { S.lang = "nl"; applyLanguage(); });
  $("lang-en").addEventListener("click", () => { S.lang = "en"; applyLanguage(); });
  $("btn-enroll").addEventListener("click", startEnroll);
  $("btn-verify").addEventListener("click", startVerify);
  $("btn-phone").addEventListener("click", startPhone);
  $("form-pin-new").addEventListener("submit", submitNewPin);
  $("form-pin").addEventListener("submit", submitPin);
  $("form-phone").addEventListener("submit", submitPhone);
  $("form-code").addEventListener("submit", submitCode);
  $("btn-resend").addEventListener("click", resend);
  $("btn-code-back").addEventListener("click", codeBack);
  $("btn-done").addEventListener("click", reset);
  $("btn-home").addEventListener("click", reset);
  $("btn-retry").addEventListener("click", () => { const r = S.retry; if (r) r(); else reset(); });
  for (const b of document.querySelectorAll("button.cancel")) b.addEventListener("click", cancel);
  window.addEventListener("hashchange", identify);
  applyLanguage();
  const r = await api("GET", "/v1/kiosk/config");
  if (r.status !== 200) { S.cfg = null; showError("unauthorized"); return; }
  S.cfg = r.body;
  // A reloaded page starts with nobody, like the server-side session.
  await signOut();
  await identify();
  if (S.screen !== "error") show("start");
  document.body.dataset.ready = "true";
}

document.addEventListener("DOMContentLoaded", init);
