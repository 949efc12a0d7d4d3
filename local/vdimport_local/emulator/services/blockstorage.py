"""blockstorage (to be written)."""

from ..routing import Service

service = Service("blockstorage")
