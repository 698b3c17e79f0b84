// keygate kiosk page. Plain JavaScript, no framework, nothing loaded from elsewhere.
// The user comes only from the upstream sign-in's signed handoff (#handoff=...) or a trusted
// reverse-proxy header; there is no field to type a user name. All state is cleared after
// inactivity and after each success (see reset); every node that shows a student's data or
// an outcome carries data-clear, so that reset empties it.
"use strict";

const T = {
  nl: {
    brand: "Odisee · Beveiligingssleutel", footer: "Hulp nodig? Ga naar de servicedesk.",
    start_title: "Aanmelden zonder wachtwoord", hello: "Hallo {name}.",
    signin_hint: "Meld je eerst aan op de kiosk om een sleutel of telefoon te registreren.",
    enroll_button: "Beveiligingssleutel registreren", verify_button: "Mijn sleutel testen", phone_button: "Telefoonnummer toevoegen",
    plug_title: "Steek je beveiligingssleutel in", plug_none: "We wachten op je sleutel…",
    plug_many: "Er zijn twee of meer sleutels ingestoken. Laat er maar één in de kiosk.",
    pin_new_title: "Kies een pincode", pin_new_text: "heeft nog geen pincode. Je hebt er een nodig om je aan te melden.",
    pin_new_label: "Nieuwe pincode", pin_repeat_label: "Herhaal de pincode",
    pin_rules: "Minstens 4 tekens. Cijfers, letters of beide. Deel hem met niemand.",
    pin_mismatch: "De twee pincodes zijn niet gelijk.", pin_short: "De pincode moet minstens 4 tekens en hoogstens 63 bytes hebben.",
    pin_title: "Voer de pincode van je sleutel in", pin_label: "Pincode",
    pin_wrong: "Onjuiste pincode. Nog {n} pogingen.",
    touch_title: "Raak je beveiligingssleutel nu aan", touch_text: "Tik op het lampje of het metalen plaatje van je sleutel.", seconds: "seconden",
    touch_announce: "Raak je sleutel aan. Je hebt {n} seconden.", touch_left: "Nog {n} seconden.",
    enrolled_title: "Je sleutel is geregistreerd", enrolled_text: "{model} is nu een aanmeldmethode voor {user}.",
    working_title: "Even geduld", entra_contacting: "We vragen Microsoft om je sleutel te registreren…", entra_registering: "We registreren je sleutel bij Microsoft…",
    entra_window: "Registratie bij Microsoft: nog {t}.",
    entra_verified_text: "Deze sleutel hoort bij {user} en staat in Microsoft als \u201c{name}\u201d.",
    entra_enrolled_text: "{model} staat nu in je Microsoft-account als \u201c{name}\u201d. Je kunt je ermee aanmelden bij Microsoft 365.",
    verified_title: "Je sleutel werkt", verified_text: "Deze sleutel hoort bij {user}, geregistreerd op {date}.",
    phone_title: "Telefoonnummer toevoegen", country_label: "Land", number_label: "Mobiel nummer",
    code_title: "Voer de code in", code_text: "We hebben een code van 6 cijfers gestuurd naar", code_label: "Code",
    code_wrong: "Die code klopt niet. Nog {n} pogingen.", code_format: "Typ de 6 cijfers uit het sms-bericht.",
    verify_code: "Verifiëren", resend: "Code opnieuw verzenden", resend_in: "Code opnieuw verzenden ({n})",
    phone_ok_title: "Je telefoonnummer is bevestigd", phone_ok_text: "{number} kan nu sms-codes ontvangen.",
    next: "Volgende", cancel: "Annuleren", back: "Terug", done: "Klaar", retry: "Opnieuw proberen", home: "Naar het begin",
    not_signed_in: ["Deze kiosk is niet aangemeld", "De kiosk heeft geen geldige sessie.", "Vraag de servicedesk om de kiosk opnieuw te starten."],
  },
  en: {
    brand: "Odisee · Security key", footer: "Need help? Go to the service desk.",
    start_title: "Sign in without a password", hello: "Hello {name}.",
    signin_hint: "Sign in at the kiosk first to register a key or a phone.",
    enroll_button: "Register a security key", verify_button: "Test my key", phone_button: "Add a phone number",
    plug_title: "Insert your security key", plug_none: "Waiting for your key…",
    plug_many: "Two or more keys are plugged in. Leave only one in the kiosk.",
    pin_new_title: "Choose a PIN", pin_new_text: "has no PIN yet. You need one to sign in.",
    pin_new_label: "New PIN", pin_repeat_label: "Repeat the PIN",
    pin_rules: "At least 4 characters. Digits, letters or both. Never share it.",
    pin_mismatch: "The two PINs are not the same.", pin_short: "The PIN must have at least 4 characters and at most 63 bytes.",
    pin_title: "Enter your security key PIN", pin_label: "PIN",
    pin_wrong: "Wrong PIN. {n} attempts left.",
    touch_title: "Touch your security key now", touch_text: "Tap the light or the metal contact on your key.", seconds: "seconds",
    touch_announce: "Touch your key. You have {n} seconds.", touch_left: "{n} seconds left.",
    enrolled_title: "Your key is registered", enrolled_text: "{model} is now a sign-in method for {user}.",
    working_title: "One moment", entra_contacting: "Asking Microsoft to register your key…", entra_registering: "Registering your key with Microsoft…",
    entra_window: "Microsoft registration: {t} left.",
    entra_verified_text: "This key belongs to {user} and is in Microsoft as \u201c{name}\u201d.",
    entra_enrolled_text: "{model} is now in your Microsoft account as \u201c{name}\u201d. You can sign in to Microsoft 365 with it.",
    verified_title: "Your key works", verified_text: "This key belongs to {user}, registered on {date}.",
    phone_title: "Add a phone number", country_label: "Country", number_label: "Mobile number",
    code_title: "Enter code", code_text: "We sent a 6-digit code to", code_label: "Code",
    code_wrong: "That code is not right. {n} attempts left.", code_format: "Type the 6 digits from the text message.",
    verify_code: "Verify", resend: "Resend code", resend_in: "Resend code ({n})",
    phone_ok_title: "Your phone number is verified", phone_ok_text: "{number} can now receive SMS codes.",
    next: "Next", cancel: "Cancel", back: "Back", done: "Done", retry: "Try again", home: "Start over",
    not_signed_in: ["This kiosk is not signed in", "The kiosk has no valid session.", "Ask the service desk to restart the kiosk."],
  },
};

// Every error code the API can answer: [title, what happened, what to do next].
const E = {
  nl: {
    no_device: ["Geen sleutel gevonden", "Er zit geen beveiligingssleutel in de kiosk.", "Steek je sleutel in een USB-poort en probeer opnieuw."],
    multiple_devices: ["Meer dan één sleutel", "Er zitten meerdere sleutels in de kiosk.", "Laat er maar één in en probeer opnieuw."],
    device_busy: ["De sleutel is bezig", "Je sleutel is nog met iets anders bezig.", "Wacht even en probeer opnieuw."],
    device_removed: ["Sleutel verwijderd", "De sleutel werd uitgetrokken voor we klaar waren.", "Steek hem opnieuw in en probeer opnieuw."],
    touch_timeout: ["Tijd verstreken", "Je hebt je sleutel niet op tijd aangeraakt.", "Probeer opnieuw en raak de sleutel aan als het lampje knippert."],
    cancelled: ["Geannuleerd", "De handeling is geannuleerd.", "Je kunt opnieuw beginnen."],
    operation_denied: ["Geweigerd", "De handeling werd op de sleutel geweigerd.", "Probeer opnieuw en bevestig op je sleutel."],
    pin_required: ["Pincode nodig", "Deze sleutel vraagt om een pincode.", "Probeer opnieuw en voer je pincode in."],
    pin_not_set: ["Geen pincode", "Je sleutel heeft nog geen pincode.", "Probeer opnieuw: we helpen je een pincode te kiezen."],
    pin_invalid: ["Onjuiste pincode", "De pincode klopt niet.", "Probeer opnieuw."],
    pin_blocked: ["Pincode geblokkeerd", "Er werd te vaak een verkeerde pincode ingevoerd. De sleutel is geblokkeerd.", "Ga naar de servicedesk: de sleutel moet worden gereset."],
    pin_auth_blocked: ["Even geblokkeerd", "Drie keer na elkaar een verkeerde pincode.", "Trek de sleutel uit, steek hem opnieuw in en probeer opnieuw."],
    pin_policy_violation: ["Pincode niet toegestaan", "Een pincode heeft minstens 4 tekens en hoogstens 63 bytes (de sleutel kan meer tekens eisen).", "Kies een andere pincode."],
    uv_unsupported: ["Sleutel niet geschikt", "Deze sleutel ondersteunt geen pincode.", "Gebruik een FIDO2-sleutel met pincode of ga naar de servicedesk."],
    credential_excluded: ["Al geregistreerd", "Deze sleutel is al geregistreerd voor jou.", "Je kunt hem meteen gebruiken. Test hem met 'Mijn sleutel testen'."],
    no_credentials: ["Sleutel niet geregistreerd", "Op deze sleutel staat geen registratie voor Odisee.", "Registreer de sleutel eerst."],
    unknown_credential: ["Sleutel niet gekend", "Deze sleutel is niet (meer) geregistreerd.", "Registreer de sleutel opnieuw of ga naar de servicedesk."],
    possible_cloned_key: ["Sleutel geblokkeerd", "Deze sleutel gedroeg zich verdacht (mogelijk een kopie) en is voor je veiligheid geblokkeerd.", "Ga naar de servicedesk met je sleutel en je studentenkaart."],
    credential_quarantined: ["Sleutel geblokkeerd", "Deze sleutel is geblokkeerd.", "Ga naar de servicedesk met je sleutel en je studentenkaart."],
    attestation_rejected: ["Sleutel niet toegelaten", "Dit type sleutel is niet toegelaten.", "Gebruik een sleutel van de lijst van de servicedesk."],
    ceremony_expired: ["Tijd verstreken", "Het duurde te lang.", "Probeer opnieuw."],
    ceremony_interrupted: ["Onderbroken", "De kiosk werd herstart tijdens de registratie. Er is niets bewaard.", "Probeer opnieuw."],
    device_error: ["Sleutelfout", "De sleutel gaf een onverwacht antwoord.", "Trek de sleutel uit, steek hem opnieuw in en probeer opnieuw."],
    wrong_code: ["Onjuiste code", "Die code klopt niet.", "Probeer opnieuw."],
    challenge_expired: ["Code verlopen", "De code is ouder dan 5 minuten.", "Vraag een nieuwe code aan."],
    challenge_failed: ["Te veel pogingen", "Er werd te vaak een verkeerde code ingevoerd.", "Vraag een nieuwe code aan."],
    challenge_used: ["Code al gebruikt", "Deze code werd al gebruikt.", "Vraag een nieuwe code aan als dat nodig is."],
    challenge_cancelled: ["Geannuleerd", "Deze code is niet meer geldig.", "Vraag een nieuwe code aan."],
    user_locked: ["Tijdelijk geblokkeerd", "Te veel verkeerde codes.", "Probeer het over {m} minuten opnieuw."],
    resend_too_soon: ["Even wachten", "Je kunt de code nog niet opnieuw laten verzenden.", "Wacht enkele seconden."],
    resend_limit: ["Niet meer mogelijk", "De code werd al drie keer opnieuw verzonden.", "Ga terug en begin opnieuw."],
    rate_limited: ["Te veel berichten", "Er werden te veel sms-berichten verstuurd.", "Probeer het over {m} minuten opnieuw."],
    invalid_phone_number: ["Ongeldig nummer", "Dit is geen geldig telefoonnummer.", "Controleer het nummer, bijvoorbeeld 0475 12 34 56."],
    country_not_allowed: ["Land niet toegelaten", "Nummers uit dit land worden niet aanvaard.", "Gebruik een Belgisch, Nederlands, Luxemburgs, Frans of Duits nummer."],
    not_a_mobile_number: ["Geen gsm-nummer", "Dit is een vast nummer.", "Geef een mobiel nummer op."],
    phone_not_verified: ["Nummer niet bevestigd", "Dit nummer is nog niet bevestigd.", "Voeg het nummer opnieuw toe."],
    provider_unavailable: ["Sms tijdelijk onmogelijk", "We kunnen nu geen sms versturen.", "Probeer het later opnieuw of gebruik je sleutel."],
    handoff_invalid: ["Aanmelding verlopen", "Je aanmelding is niet (meer) geldig.", "Meld je opnieuw aan."],
    key_unsupported: ["Sleutel niet geschikt voor Microsoft", "Deze sleutel mist een functie die Microsoft nodig heeft (FIDO2 met pincode, opslag voor aanmeldgegevens, hmac-secret en credProtect).", "Gebruik een recente FIDO2-sleutel of ga naar de servicedesk."],
    entra_not_configured: ["Microsoft niet ingesteld", "Deze kiosk is niet verbonden met Microsoft Entra ID.", "Ga naar de servicedesk."],
    entra_auth_failed: ["Microsoft weigert de kiosk", "Microsoft Entra ID aanvaardt de aanmeldgegevens van de kiosk niet.", "Ga naar de servicedesk: de kiosk moet opnieuw worden ingesteld."],
    entra_forbidden: ["Niet toegelaten door Microsoft", "De kiosk mag geen sleutels registreren in Microsoft Entra ID (toestemming of beleid ontbreekt).", "Ga naar de servicedesk."],
    entra_user_not_found: ["Account niet gevonden", "Je account bestaat (nog) niet in Microsoft Entra ID.", "Ga naar de servicedesk met je studentenkaart."],
    entra_rejected: ["Geweigerd door Microsoft", "Microsoft Entra ID weigerde deze sleutel: {reason}", "Gebruik een sleutel van de lijst van de servicedesk."],
    entra_challenge_expired: ["Tijd verstreken", "Microsoft geeft 5 minuten om de sleutel te registreren; die zijn voorbij. Er is niets bewaard.", "Probeer opnieuw en raak je sleutel meteen aan."],
    entra_throttled: ["Microsoft is even druk", "Microsoft Entra ID krijgt nu te veel aanvragen.", "Probeer het over {m} minuten opnieuw."],
    entra_unavailable: ["Microsoft onbereikbaar", "Microsoft Entra ID antwoordt nu niet.", "Probeer het over enkele minuten opnieuw."],
    unauthorized: T_ns("nl"),
    generic: ["Er ging iets mis", "Er ging iets onverwachts mis.", "Probeer opnieuw of ga naar de servicedesk."],
  },
  en: {
    no_device: ["No key found", "There is no security key in the kiosk.", "Insert your key in a USB port and try again."],
    multiple_devices: ["More than one key", "Several keys are plugged in.", "Leave only one in and try again."],
    device_busy: ["The key is busy", "Your key is still busy with something else.", "Wait a moment and try again."],
    device_removed: ["Key removed", "The key was pulled out before we were done.", "Insert it again and try again."],
    touch_timeout: ["Time is up", "You did not touch your key in time.", "Try again and touch the key when its light blinks."],
    cancelled: ["Cancelled", "The operation was cancelled.", "You can start again."],
    operation_denied: ["Declined", "The operation was declined on the key.", "Try again and confirm on your key."],
    pin_required: ["PIN needed", "This key needs its PIN.", "Try again and enter your PIN."],
    pin_not_set: ["No PIN", "Your key has no PIN yet.", "Try again: we will help you choose one."],
    pin_invalid: ["Wrong PIN", "The PIN is not right.", "Try again."],
    pin_blocked: ["PIN blocked", "A wrong PIN was entered too often. The key is blocked.", "Go to the service desk: the key must be reset."],
    pin_auth_blocked: ["Blocked for now", "Three wrong PINs in a row.", "Unplug the key, plug it in again and try again."],
    pin_policy_violation: ["PIN not allowed", "A PIN has at least 4 characters and at most 63 bytes (the key may require more characters).", "Choose another PIN."],
    uv_unsupported: ["Key not suitable", "This key does not support a PIN.", "Use a FIDO2 key with a PIN or go to the service desk."],
    credential_excluded: ["Already registered", "This key is already registered for you.", "You can use it right away. Test it with 'Test my key'."],
    no_credentials: ["Key not registered", "This key holds no Odisee registration.", "Register the key first."],
    unknown_credential: ["Unknown key", "This key is not (or no longer) registered.", "Register the key again or go to the service desk."],
    possible_cloned_key: ["Key blocked", "This key behaved suspiciously (possibly a copy) and was blocked for your safety.", "Go to the service desk with your key and your student card."],
    credential_quarantined: ["Key blocked", "This key is blocked.", "Go to the service desk with your key and your student card."],
    attestation_rejected: ["Key not allowed", "This type of key is not allowed.", "Use a key from the service desk's list."],
    ceremony_expired: ["Time is up", "It took too long.", "Try again."],
    ceremony_interrupted: ["Interrupted", "The kiosk restarted during the registration. Nothing was saved.", "Try again."],
    device_error: ["Key error", "The key gave an unexpected answer.", "Unplug the key, plug it in again and try again."],
    wrong_code: ["Wrong code", "That code is not right.", "Try again."],
    challenge_expired: ["Code expired", "The code is older than 5 minutes.", "Ask for a new code."],
    challenge_failed: ["Too many attempts", "A wrong code was entered too often.", "Ask for a new code."],
    challenge_used: ["Code already used", "This code was already used.", "Ask for a new code if you need one."],
    challenge_cancelled: ["Cancelled", "This code is no longer valid.", "Ask for a new code."],
    user_locked: ["Locked for now", "Too many wrong codes.", "Try again in {m} minutes."],
    resend_too_soon: ["Please wait", "The code cannot be resent yet.", "Wait a few seconds."],
    resend_limit: ["Not possible any more", "The code was already resent three times.", "Go back and start again."],
    rate_limited: ["Too many messages", "Too many text messages were sent.", "Try again in {m} minutes."],
    invalid_phone_number: ["Invalid number", "This is not a valid phone number.", "Check the number, for example 0475 12 34 56."],
    country_not_allowed: ["Country not allowed", "Numbers from this country are not accepted.", "Use a Belgian, Dutch, Luxembourg, French or German number."],
    not_a_mobile_number: ["Not a mobile number", "This is a landline number.", "Enter a mobile number."],
    phone_not_verified: ["Number not verified", "This number has not been verified yet.", "Add the number again."],
    provider_unavailable: ["Text messages unavailable", "We cannot send text messages right now.", "Try again later or use your key."],
    handoff_invalid: ["Sign-in expired", "Your sign-in is not (or no longer) valid.", "Sign in again."],
    key_unsupported: ["Key not suitable for Microsoft", "This key lacks a feature Microsoft needs (FIDO2 with a PIN, storage for sign-in credentials, hmac-secret and credProtect).", "Use a recent FIDO2 key or go to the service desk."],
    entra_not_configured: ["Microsoft not set up", "This kiosk is not connected to Microsoft Entra ID.", "Go to the service desk."],
    entra_auth_failed: ["Microsoft refuses the kiosk", "Microsoft Entra ID does not accept the kiosk's credentials.", "Go to the service desk: the kiosk must be set up again."],
    entra_forbidden: ["Not allowed by Microsoft", "The kiosk may not register keys in Microsoft Entra ID (a permission or policy is missing).", "Go to the service desk."],
    entra_user_not_found: ["Account not found", "Your account does not exist (yet) in Microsoft Entra ID.", "Go to the service desk with your student card."],
    entra_rejected: ["Refused by Microsoft", "Microsoft Entra ID refused this key: {reason}", "Use a key from the service desk's list."],
    entra_challenge_expired: ["Time is up", "Microsoft allows 5 minutes to register the key; they have passed. Nothing was saved.", "Try again and touch your key right away."],
    entra_throttled: ["Microsoft is busy", "Microsoft Entra ID is getting too many requests right now.", "Try again in {m} minutes."],
    entra_unavailable: ["Microsoft unreachable", "Microsoft Entra ID is not answering right now.", "Try again in a few minutes."],
    unauthorized: T_ns("en"),
    generic: ["Something went wrong", "Something unexpected went wrong.", "Try again or go to the service desk."],
  },
};

function T_ns(lang) { return T[lang].not_signed_in; }

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
