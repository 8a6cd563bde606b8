-- The foundation schema. Times are epoch milliseconds; `*_sealed` columns hold ciphertexts.

create table meta (
    key   text primary key not null,
    value text not null
);

create table connections (
    id                          text primary key not null,
    org_id                      text not null,
    name                        text not null,
    flow_type                   text not null,
    client_id                   text not null,
    client_secret_sealed        text,
    authorization_url           text,
    token_url                   text not null,
    scopes                      text not null default '[]',       -- JSON array
    token_auth_method           text not null,
    extra_authorization_params  text not null default '{}',       -- JSON object
    extra_token_params          text not null default '{}',       -- JSON object
    test_url                    text,
    obo_config                  text,                             -- JSON object
    status                      text not null,
    status_message              text,
    access_token_sealed         text,
    refresh_token_sealed        text,
    token_type                  text,
    token_expires_at            bigint,
    token_scopes                text,                             -- JSON array granted
    last_refresh_at             bigint,
    last_test_at                bigint,
    refresh_failures            bigint not null default 0,
    next_refresh_attempt_at     bigint,                           -- cooldown after a transient failure
    lease_owner                 text,                             -- replica refreshing it now
    lease_until                 bigint,
    created_at                  bigint not null,
    created_by                  text not null,
    updated_at                  bigint not null,
    version                     bigint not null default 1,       -- optimistic concurrency
    unique (org_id, name)
);
create index connections_due on connections (token_expires_at);

create table pending_authorizations (
    state_hash             text primary key not null,            -- SHA-256 of the state; the state itself is never stored
    org_id                 text not null,
    connection_id          text not null references connections (id) on delete cascade,
    pkce_verifier_sealed   text not null,
    redirect_uri           text not null,
    return_to              text,
    created_at             bigint not null,
    expires_at             bigint not null
);
create index pending_authorizations_expiry on pending_authorizations (expires_at);

create table api_keys (
    id           text primary key not null,
    name         text not null unique,
    role         text not null,
    org_scope    text not null,
    key_hash     text not null unique,                           -- SHA-256 of the key; the key is never stored
    key_prefix   text not null,                                  -- first characters, to recognise a key
    created_at   bigint not null,
    created_by   text not null,
    revoked_at   bigint
);

create table events (
    id               bigint generated always as identity primary key,
    org_id           text not null,
    connection_id    text not null,
    connection_name  text not null,
    at               bigint not null,
    kind             text not null,
    actor            text not null,
    detail           text
);
create index events_by_connection on events (connection_id, id);

create table workflow_dependencies (
    workflow_id       text not null,
    org_id            text not null,
    connection_name   text not null,
    workflow_name     text,
    registered_at     bigint not null,
    last_accessed_at  bigint,
    primary key (workflow_id, org_id, connection_name)
);
create index workflow_dependencies_by_connection on workflow_dependencies (org_id, connection_name);

create table disabled_workflows (
    workflow_id               text not null,
    org_id                    text not null,
    disabled_reason           text not null,
    disabled_at               bigint not null,
    related_oauth_connection  text,
    primary key (workflow_id, org_id)
);

create table refresh_runs (
    id          text primary key not null,
    trigger     text not null,
    owner       text not null,
    started_at  bigint not null,
    finished_at bigint,
    considered  bigint not null default 0,
    refreshed   bigint not null default 0,
    failed      bigint not null default 0,
    skipped     bigint not null default 0,
    errors      text not null default '[]'                      -- JSON array
);
create index refresh_runs_started on refresh_runs (started_at);
