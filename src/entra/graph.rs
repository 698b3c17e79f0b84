//! The Graph operations behind [`EntraClient`]'s methods: URLs under
//! `{graph_url}/users/{upn}/authentication/`, the bearer token (fetched again once on 401),
//! paging through `@odata.nextLink` (same origin only: the token goes nowhere else), and the
//! mapping of Graph's refusals onto [`EntraError`].

use reqwest::Method;
use serde_json::{json, Value};

use super::http::{Answer, CallName, Retry};
use super::parse;
use super::{
    CreationOptions, EntraClient, EntraError, Fido2Method, NewFido2Method, PhoneMethod,
    TemporaryAccessPass,
};

/// Pages of a list followed at most (Graph pages by 100 or more: far beyond any user).
const MAX_PAGES: usize = 50;

const CREATION_OPTIONS: CallName = CallName {
    method: "GET",
    path: "users/{upn}/authentication/fido2Methods/creationOptions",
};
const REGISTER_FIDO2: CallName = CallName {
    method: "POST",
    path: "users/{upn}/authentication/fido2Methods",
};
const LIST_FIDO2: CallName = CallName {
    method: "GET",
    path: "users/{upn}/authentication/fido2Methods",
};
const DELETE_FIDO2: CallName = CallName {
    method: "DELETE",
    path: "users/{upn}/authentication/fido2Methods/{id}",
};
const ADD_PHONE: CallName = CallName {
    method: "POST",
    path: "users/{upn}/authentication/phoneMethods",
};
const LIST_PHONES: CallName = CallName {
    method: "GET",
    path: "users/{upn}/authentication/phoneMethods",
};
const CREATE_TAP: CallName = CallName {
    method: "POST",
    path: "users/{upn}/authentication/temporaryAccessPassMethods",
};

fn b64url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Graph's refusal as an [`EntraError`] (after the 401 retry; 404 on a user-scoped call is the
/// user). Graph's code and message are logged with its request id.
fn refusal(name: CallName, answer: &Answer) -> EntraError {
    let (code, message) = parse::graph_error(&answer.body);
    tracing::warn!(
        target: "keygate::entra",
        method = name.method,
        path = name.path,
        status = answer.status,
        request_id = answer.request_id.as_deref().unwrap_or("-"),
        code = %code,
        message = %message,
        "Graph refused the call"
    );
    let or_status = |m: String| {
        if m.is_empty() {
            format!("HTTP {}", answer.status)
        } else {
            m
        }
    };
    match answer.status {
        401 => EntraError::AuthFailed(format!("Graph: {}", or_status(message))),
        403 => EntraError::Forbidden(or_status(message)),
        404 => EntraError::UserNotFound,
        429 => EntraError::Throttled {
            retry_after_secs: answer.retry_after_secs(),
        },
        400 if name.path == REGISTER_FIDO2.path && parse::is_challenge_expired(&code, &message) => {
            EntraError::ChallengeExpired
        }
        400 | 409 | 422 => EntraError::Rejected(or_status(message)),
        status => EntraError::Unavailable(format!(
            "{} {} answered HTTP {status}",
            name.method, name.path
        )),
    }
}

fn json_body(name: CallName, answer: &Answer) -> Result<Value, EntraError> {
    serde_json::from_str(&answer.body).map_err(|_| {
        EntraError::Unavailable(format!(
            "malformed answer from Graph: {} {} is not JSON",
            name.method, name.path
        ))
    })
}

impl EntraClient {
    /// `{graph_url}/users/{upn}/authentication/{tail...}`, each segment percent-encoded.
    fn user_url(&self, upn: &str, tail: &[&str]) -> url::Url {
        let mut url = self.inner.graph_base.clone();
        if let Ok(mut segs) = url.path_segments_mut() {
            segs.pop_if_empty()
                .extend(["users", upn, "authentication"])
                .extend(tail);
        }
        url
    }

    /// One Graph call with the bearer token; on 401 the token is fetched anew and the call
    /// sent once more (a 401 means Graph did nothing, so this holds for POSTs too).
    async fn call(
        &self,
        name: CallName,
        retry: Retry,
        url: &url::Url,
        body: Option<&Value>,
    ) -> Result<Answer, EntraError> {
        let method = Method::from_bytes(name.method.as_bytes()).unwrap_or(Method::GET);
        let send = |token: crate::config::Secret| {
            let method = method.clone();
            async move {
                self.inner
                    .http
                    .send(name, retry, |c| {
                        let mut req = c
                            .request(method.clone(), url.clone())
                            .bearer_auth(token.expose())
                            .header("accept", "application/json");
                        if let Some(b) = body {
                            req = req.json(b);
                        }
                        req
                    })
                    .await
            }
        };
        let token = self
            .inner
            .tokens
            .token(&self.inner.http, &*self.clock)
            .await?;
        let answer = send(token.clone()).await?;
        if answer.status != 401 {
            return Ok(answer);
        }
        let token = self
            .inner
            .tokens
            .after_rejection(&self.inner.http, &*self.clock, &token)
            .await?;
        send(token).await
    }

    pub(super) async fn do_creation_options(
        &self,
        upn: &str,
    ) -> Result<CreationOptions, EntraError> {
        let url = self.user_url(upn, &["fido2Methods", "creationOptions"]);
        let answer = self
            .call(CREATION_OPTIONS, Retry::Idempotent, &url, None)
            .await?;
        if answer.status != 200 {
            return Err(refusal(CREATION_OPTIONS, &answer));
        }
        parse::creation_options(&json_body(CREATION_OPTIONS, &answer)?)
    }

    pub(super) async fn do_register_fido2(
        &self,
        upn: &str,
        m: &NewFido2Method,
    ) -> Result<Fido2Method, EntraError> {
        let results = match &m.client_extension_results {
            Value::Null => json!({}),
            v => v.clone(),
        };
        let body = json!({
            "displayName": m.display_name,
            "publicKeyCredential": {
                "id": b64url(&m.credential_id),
                "response": {
                    "clientDataJSON": b64url(&m.client_data_json),
                    "attestationObject": b64url(&m.attestation_object),
                },
                "clientExtensionResults": results,
            },
        });
        let url = self.user_url(upn, &["fido2Methods"]);
        let answer = self
            .call(REGISTER_FIDO2, Retry::Never, &url, Some(&body))
            .await?;
        match answer.status {
            200 | 201 => parse::fido2_method(&json_body(REGISTER_FIDO2, &answer)?),
            _ => Err(refusal(REGISTER_FIDO2, &answer)),
        }
    }

    /// Every page of a list, following `@odata.nextLink` on Graph's own origin.
    async fn list_all(&self, name: CallName, first: url::Url) -> Result<Vec<Value>, EntraError> {
        let mut items = Vec::new();
        let mut next = Some(first);
        for _ in 0..MAX_PAGES {
            let Some(url) = next.take() else {
                return Ok(items);
            };
            let answer = self.call(name, Retry::Idempotent, &url, None).await?;
            if answer.status != 200 {
                return Err(refusal(name, &answer));
            }
            let page = json_body(name, &answer)?;
            let Some(value) = page["value"].as_array() else {
                return Err(EntraError::Unavailable(format!(
                    "malformed answer from Graph: {} {} without value",
                    name.method, name.path
                )));
            };
            items.extend(value.iter().cloned());
            if let Some(link) = page["@odata.nextLink"].as_str() {
                let link = url::Url::parse(link)
                    .ok()
                    .filter(|l| l.origin() == self.inner.graph_base.origin())
                    .ok_or_else(|| {
                        EntraError::Unavailable(
                            "Graph's @odata.nextLink points outside Graph".into(),
                        )
                    })?;
                next = Some(link);
            }
        }
        Err(EntraError::Unavailable(format!(
            "{} {}: more than {MAX_PAGES} pages",
            name.method, name.path
        )))
    }

    pub(super) async fn do_list_fido2(&self, upn: &str) -> Result<Vec<Fido2Method>, EntraError> {
        let first = self.user_url(upn, &["fido2Methods"]);
        self.list_all(LIST_FIDO2, first)
            .await?
            .iter()
            .map(parse::fido2_method)
            .collect()
    }

    pub(super) async fn do_delete_fido2(&self, upn: &str, id: &str) -> Result<(), EntraError> {
        let url = self.user_url(upn, &["fido2Methods", id]);
        let answer = self
            .call(DELETE_FIDO2, Retry::Idempotent, &url, None)
            .await?;
        match answer.status {
            200 | 204 => Ok(()),
            // The method is gone (or never was): what the caller wanted.
            404 => Ok(()),
            _ => Err(refusal(DELETE_FIDO2, &answer)),
        }
    }

    async fn list_phones(&self, upn: &str) -> Result<Vec<PhoneMethod>, EntraError> {
        let first = self.user_url(upn, &["phoneMethods"]);
        self.list_all(LIST_PHONES, first)
            .await?
            .iter()
            .map(parse::phone_method)
            .collect()
    }

    pub(super) async fn do_add_mobile_phone(
        &self,
        upn: &str,
        e164: &str,
    ) -> Result<PhoneMethod, EntraError> {
        let number = parse::entra_phone_number(e164)
            .ok_or_else(|| EntraError::Rejected("the phone number is not in E.164 form".into()))?;
        let body = json!({"phoneNumber": number, "phoneType": "mobile"});
        let url = self.user_url(upn, &["phoneMethods"]);
        let answer = self
            .call(ADD_PHONE, Retry::Never, &url, Some(&body))
            .await?;
        match answer.status {
            200 | 201 => parse::phone_method(&json_body(ADD_PHONE, &answer)?),
            // A user has at most one mobile method: when it is this number, that is success.
            400 | 409 => {
                let wanted = parse::phone_digits(e164);
                let existing = self.list_phones(upn).await?;
                match existing.into_iter().find(|p| p.phone_type == "mobile") {
                    Some(p) if parse::phone_digits(&p.phone_number) == wanted => Ok(p),
                    Some(_) => Err(EntraError::Rejected(
                        "the user already has another mobile phone in Microsoft Entra ID".into(),
                    )),
                    None => Err(refusal(ADD_PHONE, &answer)),
                }
            }
            _ => Err(refusal(ADD_PHONE, &answer)),
        }
    }

    pub(super) async fn do_create_temporary_access_pass(
        &self,
        upn: &str,
        lifetime_minutes: u32,
        usable_once: bool,
    ) -> Result<TemporaryAccessPass, EntraError> {
        let body = json!({"lifetimeInMinutes": lifetime_minutes, "isUsableOnce": usable_once});
        let url = self.user_url(upn, &["temporaryAccessPassMethods"]);
        let answer = self
            .call(CREATE_TAP, Retry::Never, &url, Some(&body))
            .await?;
        match answer.status {
            200 | 201 => parse::temporary_access_pass(&json_body(CREATE_TAP, &answer)?),
            _ => Err(refusal(CREATE_TAP, &answer)),
        }
    }
}
