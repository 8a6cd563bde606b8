//! Request extractors with the contract's errors: JSON bodies (400 malformed, 422 wrong
//! shape with the field named, 413 over 64 KiB), query strings (422), connection names
//! in paths (422), and the documentation of the org header.

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, web};
use futures::StreamExt;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use utoipa::IntoParams;
use validator::Validate;

use crate::config::BODY_LIMIT_BYTES;
use crate::domain::ConnectionName;
use crate::domain::FieldErrors;
use crate::http::error::ApiError;

/// A JSON body, parsed and then checked with `validator`.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned + Validate + 'static> FromRequest for JsonBody<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let content_type_ok = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                let mime = v
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase();
                mime == "application/json" || mime.ends_with("+json")
            })
            .unwrap_or(false);
        let declared_len = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        let mut payload = payload.take();
        Box::pin(async move {
            if declared_len.is_some_and(|n| n > BODY_LIMIT_BYTES) {
                return Err(ApiError::PayloadTooLarge);
            }
            let mut body = web::BytesMut::new();
            while let Some(chunk) = payload.next().await {
                let chunk =
                    chunk.map_err(|e| ApiError::BadRequest(format!("unreadable body: {e}")))?;
                if body.len() + chunk.len() > BODY_LIMIT_BYTES {
                    return Err(ApiError::PayloadTooLarge);
                }
                body.extend_from_slice(&chunk);
            }
            // An absent body on a route whose fields are all optional reads as `{}`.
            if body.is_empty() {
                body.extend_from_slice(b"{}");
            } else if !content_type_ok {
                return Err(ApiError::BadRequest(
                    "the body must be JSON with Content-Type: application/json".into(),
                ));
            }
            let value = parse_json::<T>(&body)?;
            value
                .validate()
                .map_err(|e| ApiError::Validation(FieldErrors::from(e)))?;
            Ok(JsonBody(value))
        })
    }
}

/// Malformed JSON is 400; JSON of the wrong shape is 422 naming the field, and so is a
/// string holding a control character (a NUL that PostgreSQL refuses, a newline that
/// forges a log line): refused the same way on both databases, before anything is done.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    // First as untyped JSON, so syntax errors and shape errors are told apart.
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("malformed JSON: {e}")))?;
    if let Some(field) = control_character_in(&value, "") {
        return Err(FieldErrors::single(field, "must not contain control characters").into());
    }
    serde_path_to_error::deserialize::<_, T>(value).map_err(|e| {
        let path = e.path().to_string();
        let message = e.into_inner().to_string();
        FieldErrors::single(error_field(&path, &message, "body"), message).into()
    })
}

/// The path of the first string in `value` (keys included) holding a control character.
fn control_character_in(value: &serde_json::Value, path: &str) -> Option<String> {
    use serde_json::Value;
    let has_control = |s: &str| s.chars().any(char::is_control);
    let child = |key: &str| {
        if path.is_empty() {
            key.to_owned()
        } else {
            format!("{path}.{key}")
        }
    };
    match value {
        Value::String(s) if has_control(s) => Some(if path.is_empty() {
            "body".to_owned()
        } else {
            path.to_owned()
        }),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| control_character_in(item, &format!("{path}[{i}]"))),
        Value::Object(fields) => fields.iter().find_map(|(key, item)| {
            if has_control(key) {
                // Named by its place, not by itself: the key is what is wrong.
                Some(if path.is_empty() {
                    "body".to_owned()
                } else {
                    path.to_owned()
                })
            } else {
                control_character_in(item, &child(key))
            }
        }),
        _ => None,
    }
}

/// The field a deserialization error belongs to. serde reports a missing field at the
/// object that lacks it, so the field is read from the message (`missing field `x``):
/// a caller then sees `errors.token_url`, not `errors.body`.
fn error_field(path: &str, message: &str, root: &str) -> String {
    let parent = (path != "." && !path.is_empty()).then_some(path);
    let missing = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split_once('`'))
        .map(|(name, _)| name);
    match (parent, missing) {
        (Some(parent), Some(name)) => format!("{parent}.{name}"),
        (None, Some(name)) => name.to_owned(),
        (Some(parent), None) => parent.to_owned(),
        (None, None) => root.to_owned(),
    }
}

/// A query string; a value of the wrong type is 422 naming the parameter.
pub struct QueryParams<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for QueryParams<T> {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let query = req.query_string();
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        let result = serde_path_to_error::deserialize::<_, T>(de)
            .map(QueryParams)
            .map_err(|e| {
                let path = e.path().to_string();
                let message = e.into_inner().to_string();
                FieldErrors::single(error_field(&path, &message, "query"), message).into()
            });
        std::future::ready(result)
    }
}

/// The organization header, documented once for every org-scoped route.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Header)]
pub struct OrgHeader {
    /// The org to act in; absent means `GLOBAL`. Pattern `^[A-Za-z0-9_.-]{1,64}$`.
    #[serde(rename = "X-Organization-Id")]
    #[param(rename = "X-Organization-Id", pattern = r"^[A-Za-z0-9_.-]{1,64}$")]
    pub x_organization_id: Option<String>,
}

/// A connection name from a path.
pub fn parse_name(raw: &str) -> Result<ConnectionName, ApiError> {
    ConnectionName::parse(raw).map_err(|e| FieldErrors::single("name", e.0).into())
}
