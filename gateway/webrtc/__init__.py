"""WebRTC output of a session: its chunks decoded and sent as aiortc video and audio tracks on one clock."""
