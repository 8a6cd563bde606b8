-- Scale (issue 20): what the refresher's batch claim and the history purge read.
-- Due connections are claimed in id order among completed ones expiring soon.
create index connections_claim on connections (status, token_expires_at, id);
-- Events are purged oldest first.
create index events_at on events (at);
-- Finished runs are purged by their end.
create index refresh_runs_finished on refresh_runs (finished_at);
