//! SMS routes: phones as a method, challenges (send, verify, resend, cancel), provider health,
//! the fraud guard's blocks and monthly count, provider delivery callbacks (signature-verified, no bearer token), and under `--simulate`
//! the simulated phones' inbox. Each handler carries its `#[utoipa::path]`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{delete, get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;

use super::bodies::{ErrorBody, PhoneAdded, PhoneList, ProviderList, SimInboxBody, Verified};
use super::error::{ApiError, ApiResult};
use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::kiosk::PageSession;
use super::SharedState;
use crate::auth::{Caller, Role};
use crate::sms::providers;
use crate::sms::template::Locale;
use crate::sms::{ChallengeView, FraudView, NewChallenge, SmsService};

/// Routes for kiosks (and admins); list/delete of phones check the admin role themselves.
pub fn kiosk_routes() -> Router<SharedState> {
    Router::new()
        .route("/v1/users/{user}/phones", post(add_phone).get(list_phones))
        .route("/v1/users/{user}/phones/{id}", delete(delete_phone))
        .route("/v1/sms/challenges", post(create_challenge))
        .route(
            "/v1/sms/challenges/{id}",
            get(get_challenge).delete(cancel_challenge),
        )
        .route("/v1/sms/challenges/{id}/verify", post(verify))
        .route("/v1/sms/challenges/{id}/resend", post(resend))
}

pub fn admin_routes() -> Router<SharedState> {
    Router::new()
        .route("/v1/sms/providers", get(providers))
        .route("/v1/sms/fraud", get(fraud))
        .route("/v1/sms/fraud/blocks/{prefix}", delete(lift_fraud_block))
}

/// Providers call these; they authenticate by signature, not by token.
pub fn callback_routes() -> Router<SharedState> {
    Router::new().route("/v1/sms/callbacks/{provider}", post(callback))
}

pub fn sim_routes() -> Router<SharedState> {
    Router::new().route("/v1/sim/sms", get(sim_inbox))
}

fn service(st: &SharedState) -> ApiResult<&Arc<SmsService>> {
    st.sms.as_ref().ok_or_else(ApiError::not_found)
}

fn admin_only(caller: &Caller) -> ApiResult<()> {
    if caller.role == Role::Admin {
        Ok(())
    } else {
        Err(ApiError::forbidden("this needs an admin token"))
    }
}

/// A phone to register: its number (E.164 or national in the default region), a label
/// (at most 64 characters, no control characters) and the locale of its messages.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct AddPhone {
    number: String,
    #[schema(max_length = 64, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$")]
    label: Option<String>,
    locale: Option<Locale>,
}

/// Register a phone (unverified) and send it a verification code; atomic (no phone is
/// registered when the code cannot be sent).
#[utoipa::path(post, path = "/v1/users/{user}/phones", tag = "sms", params(super::bodies::UserPath),
    request_body = AddPhone,
    security(("bearer" = ["kiosk"]), ("kiosk_session" = ["kiosk"])),
    responses(
        (status = 201, description = "The phone and its verification challenge", body = PhoneAdded),
        (status = 404, description = "`not_found`: the SMS factor is not set up", body = ErrorBody),
        (status = 409, description = "`conflict`: the user already has this number", body = ErrorBody),
        (status = 422, description = "`invalid_phone_number`, `country_not_allowed`, `not_a_mobile_number`", body = ErrorBody),
        (status = 429, description = "`user_locked`, `rate_limited`, `fraud_suspected` (with `retry_after`)", body = ErrorBody),
        (status = 503, description = "`provider_unavailable`, `budget_exhausted` (with `retry_after`)", body = ErrorBody),
    ))]
async fn add_phone(
    State(st): State<SharedState>,
    caller: Caller,
    ApiPath(user): ApiPath<String>,
    ApiJson(body): ApiJson<AddPhone>,
) -> ApiResult<(StatusCode, Json<PhoneAdded>)> {
    super::users_privacy::refuse_closed(&st, &user)?;
    let (phone, challenge) = service(&st)?
        .add_phone(
            &user,
            &body.number,
            body.label.as_deref(),
            body.locale.unwrap_or_default(),
            &caller.actor(),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(PhoneAdded { phone, challenge })))
}

/// A user's phones (masked numbers).
#[utoipa::path(get, path = "/v1/users/{user}/phones", tag = "sms", params(super::bodies::UserPath),
    security(("bearer" = ["admin"])),
    responses(
        (status = 200, description = "The phones", body = PhoneList),
        (status = 404, description = "`not_found`: the SMS factor is not set up", body = ErrorBody),
    ))]
async fn list_phones(
    State(st): State<SharedState>,
    caller: Caller,
    ApiPath(user): ApiPath<String>,
) -> ApiResult<Json<PhoneList>> {
    admin_only(&caller)?;
    Ok(Json(PhoneList {
        phones: service(&st)?.list_phones(&user)?,
    }))
}

/// Remove a phone.
#[utoipa::path(delete, path = "/v1/users/{user}/phones/{id}", tag = "sms",
    params(super::bodies::UserPath, ("id" = String, Path, description = "Phone id")),
    security(("bearer" = ["admin"])),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ))]
async fn delete_phone(
    State(st): State<SharedState>,
    caller: Caller,
    ApiPath((user, id)): ApiPath<(String, String)>,
) -> ApiResult<StatusCode> {
    admin_only(&caller)?;
    service(&st)?
        .delete_phone(&user, &id, &caller.actor())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Send a code to a phone of the user: a verified phone (`phone_id`, or `number` naming one).
/// With an `Idempotency-Key`, a retried request sends nothing twice (`200` with the same
/// challenge); the key is the token's own, and reusing it for another request is
/// `409 idempotency_conflict`.
#[utoipa::path(post, path = "/v1/sms/challenges", tag = "sms",
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 128,
        pattern = r"^[!-~]([ -~]*[!-~])?$", description = "Makes a retry safe: 1-128 printable ASCII characters")),
    request_body = NewChallenge,
    security(("bearer" = ["kiosk"]), ("kiosk_session" = ["kiosk"])),
    responses(
        (status = 201, description = "The code was queued for sending", body = ChallengeView),
        (status = 200, description = "A replay of an earlier request with the same Idempotency-Key", body = ChallengeView),
        (status = 404, description = "`not_found`: no such phone, or the SMS factor is not set up", body = ErrorBody),
        (status = 409, description = "`phone_not_verified`, `idempotency_conflict`", body = ErrorBody),
        (status = 422, description = "`invalid_phone_number`, `country_not_allowed`, `not_a_mobile_number`", body = ErrorBody),
        (status = 429, description = "`user_locked`, `rate_limited`, `fraud_suspected` (with `retry_after`)", body = ErrorBody),
        (status = 503, description = "`provider_unavailable`, `budget_exhausted` (with `retry_after`)", body = ErrorBody),
    ))]
async fn create_challenge(
    State(st): State<SharedState>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(body): ApiJson<NewChallenge>,
) -> ApiResult<(StatusCode, Json<ChallengeView>)> {
    let key = headers
        .get("idempotency-key")
        .map(|v| {
            v.to_str()
                .map_err(|_| ApiError::invalid("Idempotency-Key must be ASCII"))
        })
        .transpose()?;
    super::users_privacy::refuse_closed(&st, &body.user)?;
    let (view, created) = service(&st)?
        .create_challenge(body, key, &caller.actor())
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(view)))
}

/// A challenge's state: masked number, resend time, attempts left, delivery status.
#[utoipa::path(get, path = "/v1/sms/challenges/{id}", tag = "sms", params(("id" = String, Path, description = "Challenge id")),
    security(("bearer" = ["kiosk"]), ("kiosk_session" = ["kiosk"])),
    responses(
        (status = 200, description = "The challenge", body = ChallengeView),
        (status = 404, description = "`not_found` (also another caller's challenge)", body = ErrorBody),
    ))]
async fn get_challenge(
    State(st): State<SharedState>,
    caller: Caller,
    session: Option<Extension<PageSession>>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<ChallengeView>> {
    super::access::challenge(service(&st)?, &caller, &session, &id)?;
    Ok(Json(service(&st)?.get_challenge(&id)?))
}

/// Cancel a challenge (the student went back).
#[utoipa::path(delete, path = "/v1/sms/challenges/{id}", tag = "sms", params(("id" = String, Path, description = "Challenge id")),
    security(("bearer" = ["kiosk"]), ("kiosk_session" = ["kiosk"])),
    responses(
        (status = 200, description = "The challenge, cancelled", body = ChallengeView),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`challenge_used`", body = ErrorBody),
        (status = 410, description = "`challenge_expired`, `challenge_failed`, `challenge_cancelled`", body = ErrorBody),
    ))]
async fn cancel_challenge(
    State(st): State<SharedState>,
    caller: Caller,
    session: Option<Extension<PageSession>>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<ChallengeView>> {
    super::access::challenge(service(&st)?, &caller, &session, &id)?;
    Ok(Json(service(&st)?.cancel(&id, &caller.actor()).await?))
}

/// The code the student typed: six digits (spaces anywhere are ignored).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct VerifyBody {
    #[schema(pattern = r"^\s*([0-9]\s*){6}$")]
    code: String,
}

/// Check the typed code.
#[utoipa::path(post, path = "/v1/sms/challenges/{id}/verify", tag = "sms", params(("id" = String, Path, description = "Challenge id")),
    request_body = VerifyBody,
    security(("bearer" = ["kiosk"]), ("kiosk_session" = ["kiosk"])),
    responses(
        (status = 200, description = "The code was right", body = Verified),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`challenge_used`", body = ErrorBody),
        (status = 410, description = "`challenge_expired`, `challenge_failed`, `challenge_cancelled`", body = ErrorBody),
        (status = 422, description = "`wrong_code` (with `attempts_left`)", body = ErrorBody),
        (status = 429, description = "`user_locked`", body = ErrorBody),
    ))]
async fn verify(
    State(st): State<SharedState>,
    caller: Caller,
    session: Option<Extension<PageSession>>,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<VerifyBody>,
) -> ApiResult<Json<Verified>> {
    super::access::challenge(service(&st)?, &caller, &session, &id)?;
    let view = service(&st)?
        .verify(&id, &body.code, &caller.actor())
        .await?;
    Ok(Json(Verified {
        verified: true,
        challenge: view,
    }))
}

/// Send the same code again (after a cooldown, a few times at most).
#[utoipa::path(post, path = "/v1/sms/challenges/{id}/resend", tag = "sms", params(("id" = String, Path, description = "Challenge id")),
    security(("bearer" = ["kiosk"]), ("kiosk_session" = ["kiosk"])),
    responses(
        (status = 200, description = "The challenge, resent", body = ChallengeView),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`challenge_used`", body = ErrorBody),
        (status = 410, description = "`challenge_expired`, `challenge_failed`, `challenge_cancelled`", body = ErrorBody),
        (status = 429, description = "`resend_too_soon`, `resend_limit`, `user_locked`, `rate_limited`, `fraud_suspected` (with `retry_after`)", body = ErrorBody),
        (status = 503, description = "`provider_unavailable`, `budget_exhausted` (with `retry_after`)", body = ErrorBody),
    ))]
async fn resend(
    State(st): State<SharedState>,
    caller: Caller,
    session: Option<Extension<PageSession>>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<ChallengeView>> {
    super::access::challenge(service(&st)?, &caller, &session, &id)?;
    Ok(Json(service(&st)?.resend(&id, &caller.actor()).await?))
}

/// The SMS providers in failover order, with their circuit state and counters.
#[utoipa::path(get, path = "/v1/sms/providers", tag = "sms",
    security(("bearer" = ["admin"])),
    responses(
        (status = 200, description = "The providers", body = ProviderList),
        (status = 404, description = "`not_found`: the SMS factor is not set up", body = ErrorBody),
    ))]
async fn providers(State(st): State<SharedState>) -> ApiResult<Json<ProviderList>> {
    Ok(Json(ProviderList {
        providers: service(&st)?.providers(),
    }))
}

/// The fraud guard (`[sms.fraud]`): the prefixes blocked now (suspected SMS pumping: many
/// messages, few verified codes) and this calendar month's messages against the cap.
#[utoipa::path(get, path = "/v1/sms/fraud", tag = "sms",
    security(("bearer" = ["admin"])),
    responses(
        (status = 200, description = "Blocked prefixes and the month's messages", body = FraudView),
        (status = 404, description = "`not_found`: the SMS factor is not set up", body = ErrorBody),
    ))]
async fn fraud(State(st): State<SharedState>) -> ApiResult<Json<FraudView>> {
    Ok(Json(service(&st)?.fraud_view()?))
}

/// Lift the block on a prefix (audited); its counts start again from zero.
#[utoipa::path(delete, path = "/v1/sms/fraud/blocks/{prefix}", tag = "sms",
    params(("prefix" = String, Path, pattern = "^[0-9]{1,15}$",
        description = "The blocked E.164 prefix: digits, country code included, no `+`")),
    security(("bearer" = ["admin"])),
    responses(
        (status = 204, description = "Lifted"),
        (status = 404, description = "`not_found`: no block in force on that prefix", body = ErrorBody),
    ))]
async fn lift_fraud_block(
    State(st): State<SharedState>,
    caller: Caller,
    ApiPath(prefix): ApiPath<String>,
) -> ApiResult<StatusCode> {
    service(&st)?
        .lift_fraud_block(&prefix, &caller.actor())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Authentication and parsing belong to the provider ([`providers::receipt`]); this route only
/// records what it returns.
/// A provider's delivery report: `twilio` (signed with `X-Twilio-Signature`), `vonage`
/// (signed `sig`) or `webhook` (`X-Keygate-Signature`). No bearer token: the signature
/// authenticates it.
#[utoipa::path(post, path = "/v1/sms/callbacks/{provider}", tag = "sms",
    params(("provider" = String, Path, description = "`twilio`, `vonage` or `webhook`")),
    request_body(description = "The provider's own form or JSON body",
        content((String = "application/x-www-form-urlencoded"), (Object = "application/json"))),
    responses(
        (status = 204, description = "Recorded, or acknowledged without a change"),
        (status = 403, description = "`forbidden`: the signature does not verify", body = ErrorBody),
        (status = 404, description = "`not_found`: no such provider or message", body = ErrorBody),
    ))]
async fn callback(
    State(st): State<SharedState>,
    ApiPath(provider): ApiPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let sms = service(&st)?;
    // `None`: an authentic report that carries no new status (acknowledged, nothing changes).
    let Some(report) = providers::receipt(&st.cfg.sms, &provider, &headers, &body)? else {
        return Ok(StatusCode::NO_CONTENT);
    };
    if sms
        .delivery_report(&provider, &report.message_id, report.status)
        .await?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found())
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct InboxQuery {
    /// The simulated phone's number.
    number: String,
}

/// What the simulated phones received (only with `--simulate`).
#[utoipa::path(get, path = "/v1/sim/sms", tag = "simulator", params(InboxQuery),
    security(("bearer" = ["kiosk"]), ("kiosk_session" = ["kiosk"])),
    responses(
        (status = 200, description = "The messages sent to that number", body = SimInboxBody),
        (status = 404, description = "`not_found`: not simulating", body = ErrorBody),
        (status = 422, description = "`invalid_phone_number`", body = ErrorBody),
    ))]
async fn sim_inbox(
    State(st): State<SharedState>,
    ApiQuery(q): ApiQuery<InboxQuery>,
) -> ApiResult<Json<SimInboxBody>> {
    let sms = service(&st)?;
    let inbox = sms.inbox.as_ref().ok_or_else(ApiError::not_found)?;
    let parsed = sms.parse_number(&q.number).map_err(ApiError::from)?;
    Ok(Json(SimInboxBody {
        messages: inbox.for_number(&parsed.e164),
    }))
}
