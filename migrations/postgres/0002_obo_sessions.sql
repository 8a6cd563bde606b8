-- Long-running on-behalf-of sessions: a user's delegated grant kept alive for hours or
-- days after their own token expired. Bound to the org and the key that created it.
create table obo_sessions (
    id                    text primary key not null,
    org_id                text not null,
    connection_id         text not null references connections (id) on delete cascade,
    connection_name       text not null,
    label                 text,
    created_by            text not null,        -- key name
    created_by_key_id     text not null,
    scopes                text not null,        -- JSON array
    refresh_token_sealed  text,
    access_token_sealed   text,
    token_type            text,
    token_expires_at      bigint,
    status                text not null,        -- active, failed
    status_message        text,
    created_at            bigint not null,
    expires_at            bigint not null,      -- the session's maximum lifetime
    revoked_at            bigint,
    last_used_at          bigint,
    lease_owner           text,
    lease_until           bigint,
    version               bigint not null default 1
);
create index obo_sessions_by_connection on obo_sessions (org_id, connection_name);
create index obo_sessions_due on obo_sessions (token_expires_at);
