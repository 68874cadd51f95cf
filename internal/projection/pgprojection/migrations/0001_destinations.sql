-- Synapse's destinations table (synapse/storage/schema), with the columns
-- fedsender adds: catching_up, and event_seq, the FEDSENDER_DEST_EVENTS
-- sequence of the event the row shows (so that a redelivered or older
-- event changes nothing). destination uses the C collation: names compare
-- byte by byte, as Synapse requires of PostgreSQL.
CREATE TABLE destinations (
    destination TEXT COLLATE "C" PRIMARY KEY,
    retry_last_ts BIGINT NOT NULL DEFAULT 0,
    retry_interval BIGINT NOT NULL DEFAULT 0,
    failure_ts BIGINT,
    last_successful_stream_ordering BIGINT,
    catching_up BOOLEAN NOT NULL DEFAULT FALSE,
    event_seq BIGINT NOT NULL DEFAULT 0
);

-- One index per admin order and direction: ties are broken by destination
-- ascending in both directions, so a backward scan of the ascending index
-- would not do. NULL (never failed, nothing sent) sorts as 0.
CREATE INDEX destinations_retry_last_ts_asc ON destinations (retry_last_ts ASC, destination ASC);
CREATE INDEX destinations_retry_last_ts_desc ON destinations (retry_last_ts DESC, destination ASC);
CREATE INDEX destinations_retry_interval_asc ON destinations (retry_interval ASC, destination ASC);
CREATE INDEX destinations_retry_interval_desc ON destinations (retry_interval DESC, destination ASC);
CREATE INDEX destinations_failure_ts_asc ON destinations (failure_ts ASC NULLS FIRST, destination ASC);
CREATE INDEX destinations_failure_ts_desc ON destinations (failure_ts DESC NULLS LAST, destination ASC);
CREATE INDEX destinations_lsso_asc ON destinations (last_successful_stream_ordering ASC NULLS FIRST, destination ASC);
CREATE INDEX destinations_lsso_desc ON destinations (last_successful_stream_ordering DESC NULLS LAST, destination ASC);

-- Synapse's destination_rooms.
CREATE TABLE destination_rooms (
    destination TEXT COLLATE "C" NOT NULL,
    room_id TEXT COLLATE "C" NOT NULL,
    stream_ordering BIGINT NOT NULL,
    PRIMARY KEY (destination, room_id)
);

-- How far each projection has applied its stream: written in the same
-- transaction as the rows.
CREATE TABLE projection_checkpoints (
    name TEXT PRIMARY KEY,
    stream_seq BIGINT NOT NULL
);
