//! `/api/oauth/callback/{name}`: where providers send the browser back (GET query, or
//! POST form for `response_mode=form_post`). Public: the single-use state is the
//! credential. Answers a small HTML page; everything from the provider is escaped.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, get, post, web};
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
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    answer(&broker, &name, req.query_string().as_bytes()).await
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
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let is_form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';').next().is_some_and(|mime| {
                mime.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            })
        });
    if body.len() > crate::config::BODY_LIMIT_BYTES {
        return Err(ApiError::PayloadTooLarge);
    }
    if !is_form {
        return Ok(HttpResponse::UnsupportedMediaType()
            .content_type("text/plain; charset=utf-8")
            .body("the callback takes a form (application/x-www-form-urlencoded)"));
    }
    answer(&broker, &name, &body).await
}

/// The fields of the callback (RFC 6749 4.1.2, 4.1.2.1), each at most once: a
/// parameter given twice is refused with the page, as any other bad callback, rather
/// than one of its values being picked.
fn parse_params(raw: &[u8]) -> Result<CallbackParams, String> {
    let mut params = CallbackParams::default();
    for (key, value) in form_urlencoded::parse(raw) {
        let slot_taken = match key.as_ref() {
            "code" => params
                .code
                .replace(SecretString::from(value.into_owned()))
                .is_some(),
            "state" => params
                .state
                .replace(SecretString::from(value.into_owned()))
                .is_some(),
            "error" => params.error.replace(value.into_owned()).is_some(),
            "error_description" => params
                .error_description
                .replace(value.into_owned())
                .is_some(),
            _ => false,
        };
        if slot_taken {
            return Err(format!(
                "The callback carried `{}` more than once.",
                crate::oauth::sanitize(&key)
            ));
        }
    }
    Ok(params)
}

async fn answer(
    broker: &web::Data<Broker>,
    name: &str,
    raw: &[u8],
) -> Result<HttpResponse, ApiError> {
    let outcome = match parse_params(raw) {
        Ok(params) => authorization::callback(broker, name, params).await?,
        Err(message) => CallbackOutcome {
            success: false,
            message,
            return_to: None,
        },
    };
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
