-- 0002: TimescaleDB storage. Runs only on a database whose storage is
-- 'timescaledb' (collector/migrate.py decides at the first migration: the
-- extension is installed, or CREATE EXTENSION timescaledb succeeds). There 0001
-- created the record tables as plain tables -- create_hypertable() refuses
-- declaratively partitioned or inherited tables -- and this migration turns
-- them into hypertables. On plain PostgreSQL it is recorded as skipped and
-- 0001's monthly partitions serve. Written for TimescaleDB 2.11 or later
-- (INSERT ... ON CONFLICT DO NOTHING into compressed chunks); the test suite
-- cannot run it (TimescaleDB is not packaged for Debian): see docs/collector.md.
-- The whole file runs in one transaction (nothing here needs to run outside one:
-- the continuous aggregate is created WITH NO DATA).
CREATE EXTENSION IF NOT EXISTS timescaledb;

-- Hypertables on ts. No default (ts DESC) btree: 0001's BRIN on ts and the
-- (device_id, ts) and key indexes are what the queries and the dedupe use. The
-- unique key (device_id, boot, seq, ts) contains the partitioning column, as
-- TimescaleDB requires of unique indexes.
SELECT create_hypertable('readings', 'ts', chunk_time_interval => INTERVAL '1 day',
                         create_default_indexes => FALSE, if_not_exists => TRUE, migrate_data => TRUE);
SELECT create_hypertable('fixes', 'ts', chunk_time_interval => INTERVAL '7 days',
                         create_default_indexes => FALSE, if_not_exists => TRUE, migrate_data => TRUE);
SELECT create_hypertable('feature_windows', 'ts', chunk_time_interval => INTERVAL '7 days',
                         create_default_indexes => FALSE, if_not_exists => TRUE, migrate_data => TRUE);
SELECT create_hypertable('waveforms', 'ts', chunk_time_interval => INTERVAL '1 day',
                         create_default_indexes => FALSE, if_not_exists => TRUE, migrate_data => TRUE);
SELECT create_hypertable('device_logs', 'ts', chunk_time_interval => INTERVAL '7 days',
                         create_default_indexes => FALSE, if_not_exists => TRUE, migrate_data => TRUE);

-- Compression (columnstore) of older chunks. Every column of the unique key is in
-- segmentby or orderby, so TimescaleDB can check a late record against a
-- compressed chunk by decompressing only that device's batches. Compress only
-- after devices have stopped resending: a device offline longer than
-- compress_after replays into compressed chunks, which works but is slow.
ALTER TABLE readings SET (timescaledb.compress, timescaledb.compress_segmentby = 'device_id, name',
                          timescaledb.compress_orderby = 'ts, boot, seq');
ALTER TABLE feature_windows SET (timescaledb.compress, timescaledb.compress_segmentby = 'device_id',
                                 timescaledb.compress_orderby = 'ts, boot, seq');
ALTER TABLE waveforms SET (timescaledb.compress, timescaledb.compress_segmentby = 'device_id',
                           timescaledb.compress_orderby = 'ts, boot, seq');
SELECT add_compression_policy('readings', compress_after => INTERVAL '7 days', if_not_exists => TRUE);
SELECT add_compression_policy('feature_windows', compress_after => INTERVAL '7 days', if_not_exists => TRUE);
SELECT add_compression_policy('waveforms', compress_after => INTERVAL '3 days', if_not_exists => TRUE);

-- Retention: raw readings 400 days, waveform blocks and device logs 90 days.
-- Feature windows (and so the per-minute aggregate) are kept.
SELECT add_retention_policy('readings', drop_after => INTERVAL '400 days', if_not_exists => TRUE);
SELECT add_retention_policy('waveforms', drop_after => INTERVAL '90 days', if_not_exists => TRUE);
SELECT add_retention_policy('device_logs', drop_after => INTERVAL '90 days', if_not_exists => TRUE);

-- Per-minute vibration statistics per device: a continuous aggregate with the
-- same name and columns as 0001's plain view, so the same queries work on both.
-- time_bucket('1 minute', ts) equals date_trunc('minute', ts). Real-time
-- aggregation (materialized_only = false) adds the not yet materialized minutes,
-- as the plain view would. start_offset NULL: the policy refreshes every bucket
-- invalidated since its last run, however old -- feature windows may arrive days
-- late from a device that was offline, and a bounded window would leave those
-- minutes stale for good.
DROP VIEW IF EXISTS vibration_1m;
CREATE MATERIALIZED VIEW vibration_1m WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT device_id, time_bucket(INTERVAL '1 minute', ts) AS bucket, count(*) AS windows,
       avg(x_rms) AS x_rms, avg(y_rms) AS y_rms, avg(z_rms) AS z_rms,
       max(x_peak) AS x_peak, max(y_peak) AS y_peak, max(z_peak) AS z_peak
  FROM feature_windows
 GROUP BY device_id, time_bucket(INTERVAL '1 minute', ts)
  WITH NO DATA;
SELECT add_continuous_aggregate_policy('vibration_1m', start_offset => NULL, end_offset => INTERVAL '1 minute',
                                       schedule_interval => INTERVAL '1 minute', if_not_exists => TRUE);
