"""The avatar as a pipecat service: ``pip install avatar-stream[pipecat]``, then ``AvatarVideoService``."""

from integrations.pipecat.avatar_video import AvatarVideoService

__all__ = ["AvatarVideoService"]
