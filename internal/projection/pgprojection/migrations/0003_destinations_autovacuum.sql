-- The admin list walks an index up to its OFFSET, reading only the index
-- when the visibility map says a page's rows are visible to everyone (an
-- index-only scan), and the row itself otherwise, which is several times
-- slower. VACUUM sets the map; an update clears it for the row's page. By
-- default autovacuum comes after a fifth of the table changed: here after
-- a hundredth, inserted or updated, so that the map stays mostly set.
ALTER TABLE destinations SET (
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_insert_scale_factor = 0.01
);
