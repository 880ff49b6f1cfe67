-- Registered avatars and their cached face data (schemas/avatar.py, FACE_DATA_VERSION).
CREATE TABLE avatars (
    avatar_id          text PRIMARY KEY,
    user_id            text NOT NULL,
    name               text NOT NULL,
    description        text NOT NULL DEFAULT '',
    media_kind         text NOT NULL CHECK (media_kind IN ('image', 'gif', 'video')),
    source_sha256      text NOT NULL,
    source_bytes       bytea NOT NULL,
    source_width       integer NOT NULL,
    source_height      integer NOT NULL,
    source_fps         real,
    frame_count        integer NOT NULL,
    width              integer NOT NULL,
    height             integer NOT NULL,
    quality_report     jsonb NOT NULL,
    face_data_version  integer NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    UNIQUE (user_id, name)
);

CREATE TABLE avatar_frames (
    avatar_id    text NOT NULL REFERENCES avatars (avatar_id) ON DELETE CASCADE,
    frame_index  integer NOT NULL,
    image        bytea NOT NULL,          -- the normalised frame, JPEG
    box          integer[] NOT NULL,      -- x0, y0, x1, y1
    landmarks    bytea NOT NULL,          -- 68 x 2 float32, little-endian
    PRIMARY KEY (avatar_id, frame_index)
);

CREATE INDEX avatars_user_id ON avatars (user_id);
