//! Closed sets of values: flow types, statuses, roles, event kinds.

use std::fmt;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

macro_rules! string_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            /// Parses the stored or wire form.
            pub fn parse(value: &str) -> Option<Self> {
                match value { $($text => Some($name::$variant),)+ _ => None }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

string_enum!(
    /// How the connection obtains tokens.
    FlowType {
        AuthorizationCode = "authorization_code",
        ClientCredentials = "client_credentials",
        RefreshToken = "refresh_token",
        OnBehalfOf = "on_behalf_of",
    }
);

string_enum!(
    /// How the client authenticates at the token endpoint (RFC 6749 2.3.1).
    TokenAuthMethod {
        ClientSecretBasic = "client_secret_basic",
        ClientSecretPost = "client_secret_post",
    }
);

string_enum!(
    /// Which on-behalf-of exchange an `on_behalf_of` connection performs.
    OboGrant {
        JwtBearer = "jwt_bearer",
        TokenExchange = "token_exchange",
    }
);

string_enum!(
    /// Where a connection stands.
    ConnectionStatus {
        NotConnected = "not_connected",
        WaitingCallback = "waiting_callback",
        Testing = "testing",
        Completed = "completed",
        Failed = "failed",
    }
);

string_enum!(
    /// What an API key may do.
    Role {
        Admin = "admin",
        Workflow = "workflow",
    }
);

string_enum!(
    /// What an event records.
    EventKind {
        Created = "created",
        Updated = "updated",
        Deleted = "deleted",
        AuthorizeStarted = "authorize_started",
        CallbackSucceeded = "callback_succeeded",
        CallbackFailed = "callback_failed",
        TokenAcquired = "token_acquired",
        Refreshed = "refreshed",
        RefreshFailed = "refresh_failed",
        Tested = "tested",
        CredentialsRead = "credentials_read",
        StatusChanged = "status_changed",
    }
);

impl FlowType {
    /// Whether the refresher keeps this flow's tokens alive.
    pub fn is_refreshable(self) -> bool {
        !matches!(self, FlowType::OnBehalfOf)
    }
}
