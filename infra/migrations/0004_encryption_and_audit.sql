-- Face data encrypted at rest (infra/crypto.py) and the audit log (infra/audit.py).

-- Each row names the key its blobs are encrypted under; NULL marks a row stored before encryption, which
-- is still readable and which scripts/rotate_face_key.py encrypts under the current key.
ALTER TABLE avatars ADD COLUMN source_key_id text;              -- covers source_bytes (the original upload)
ALTER TABLE avatar_face_data ADD COLUMN key_id text;            -- covers frames, boxes and landmarks
-- Under a key, each frame is sealed on its own (nonce || ciphertext || tag) so a preview fetches one frame;
-- frame_sizes then holds the sealed sizes.

-- Boxes become a blob so they can be encrypted like the rest: N x 4 int32, big-endian (int4send's order).
CREATE FUNCTION avatar_boxes_as_bytea(boxes integer[]) RETURNS bytea LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(string_agg(int4send(value), ''::bytea ORDER BY position), ''::bytea)
    FROM unnest(boxes) WITH ORDINALITY AS flat(value, position)
$$;
ALTER TABLE avatar_face_data ALTER COLUMN boxes TYPE bytea USING avatar_boxes_as_bytea(boxes);
DROP FUNCTION avatar_boxes_as_bytea(integer[]);

-- Ciphertext does not compress: spare pglz the attempt on every write.
ALTER TABLE avatars ALTER COLUMN source_bytes SET STORAGE EXTERNAL;
ALTER TABLE avatar_face_data ALTER COLUMN landmarks SET STORAGE EXTERNAL;

-- Who did what, when, from where: registrations, deletions and admin actions. Written in the same transaction
-- as the change it records where there is one.
CREATE TABLE audit_log (
    id               bigserial PRIMARY KEY,
    created_at       timestamptz NOT NULL DEFAULT now(),
    actor            text NOT NULL,                             -- 'admin', or the user id of the caller's token
    actor_kind       text NOT NULL CHECK (actor_kind IN ('admin', 'user', 'system')),
    action           text NOT NULL,                             -- e.g. avatar.registered, avatar.deleted, token.issued
    avatar_id        text,
    subject_user_id  text,                                      -- whose avatar / whom a token is for
    client_ip        text,
    details          jsonb NOT NULL DEFAULT '{}'::jsonb
);

CREATE INDEX audit_log_action ON audit_log (action, id);
CREATE INDEX audit_log_avatar ON audit_log (avatar_id, id) WHERE avatar_id IS NOT NULL;

-- Append-only for the service: a compromised gateway cannot rewrite history. Pruning old entries is a
-- deliberate DBA step (docs/security.md: disable the triggers, delete, enable).
CREATE FUNCTION audit_log_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END
$$;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_refuse_change();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_refuse_change();
