-- Scale (issue 20): what the refresher's batch claim and the history purge read.
-- Due connections are claimed in id order among completed ones expiring soon.
create index connections_claim on connections (status, token_expires_at, id);
-- Events are purged oldest first.
create index events_at on events (at);
-- Finished runs are purged by their end.
create index refresh_runs_finished on refresh_runs (finished_at);
-- Keyset pages: each list reads a range of one index in its order.
-- Connections by status (`?status=failed` at a million rows reads only failed ones).
create index connections_by_status on connections (org_id, status, name);
create index obo_sessions_page on obo_sessions (org_id, id);
create index disabled_workflows_page on disabled_workflows (org_id, workflow_id);
-- A run releases its replica's claims after each batch: only leased rows are indexed.
create index connections_leased on connections (lease_owner) where lease_owner is not null;
