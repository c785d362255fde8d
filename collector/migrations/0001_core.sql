-- 0001: core schema of Fieldwatch (plain PostgreSQL 13+; TimescaleDB adds to it in 0002).
--
-- Every device record (reading, fix, feature window, waveform block, log line,
-- command result) carries its key (device_id, boot, seq); the unique index on
-- (device_id, boot, seq, ts) is what makes redeliveries and replays land once.
-- ts is part of that index because PostgreSQL (and TimescaleDB) require the
-- partitioning column in every unique index; a record's ts is fixed on the
-- device when the record is made, so a resend carries the same ts.
--
-- {{PARTITIONED}} is filled in by collector/migrate.py from the database's storage: `partitioned`
-- gives `PARTITION BY RANGE (ts)` (monthly partitions made ahead by collector/partitions.py,
-- a DEFAULT partition for anything older); `timescaledb` gives nothing (plain tables: TimescaleDB
-- cannot make hypertables of partitioned ones), and 0002 turns
-- the tables into hypertables.

CREATE TABLE IF NOT EXISTS devices (
    device_id      text PRIMARY KEY,
    hw             text,
    fw             text,
    state          text NOT NULL DEFAULT 'unknown',   -- online / offline / sleeping / unknown
    reset_reason   text,
    boot           bigint,                            -- boot counter of the last status
    next_seq       bigint,                            -- the device's sequence position at that status
    buf_depth      bigint,
    buf_oldest_s   double precision,
    buf_drops      bigint,
    health         jsonb NOT NULL DEFAULT '{}',
    first_seen     timestamptz NOT NULL DEFAULT now(),
    last_seen      timestamptz NOT NULL DEFAULT now(),
    status_at      timestamptz,                       -- receipt time of the last status applied
    clock_skew_ms  bigint                             -- receipt time minus device time, last message
);

-- Estimated wall-clock time of each boot, for records stamped before the clock was
-- set (tq = 'none': ts is ms since boot). Fixed at first sight so resends map alike.
CREATE TABLE IF NOT EXISTS device_boots (
    device_id   text NOT NULL,
    boot        bigint NOT NULL,
    epoch_est   timestamptz NOT NULL,
    first_seen  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (device_id, boot)
);

CREATE TABLE IF NOT EXISTS readings (
    device_id  text NOT NULL,
    boot       bigint NOT NULL,
    seq        bigint NOT NULL,
    ts         timestamptz NOT NULL,           -- device time (estimated from boot time when tq = 'none')
    recv_ts    timestamptz NOT NULL,           -- when the collector received it
    tq         text NOT NULL,                  -- time quality: gps / ntp / rtc / none
    name       text NOT NULL,
    value      double precision NOT NULL
) {{PARTITIONED}};
CREATE UNIQUE INDEX IF NOT EXISTS readings_key ON readings (device_id, boot, seq, ts);
CREATE INDEX IF NOT EXISTS readings_device_ts ON readings (device_id, ts);
CREATE INDEX IF NOT EXISTS readings_ts_brin ON readings USING brin (ts);

CREATE TABLE IF NOT EXISTS fixes (
    device_id  text NOT NULL,
    boot       bigint NOT NULL,
    seq        bigint NOT NULL,
    ts         timestamptz NOT NULL,
    recv_ts    timestamptz NOT NULL,
    tq         text NOT NULL,
    mode       smallint NOT NULL,              -- 2 = 2D, 3 = 3D
    lat        double precision NOT NULL,      -- degrees
    lon        double precision NOT NULL,      -- degrees
    alt_m      double precision,               -- above mean sea level
    speed_mps  double precision,
    track_deg  double precision,
    eph_m      double precision,
    epv_m      double precision,
    sats       smallint
) {{PARTITIONED}};
CREATE UNIQUE INDEX IF NOT EXISTS fixes_key ON fixes (device_id, boot, seq, ts);
CREATE INDEX IF NOT EXISTS fixes_device_ts ON fixes (device_id, ts);

CREATE TABLE IF NOT EXISTS feature_windows (
    device_id  text NOT NULL,
    boot       bigint NOT NULL,
    seq        bigint NOT NULL,
    ts         timestamptz NOT NULL,           -- start of the window
    recv_ts    timestamptz NOT NULL,
    tq         text NOT NULL,
    len_ms     integer NOT NULL,
    rate_hz    double precision NOT NULL,
    n          integer NOT NULL,
    x_rms double precision, x_peak double precision, x_crest double precision, x_dom_hz double precision,
    y_rms double precision, y_peak double precision, y_crest double precision, y_dom_hz double precision,
    z_rms double precision, z_peak double precision, z_crest double precision, z_dom_hz double precision,
    band_hz    double precision[],             -- band edges, Hz
    x_bands    double precision[],             -- mean-square acceleration per band, g^2
    y_bands    double precision[],
    z_bands    double precision[]
) {{PARTITIONED}};
CREATE UNIQUE INDEX IF NOT EXISTS feature_windows_key ON feature_windows (device_id, boot, seq, ts);
CREATE INDEX IF NOT EXISTS feature_windows_device_ts ON feature_windows (device_id, ts);

-- Accelerometer waveform blocks, one row per block: samples are the raw int16
-- little-endian counts, interleaved x y z; multiply by scale_g for g.
CREATE TABLE IF NOT EXISTS waveforms (
    device_id  text NOT NULL,
    boot       bigint NOT NULL,
    seq        bigint NOT NULL,
    ts         timestamptz NOT NULL,           -- time of sample 0
    recv_ts    timestamptz NOT NULL,
    tq         text NOT NULL,
    rate_hz    double precision NOT NULL,
    scale_g    double precision NOT NULL,      -- g per count
    range_g    smallint NOT NULL,
    n          integer NOT NULL,               -- samples per axis
    axes       smallint NOT NULL,
    samples    bytea NOT NULL
) {{PARTITIONED}};
CREATE UNIQUE INDEX IF NOT EXISTS waveforms_key ON waveforms (device_id, boot, seq, ts);
CREATE INDEX IF NOT EXISTS waveforms_device_ts ON waveforms (device_id, ts);

CREATE TABLE IF NOT EXISTS device_logs (
    device_id  text NOT NULL,
    boot       bigint NOT NULL,
    seq        bigint NOT NULL,
    ts         timestamptz NOT NULL,
    recv_ts    timestamptz NOT NULL,
    tq         text NOT NULL,
    level      text NOT NULL,
    text       text NOT NULL
) {{PARTITIONED}};
CREATE UNIQUE INDEX IF NOT EXISTS device_logs_key ON device_logs (device_id, boot, seq, ts);
CREATE INDEX IF NOT EXISTS device_logs_device_ts ON device_logs (device_id, ts);

-- Commands sent to devices and their results (a result is a device record too).
CREATE TABLE IF NOT EXISTS commands (
    id          text PRIMARY KEY,
    device_id   text NOT NULL,
    cmd         text NOT NULL,
    args        jsonb NOT NULL DEFAULT '{}',
    sent_at     timestamptz,
    result_at   timestamptz,
    ok          boolean,
    detail      jsonb,
    error       text,
    result_boot bigint,
    result_seq  bigint
);
CREATE INDEX IF NOT EXISTS commands_device ON commands (device_id, sent_at);

-- Everything that broke the wire contract, kept as received.
CREATE TABLE IF NOT EXISTS quarantine (
    id          bigserial PRIMARY KEY,
    recv_ts     timestamptz NOT NULL,
    last_recv   timestamptz NOT NULL,
    times       integer NOT NULL DEFAULT 1,    -- arrivals of these exact bytes (broker redeliveries count)
    topic       text NOT NULL,
    device_id   text,                          -- from the topic when it parses, even if invalid
    code        text NOT NULL,                 -- WireError code (docs/wire.md)
    reason      text NOT NULL,
    payload     bytea NOT NULL,
    digest      bytea NOT NULL UNIQUE          -- sha256(topic || 0x00 || payload)
);
CREATE INDEX IF NOT EXISTS quarantine_recv ON quarantine (recv_ts);

-- Expand waveform blocks to one row per sample (g), e.g.
--   SELECT * FROM waveform_samples WHERE device_id = 'pump-01' AND block_ts > now() - interval '1 hour';
CREATE OR REPLACE FUNCTION fw_int16(b bytea, i integer) RETURNS integer
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS
$$ SELECT CASE WHEN v >= 32768 THEN v - 65536 ELSE v END
     FROM (SELECT get_byte(b, 2 * i) | (get_byte(b, 2 * i + 1) << 8) AS v) s $$;

CREATE OR REPLACE VIEW waveform_samples AS
SELECT w.device_id, w.boot, w.seq, w.ts AS block_ts, i AS sample_index,
       w.ts + make_interval(secs => i / w.rate_hz) AS ts,
       fw_int16(w.samples, i * w.axes) * w.scale_g AS x_g,
       CASE WHEN w.axes >= 2 THEN fw_int16(w.samples, i * w.axes + 1) * w.scale_g END AS y_g,
       CASE WHEN w.axes >= 3 THEN fw_int16(w.samples, i * w.axes + 2) * w.scale_g END AS z_g
  FROM waveforms w, generate_series(0, w.n - 1) AS i;

-- Per-minute vibration statistics (plain-PostgreSQL form; 0002 replaces it with a
-- continuous aggregate when TimescaleDB is present). Same columns on both.
CREATE OR REPLACE VIEW vibration_1m AS
SELECT device_id, date_trunc('minute', ts) AS bucket, count(*) AS windows,
       avg(x_rms) AS x_rms, avg(y_rms) AS y_rms, avg(z_rms) AS z_rms,
       max(x_peak) AS x_peak, max(y_peak) AS y_peak, max(z_peak) AS z_peak
  FROM feature_windows
 GROUP BY device_id, date_trunc('minute', ts);
