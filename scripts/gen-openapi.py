#!/usr/bin/env python3
"""Generates src/http/openapi.json (OpenAPI 3.1) from the route table below.
Keep this table in step with src/http/*.rs; tests/openapi.rs checks that every route is documented."""
import json, pathlib

ERR = {"$ref": "#/components/responses/Error"}
def op(summary, role, body=None, params=(), query=(), ok="200", desc=None, sse=False):
    o = {"summary": summary, "responses": {ok: {"description": desc or "OK",
         "content": {("text/event-stream" if sse else "application/json"): {"schema": {"type": "string"} if sse else {"type": "object"}}}},
         "default": ERR}}
    if role:
        o["security"] = [{"bearer": []}]
        o["x-keygate-role"] = role
    ps = [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}} for p in params]
    ps += [{"name": q, "in": "query", "required": False, "schema": {"type": "string"}, "description": d} for q, d in query]
    if ps: o["parameters"] = ps
    if body:
        o["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    return o

def obj(props, required=()):
    return {"type": "object", "additionalProperties": False, "properties": props, "required": list(required)}

S, I, B = {"type": "string"}, {"type": "integer"}, {"type": "boolean"}
UV = {"type": "string", "enum": ["required", "preferred"]}
LOCALE = {"type": "string", "enum": ["nl", "en", "fr"]}
WAIT = [("wait", "`true` (until the ceremony ends or needs a PIN) or seconds 0-120")]
enroll = obj({"user": S, "display_name": S, "nickname": S, "discoverable": B, "user_verification": UV,
              "pin": S, "device": S, "timeout_ms": I}, ["user", "display_name"])
assertion = obj({"user": S, "user_verification": UV, "pin": S, "device": S, "timeout_ms": I})
pin = obj({"pin": S}, ["pin"])

paths = {
 "/healthz": {"get": op("Liveness", None)},
 "/openapi.json": {"get": op("This document", None)},
 "/v1/devices": {"get": op("Plugged keys: model, AAGUID, versions, PIN state, retries, UV, slots", "kiosk")},
 "/v1/devices/{id}/pin": {"post": op("Set a PIN (key without one) or change it (with current_pin)", "kiosk",
      obj({"new_pin": S, "current_pin": S}, ["new_pin"]), ["id"])},
 "/v1/enrollments": {"post": op("Start enrolling a key for a user (202; 200 when ended with ?wait)", "kiosk", enroll, query=WAIT, ok="202")},
 "/v1/enrollments/{id}": {"get": op("Ceremony state (long-poll with ?wait)", "kiosk", params=["id"], query=WAIT),
                           "delete": op("Cancel", "kiosk", params=["id"])},
 "/v1/enrollments/{id}/events": {"get": op("Server-Sent Events: pending, waiting_touch, needs_pin, processing, done, failed, cancelled", "kiosk", params=["id"], sse=True)},
 "/v1/enrollments/{id}/pin": {"post": op("Answer needs_pin", "kiosk", pin, ["id"], WAIT)},
 "/v1/assertions": {"post": op("Start verifying a key (named user, or user-less when `user` is absent)", "kiosk", assertion, query=WAIT, ok="202")},
 "/v1/assertions/{id}": {"get": op("Ceremony state (long-poll with ?wait)", "kiosk", params=["id"], query=WAIT),
                          "delete": op("Cancel", "kiosk", params=["id"])},
 "/v1/assertions/{id}/events": {"get": op("Server-Sent Events of the ceremony", "kiosk", params=["id"], sse=True)},
 "/v1/assertions/{id}/pin": {"post": op("Answer needs_pin", "kiosk", pin, ["id"], WAIT)},
 "/v1/users": {"get": op("Users by name, one page at a time; `next` is the following page's cursor (null on the last)", "admin", query=[("after", "cursor: the `next` of the previous page"), ("limit", "1-1000, default 100")])},
 "/v1/users/{user}": {"get": op("A user and their active credentials", "admin", params=["user"]),
                      "delete": op("Service-desk reset: revoke all keys, remove phones; returns a receipt", "admin", params=["user"])},
 "/v1/users/{user}/credentials": {"get": op("A user's credentials", "admin", params=["user"], query=[("include_revoked", "true to include revoked")])},
 "/v1/users/{user}/credentials/{id}": {
     "get": op("One credential, with its COSE public key (base64url)", "admin", params=["user", "id"]),
     "patch": op("Rename", "admin", obj({"nickname": S}), ["user", "id"]),
     "delete": op("Revoke", "admin", params=["user", "id"])},
 "/v1/users/{user}/credentials/{id}/release": {"post": op("Release from quarantine", "admin", params=["user", "id"])},
 "/v1/audit": {"get": op("Audit log, newest first", "admin", query=[("user", "user name"), ("since", "RFC 3339"), ("limit", "1-1000")])},
 "/v1/sim/keys": {"get": op("Simulated keys (only with --simulate)", "kiosk"),
                  "post": op("Plug a new simulated key", "kiosk", {"type": "object"}, ok="201")},
 "/v1/sim/keys/{id}": {"patch": op("Configure a simulated key (touch, counter, ...)", "kiosk", {"type": "object"}, ["id"]),
                       "delete": op("Remove a simulated key", "kiosk", params=["id"])},
 "/v1/sim/keys/{id}/unplug": {"post": op("Unplug (an operation in flight fails with device_removed)", "kiosk", params=["id"])},
 "/v1/sim/keys/{id}/replug": {"post": op("Plug back in (power cycle)", "kiosk", params=["id"])},
 "/v1/sim/keys/{id}/clone": {"post": op("Clone: same secrets, frozen counter", "kiosk", params=["id"], ok="201")},
 # SMS
 "/v1/users/{user}/phones": {
     "post": op("Register a phone (unverified) and send it a verification code: {phone, challenge}", "kiosk",
                obj({"number": S, "label": S, "locale": LOCALE}, ["number"]), ["user"], ok="201"),
     "get": op("A user's phones (masked numbers)", "admin", params=["user"])},
 "/v1/users/{user}/phones/{id}": {"delete": op("Remove a phone", "admin", params=["user", "id"], ok="204")},
 "/v1/sms/challenges": {"post": dict(op("Send a code to a verified phone of the user (header Idempotency-Key: a retry does not send twice; 200 on replay; 409 idempotency_conflict when the key was used for another request)", "kiosk",
                obj({"user": S, "phone_id": S, "number": S, "locale": LOCALE}, ["user"]), ok="201"))},
 "/v1/sms/challenges/{id}": {"get": op("Challenge state, masked number, resend time, delivery status", "kiosk", params=["id"]),
                             "delete": op("Cancel (\"Back\")", "kiosk", params=["id"])},
 "/v1/sms/challenges/{id}/verify": {"post": op("Check the typed code: {verified: true} or wrong_code with attempts_left", "kiosk", obj({"code": S}, ["code"]), ["id"])},
 "/v1/sms/challenges/{id}/resend": {"post": op("Resend the same code (cooldown, at most 3 times)", "kiosk", params=["id"])},
 "/v1/sms/providers": {"get": op("Providers in failover order with circuit state and counters", "admin")},
 "/v1/sms/callbacks/{provider}": {"post": op("Delivery status from twilio (X-Twilio-Signature), vonage (signed `sig`, signature_secret) or webhook (X-Keygate-Signature); no bearer token", None, params=["provider"], ok="204")},
 # kiosk page
 "/": {"get": op("Redirects a browser to the kiosk page /kiosk/", None, ok="303")},
 "/favicon.ico": {"get": op("The kiosk page's icon (SVG)", None)},
 "/kiosk": {"get": op("Redirects to /kiosk/", None, ok="308")},
 "/kiosk/": {"get": op("The kiosk page (HTML, strict CSP, assets embedded)", None)},
 "/kiosk/app.js": {"get": op("The kiosk page's script", None)},
 "/kiosk/app.css": {"get": op("The kiosk page's style sheet", None)},
 "/kiosk/session": {"get": op("Exchange a one-time code (keygate kiosk-url) for an HttpOnly SameSite=Strict kiosk session cookie; redirects to /kiosk/", None, query=[("code", "one-time code")], ok="303")},
 "/v1/kiosk/config": {"get": op("The page's settings: inactivity_secs, touch_timeout_secs, sms", "kiosk")},
 "/v1/kiosk/handoff": {"post": op("Verify the upstream sign-in's signed handoff (single use, at most 10 minutes ahead) and bind this page session to that user: {user, display_name, expires_at}", "kiosk", obj({"token": S}, ["token"])),
                       "delete": op("Unbind the page session from its user (the page's reset)", "kiosk", ok="204")},
 "/v1/kiosk/whoami": {"get": op("The user a reverse proxy on this machine signed in (kiosk.trusted_user_header)", "kiosk")},
 "/v1/sim/sms": {"get": op("Messages the console provider sent to a simulated phone, newest first (only with --simulate)", "kiosk", query=[("number", "phone number")])},
}

extra = pathlib.Path(__file__).with_name("openapi-extra.json")
if extra.exists():
    paths.update(json.loads(extra.read_text()))

doc = {
 "openapi": "3.1.0",
 "info": {"title": "keygate", "version": "0.1.0",
          "description": "FIDO2 security keys (CTAP2 over HID) and SMS codes for a campus, behind a local HTTP API. Errors are {\"error\": {\"code\", \"message\", ...}} with stable codes (see README)."},
 "paths": paths,
 "components": {
   "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "keygate token (`keygate token create --role kiosk|admin`)"}},
   "responses": {"Error": {"description": "Error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}},
   "schemas": {"Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "object", "required": ["code", "message"],
        "properties": {"code": S, "message": S, "retries_left": I, "retry_after": I}}}}}}}
out = pathlib.Path(__file__).resolve().parent.parent / "src/http/openapi.json"
out.write_text(json.dumps(doc, indent=1) + "\n")
