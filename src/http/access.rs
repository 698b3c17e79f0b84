//! Who may see what: a ceremony or an SMS challenge belongs to the caller that made it. Any
//! other caller gets `404 not_found` (as if the id did not exist, so ids leak nothing); an
//! admin token sees all. A kiosk page session sees its own only while it is bound to the
//! same student (a session handed to the next student cannot read, verify, resend, cancel,
//! follow or answer the previous one's).

use axum::Extension;

use super::error::{ApiError, ApiResult};
use super::kiosk::PageSession;
use super::AppState;
use crate::auth::{Caller, Role};
use crate::ceremony::Kind;

/// The rule itself; `created_by` is None for rows made before owners were recorded.
pub fn may_see(
    caller: &Caller,
    session: Option<&PageSession>,
    created_by: Option<&str>,
    user: Option<&str>,
) -> bool {
    if caller.role == Role::Admin {
        return true;
    }
    if created_by != Some(caller.actor().as_str()) {
        return false;
    }
    match session {
        Some(s) => user.is_none() || s.bound_user.as_deref() == user,
        None => true,
    }
}

/// `not_found` unless the caller may see ceremony `id`.
pub fn ceremony(
    st: &AppState,
    caller: &Caller,
    session: &Option<Extension<PageSession>>,
    id: &str,
    kind: Kind,
) -> ApiResult<()> {
    let (created_by, user) = st.ceremonies.owner(id, kind)?;
    let session = session.as_ref().map(|Extension(s)| s);
    if may_see(caller, session, created_by.as_deref(), user.as_deref()) {
        Ok(())
    } else {
        Err(ApiError::not_found())
    }
}

/// `not_found` unless the caller may see SMS challenge `id`.
pub fn challenge(
    sms: &crate::sms::SmsService,
    caller: &Caller,
    session: &Option<Extension<PageSession>>,
    id: &str,
) -> ApiResult<()> {
    let (created_by, user) = sms.challenge_owner(id)?;
    let session = session.as_ref().map(|Extension(s)| s);
    if may_see(caller, session, created_by.as_deref(), Some(&user)) {
        Ok(())
    } else {
        Err(ApiError::not_found())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(id: &str, role: Role, page_session: bool) -> Caller {
        Caller {
            token_id: id.into(),
            role,
            page_session,
        }
    }

    #[test]
    fn owners_see_their_own_and_admins_see_all() {
        let a = caller("a", Role::Kiosk, false);
        let b = caller("b", Role::Kiosk, false);
        let admin = caller("z", Role::Admin, false);
        assert!(may_see(&a, None, Some("token:a"), Some("r1")));
        assert!(!may_see(&b, None, Some("token:a"), Some("r1")));
        assert!(
            !may_see(&a, None, None, Some("r1")),
            "unowned old rows: admins only"
        );
        assert!(may_see(&admin, None, Some("token:a"), Some("r1")));
        assert!(may_see(&admin, None, None, None));
        let page = caller("p", Role::Kiosk, true);
        let bound = |u: Option<&str>| PageSession {
            token_id: "p".into(),
            bound_user: u.map(str::to_string),
        };
        assert!(may_see(
            &page,
            Some(&bound(Some("r1"))),
            Some("token:p"),
            Some("r1")
        ));
        assert!(!may_see(
            &page,
            Some(&bound(Some("r2"))),
            Some("token:p"),
            Some("r1")
        ));
        assert!(!may_see(
            &page,
            Some(&bound(None)),
            Some("token:p"),
            Some("r1")
        ));
        assert!(may_see(&page, Some(&bound(None)), Some("token:p"), None));
    }
}
