-- Face data in one row per avatar instead of one row per frame: a video avatar loads with one fetch of
-- one buffer (infra/face_frames.py decodes its frames on demand). Existing avatars are converted in place;
-- the frames keep their bytes, so FACE_DATA_VERSION is unchanged.
CREATE TABLE avatar_face_data (
    avatar_id    text PRIMARY KEY REFERENCES avatars (avatar_id) ON DELETE CASCADE,
    frame_sizes  integer[] NOT NULL,   -- byte length of each frame's JPEG in "frames", in frame order
    frames       bytea NOT NULL,       -- the normalised frames as JPEGs, back to back
    boxes        integer[] NOT NULL,   -- N x 4: x0, y0, x1, y1 (x1, y1 exclusive)
    landmarks    bytea NOT NULL        -- N x 68 x 2 float32, little-endian
);

-- JPEG does not compress further: storing it uncompressed saves pglz's attempt on every write and read.
ALTER TABLE avatar_face_data ALTER COLUMN frames SET STORAGE EXTERNAL;

INSERT INTO avatar_face_data (avatar_id, frame_sizes, frames, boxes, landmarks)
SELECT avatar_id,
       array_agg(octet_length(image) ORDER BY frame_index),
       string_agg(image, ''::bytea ORDER BY frame_index),
       array_agg(box ORDER BY frame_index),
       string_agg(landmarks, ''::bytea ORDER BY frame_index)
FROM avatar_frames
GROUP BY avatar_id;

DROP TABLE avatar_frames;

