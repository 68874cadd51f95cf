-- A trigram index for the admin list's destination search (ILIKE
-- '%...%'), which a b-tree cannot serve: searches of three characters or
-- more then read the matching rows instead of every row. pg_trgm ships with
-- PostgreSQL and is trusted (a role with CREATE on the database may create
-- it), but a role may still not be allowed to, or the server may lack the
-- contrib files: then there is no index and a search reads the table, as
-- before. To add it later: CREATE EXTENSION pg_trgm; then CREATE INDEX
-- destinations_destination_trgm ON <schema>.destinations USING gin
-- (destination gin_trgm_ops).
DO $$
DECLARE
    ext_schema NAME;
BEGIN
    CREATE EXTENSION IF NOT EXISTS pg_trgm;
    -- Created here, or already installed in another schema.
    SELECT n.nspname INTO ext_schema
    FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
    WHERE e.extname = 'pg_trgm';
    EXECUTE format('CREATE INDEX destinations_destination_trgm ON destinations USING gin (destination %I.gin_trgm_ops)',
        ext_schema);
EXCEPTION
    -- undefined_object: the extension was dropped meanwhile.
    WHEN insufficient_privilege OR undefined_file OR undefined_object THEN
        RAISE NOTICE 'pgprojection: no trigram index for destination searches: %', SQLERRM;
END
$$;
