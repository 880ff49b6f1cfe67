"""The avatar as a LiveKit Agents avatar worker: ``pip install avatar-stream[livekit]``, ``AvatarVideoGenerator``."""

from integrations.avatar_link import AvatarUnavailable
from integrations.livekit.video_generator import AvatarVideoGenerator

__all__ = ["AvatarUnavailable", "AvatarVideoGenerator"]
