-- A refresher run in progress records a sign of life here every few seconds, so a run
-- whose process died (and so never finished its record) can be told from a slow one.
alter table refresh_runs add column heartbeat_at bigint;
