-- fedsender's count of must-deliver EDUs (to-device, device lists, signing
-- keys) each destination has not acknowledged yet, from the
-- fedsender-edu-pending bucket, and that count's revision there (a count
-- never replaces a newer one).
ALTER TABLE destinations
    ADD COLUMN pending_edus BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN pending_edus_rev BIGINT NOT NULL DEFAULT 0;
