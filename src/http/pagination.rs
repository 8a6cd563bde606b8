//! The contract's "Lists: pagination and filters": `?limit=` (default 100, events and
//! deliveries 50, at most 1000) and `?starting_after=<cursor>`; every list answer keeps
//! its array and `count` (items in this page) and adds `has_more` and `next_cursor`
//! (null on the last page).
//!
//! A cursor is opaque to callers: the base64url of the JSON of the last item's sort key.
//! It names a position, not a permission: every list is still scoped by the caller's
//! rights, so a forged cursor can only move within what the caller may see. One that
//! does not decode to the list's key type is 400.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::ApiError;
use crate::domain::{FieldErrors, Page, PageRequest};

pub const MAX_LIMIT: usize = 1000;
pub const DEFAULT_LIMIT: usize = 100;
/// Events and webhook deliveries: newest first, 50 a page by default.
pub const DEFAULT_HISTORY_LIMIT: usize = 50;

/// `?limit=&starting_after=`, documented once for every list.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PageParams {
    /// Items per page, 1 to 1000 (default 100; 50 for events and deliveries).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    #[param(max_length = 1024)]
    pub starting_after: Option<String>,
}

impl PageParams {
    /// The request these parameters make of a list keyed by `K`, `default` items a page.
    pub fn request<K: DeserializeOwned>(&self, default: usize) -> Result<PageRequest<K>, ApiError> {
        let limit = match self.limit {
            None => default,
            Some(n) if (1..=MAX_LIMIT as i64).contains(&n) => n as usize,
            Some(_) => {
                return Err(FieldErrors::single(
                    "limit",
                    format!("must be between 1 and {MAX_LIMIT}"),
                )
                .into());
            }
        };
        let after = self.starting_after.as_deref().map(decode).transpose()?;
        Ok(PageRequest { limit, after })
    }
}

fn decode<K: DeserializeOwned>(cursor: &str) -> Result<K, ApiError> {
    let refused = || {
        ApiError::BadRequest(
            "starting_after is not a cursor of this list: pass the next_cursor of its previous page"
                .into(),
        )
    };
    if cursor.len() > 1024 {
        return Err(refused());
    }
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| refused())?;
    serde_json::from_slice(&bytes).map_err(|_| refused())
}

/// The opaque cursor of a sort key.
pub fn encode<K: Serialize>(key: &K) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(key).expect("sort keys serialize"))
}

/// What every list answer says about its page.
#[derive(Debug, Serialize, ToSchema)]
pub struct PageInfo {
    /// Items in this page.
    pub count: usize,
    pub has_more: bool,
    /// Pass as `starting_after` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

impl PageInfo {
    /// About `page`, whose items' sort keys `key` gives.
    pub fn of<T, K: Serialize>(page: &Page<T>, key: impl FnOnce(&T) -> K) -> Self {
        Self {
            count: page.items.len(),
            has_more: page.has_more,
            next_cursor: page.next_after(key).map(|k| encode(&k)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_round_trips_and_a_malformed_one_is_refused() {
        let cursor = encode(&("acme".to_owned(), "github".to_owned()));
        let params = PageParams {
            limit: Some(10),
            starting_after: Some(cursor),
        };
        let request = params.request::<(String, String)>(DEFAULT_LIMIT).unwrap();
        assert_eq!(request.after, Some(("acme".into(), "github".into())));
        assert_eq!(request.limit, 10);
        for bad in ["%%%", "bm90IGpzb24", &encode(&42)] {
            let params = PageParams {
                limit: None,
                starting_after: Some(bad.into()),
            };
            assert!(
                matches!(
                    params.request::<(String, String)>(DEFAULT_LIMIT),
                    Err(ApiError::BadRequest(_))
                ),
                "{bad} must be refused"
            );
        }
    }

    #[test]
    fn limits_outside_1_to_1000_are_refused() {
        for limit in [0, -1, 1001] {
            let params = PageParams {
                limit: Some(limit),
                starting_after: None,
            };
            assert!(
                params.request::<i64>(DEFAULT_LIMIT).is_err(),
                "limit {limit}"
            );
        }
    }
}
