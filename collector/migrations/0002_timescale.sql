-- 0002: TimescaleDB features. Applied only where the timescaledb extension is
-- available (collector/migrate.py checks pg_available_extensions); on plain
-- PostgreSQL this migration is recorded as skipped and 0001's partitioning serves.
-- The queries the collector and status page run are the same on both.
CREATE EXTENSION IF NOT EXISTS timescaledb;

SELECT create_hypertable('readings', 'ts', chunk_time_interval => INTERVAL '1 day', if_not_exists => TRUE, migrate_data => TRUE);
SELECT create_hypertable('fixes', 'ts', chunk_time_interval => INTERVAL '7 days', if_not_exists => TRUE, migrate_data => TRUE);
SELECT create_hypertable('feature_windows', 'ts', chunk_time_interval => INTERVAL '7 days', if_not_exists => TRUE, migrate_data => TRUE);
SELECT create_hypertable('waveforms', 'ts', chunk_time_interval => INTERVAL '1 day', if_not_exists => TRUE, migrate_data => TRUE);
SELECT create_hypertable('device_logs', 'ts', chunk_time_interval => INTERVAL '7 days', if_not_exists => TRUE, migrate_data => TRUE);

ALTER TABLE readings SET (timescaledb.compress, timescaledb.compress_segmentby = 'device_id, name',
                          timescaledb.compress_orderby = 'ts, boot, seq');
ALTER TABLE feature_windows SET (timescaledb.compress, timescaledb.compress_segmentby = 'device_id',
                                 timescaledb.compress_orderby = 'ts, boot, seq');
ALTER TABLE waveforms SET (timescaledb.compress, timescaledb.compress_segmentby = 'device_id',
                           timescaledb.compress_orderby = 'ts, boot, seq');
SELECT add_compression_policy('readings', INTERVAL '7 days', if_not_exists => TRUE);
SELECT add_compression_policy('feature_windows', INTERVAL '7 days', if_not_exists => TRUE);
SELECT add_compression_policy('waveforms', INTERVAL '3 days', if_not_exists => TRUE);

SELECT add_retention_policy('readings', INTERVAL '400 days', if_not_exists => TRUE);
SELECT add_retention_policy('waveforms', INTERVAL '90 days', if_not_exists => TRUE);
SELECT add_retention_policy('device_logs', INTERVAL '90 days', if_not_exists => TRUE);

-- Continuous aggregate with the same name and columns as 0001's plain view.
DROP VIEW IF EXISTS vibration_1m;
CREATE MATERIALIZED VIEW IF NOT EXISTS vibration_1m WITH (timescaledb.continuous) AS
SELECT device_id, time_bucket(INTERVAL '1 minute', ts) AS bucket, count(*) AS windows,
       avg(x_rms) AS x_rms, avg(y_rms) AS y_rms, avg(z_rms) AS z_rms,
       max(x_peak) AS x_peak, max(y_peak) AS y_peak, max(z_peak) AS z_peak
  FROM feature_windows
 GROUP BY device_id, time_bucket(INTERVAL '1 minute', ts)
  WITH NO DATA;
ALTER MATERIALIZED VIEW vibration_1m SET (timescaledb.materialized_only = false);
SELECT add_continuous_aggregate_policy('vibration_1m', start_offset => INTERVAL '2 hours',
       end_offset => INTERVAL '1 minute', schedule_interval => INTERVAL '1 minute', if_not_exists => TRUE);
