-- Idle clips (issue 11): each avatar's idle loop, rendered by a lip-sync worker with its own engine and
-- served by any gateway. One row per avatar and engine, holding the clip of the avatar version it names;
-- a new registration under the same id replaces it, a deleted avatar takes its clips with it.
CREATE TABLE idle_clips (
    avatar_id       text NOT NULL REFERENCES avatars ON DELETE CASCADE,
    engine          text NOT NULL,              -- the lip-sync engine that rendered it (embedded, wav2lip)
    avatar_version  text NOT NULL,              -- face-data format and registration time (infra/idle_clip_store.py)
    clip_format     integer NOT NULL,           -- the renderer's own version: a newer renderer re-renders
    n_frames        integer NOT NULL,
    fps             integer NOT NULL,
    key_id          text NOT NULL,              -- the clip shows the face: encrypted like the face data
    data            bytea NOT NULL,
    rendered_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (avatar_id, engine)
);
ALTER TABLE idle_clips ALTER COLUMN data SET STORAGE EXTERNAL;  -- ciphertext does not compress
