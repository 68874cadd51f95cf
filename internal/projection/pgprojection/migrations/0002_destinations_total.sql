-- The number of rows of destinations, so that the admin list's total is
-- one row read instead of a count(*) of the table on every request.
-- Statement-level triggers keep it, so every writer of destinations (the
-- projector's upserts, the rooms projector's ON CONFLICT DO NOTHING,
-- Rebuild's TRUNCATE, an operator's DELETE) keeps it exact, in the same
-- transaction as its rows: a reader's snapshot sees the count of the rows
-- it sees. Writers that insert new destinations queue on this row until
-- they commit; statements that insert none do not touch it.
CREATE TABLE destinations_total (
    only_row BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (only_row),
    n BIGINT NOT NULL
);
INSERT INTO destinations_total (n) SELECT count(*) FROM destinations;

-- search_path is pinned: a writer whose session names the table with its
-- schema still reaches destinations_total.
CREATE FUNCTION destinations_total_count() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    k BIGINT;
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        UPDATE destinations_total SET n = 0;
        RETURN NULL;
    ELSIF TG_OP = 'INSERT' THEN
        SELECT count(*) INTO k FROM inserted;
    ELSE
        SELECT -count(*) INTO k FROM deleted;
    END IF;
    IF k <> 0 THEN
        UPDATE destinations_total SET n = n + k;
    END IF;
    RETURN NULL;
END
$$;

-- An INSERT ... ON CONFLICT's transition table holds only the rows it
-- inserted, not those it updated or skipped.
CREATE TRIGGER destinations_total_insert AFTER INSERT ON destinations
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION destinations_total_count();
CREATE TRIGGER destinations_total_delete AFTER DELETE ON destinations
    REFERENCING OLD TABLE AS deleted
    FOR EACH STATEMENT EXECUTE FUNCTION destinations_total_count();
CREATE TRIGGER destinations_total_truncate AFTER TRUNCATE ON destinations
    FOR EACH STATEMENT EXECUTE FUNCTION destinations_total_count();
