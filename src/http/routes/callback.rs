//! `/api/oauth/callback/{name}`: where providers send the browser back (GET query, or
//! POST form for `response_mode=form_post`). Public: the single-use state is the
//! credential. Answers a small HTML page; everything from the provider is escaped.

use actix_web::http::header;
use actix_web::{HttpResponse, get, post, web};
use secrecy::SecretString;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::http::error::ApiError;
use crate::service::Broker;
use crate::service::authorization::{self, CallbackOutcome, CallbackParams};

/// The page's only style, inline. Its hash is in `CALLBACK_CSP`: change both together
/// (a unit test below checks they match).
const CALLBACK_STYLE: &str =
    "body{font-family:system-ui,sans-serif;max-width:40rem;margin:4rem auto;padding:0 1rem}";

/// The strictest policy that still renders the page: no scripts, no loads, no framing,
/// no forms, no `<base>`, and only the one stylesheet above, allowed by its hash rather
/// than `'unsafe-inline'` (CSP Level 3, hash-source), so even markup that slipped past
/// the escaping could not style or restyle the page.
pub const CALLBACK_CSP: &str = "default-src 'none'; \
     style-src 'sha256-A3PT2H/PQtyCSGiDBxujNIRSQNm9st6/StRARd6aZdA='; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CallbackQuery {
    /// The authorization code.
    #[param(value_type = Option<String>)]
    code: Option<SecretString>,
    /// The state issued by `authorize`.
    #[param(value_type = Option<String>)]
    state: Option<SecretString>,
    /// A provider error (RFC 6749 4.1.2.1), e.g. `access_denied`.
    error: Option<String>,
    error_description: Option<String>,
}

impl From<CallbackQuery> for CallbackParams {
    fn from(q: CallbackQuery) -> Self {
        Self {
            code: q.code,
            state: q.state,
            error: q.error,
            error_description: q.error_description,
        }
    }
}

#[utoipa::path(
    get, path = "/api/oauth/callback/{name}", tag = "callback", operation_id = "oauth_callback",
    params(("name" = String, Path, description = "Connection name"), CallbackQuery),
    responses(
        (status = 200, content_type = "text/html", body = String, description = "The connection is ready"),
        (status = 303, description = "Redirect to the `return_to` given at authorize"),
        (status = 400, content_type = "text/html", body = String, description = "Unknown, expired, replayed or mismatched state, or a provider error"),
    )
)]
#[get("/callback/{name}")]
pub async fn callback_get(
    broker: web::Data<Broker>,
    name: web::Path<String>,
    query: web::Query<CallbackQuery>,
) -> Result<HttpResponse, ApiError> {
    let outcome = authorization::callback(&broker, &name, query.into_inner().into()).await?;
    Ok(render(&outcome))
}

#[utoipa::path(
    post, path = "/api/oauth/callback/{name}", tag = "callback", operation_id = "oauth_callback_form_post",
    params(("name" = String, Path, description = "Connection name")),
    request_body(content = String, content_type = "application/x-www-form-urlencoded", description = "code, state, error, error_description"),
    responses(
        (status = 200, content_type = "text/html", body = String, description = "The connection is ready"),
        (status = 303, description = "Redirect to the `return_to` given at authorize"),
        (status = 400, content_type = "text/html", body = String, description = "Unknown, expired, replayed or mismatched state, or a provider error"),
        (status = 415, content_type = "text/plain", body = String, description = "The body is not a form"),
    )
)]
#[post("/callback/{name}")]
pub async fn callback_post(
    broker: web::Data<Broker>,
    name: web::Path<String>,
    form: web::Form<CallbackQuery>,
) -> Result<HttpResponse, ApiError> {
    let outcome = authorization::callback(&broker, &name, form.into_inner().into()).await?;
    Ok(render(&outcome))
}

/// The answer to the browser. Public for the parser fuzz tests only.
#[doc(hidden)]
pub fn render(outcome: &CallbackOutcome) -> HttpResponse {
    if let Some(return_to) = &outcome.return_to
        && let Ok(mut url) = url::Url::parse(return_to)
    {
        url.query_pairs_mut()
            .append_pair("status", if outcome.success { "success" } else { "failed" });
        return HttpResponse::SeeOther()
            .insert_header((header::LOCATION, url.to_string()))
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .finish();
    }
    let (status, title) = if outcome.success {
        (actix_web::http::StatusCode::OK, "Connected")
    } else {
        (
            actix_web::http::StatusCode::BAD_REQUEST,
            "Authorization failed",
        )
    };
    // Quotes are escaped too, not only `&<>`: provider text must not be able to leave
    // an attribute should the markup around it ever put it in one.
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>\
         <style>{CALLBACK_STYLE}</style>\
         </head><body><h1>{title}</h1><p>{}</p></body></html>",
        html_escape::encode_quoted_attribute(&outcome.message)
    );
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header(("Content-Security-Policy", CALLBACK_CSP))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header(("Referrer-Policy", "no-referrer"))
        .body(body)
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use sha2::Digest;

    use super::*;

    #[test]
    fn the_policy_allows_exactly_the_page_s_own_style() {
        let digest = sha2::Sha256::digest(CALLBACK_STYLE.as_bytes());
        let hash = base64::engine::general_purpose::STANDARD.encode(digest);
        let style_src = CALLBACK_CSP
            .split(';')
            .map(str::trim)
            .find_map(|d| d.strip_prefix("style-src "))
            .expect("a style-src directive");
        assert_eq!(style_src, format!("'sha256-{hash}'"));
        assert!(!CALLBACK_CSP.contains("unsafe"), "{CALLBACK_CSP}");
    }
}
