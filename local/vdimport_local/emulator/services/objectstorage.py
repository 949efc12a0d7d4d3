"""objectstorage (to be written)."""

from ..routing import Service

service = Service("objectstorage")
