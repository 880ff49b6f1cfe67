-- An avatar's default speech (issue 5): the TTS backend and voice its requests use when they name none.
-- NULL: none, the request's own choice or the deployment's settings (TTS_ENGINE) decide. The backend names
-- match schemas/requests.py's TtsEngineName; which of them a deployment enables is checked by the gateway.
ALTER TABLE avatars ADD COLUMN default_tts text CHECK (default_tts IN ('espeak', 'openai', 'piper'));
ALTER TABLE avatars ADD COLUMN default_voice text CHECK (default_voice ~ '^[A-Za-z0-9_+.-]{1,64}$');
