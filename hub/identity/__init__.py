"""Identity: which Patient and Device a reading belongs to (``resolver``), per-source identity
modes (``modes``), and registry administration (``admin``)."""

from hub.identity.admin import assign_device
from hub.identity.modes import IdentityModes
from hub.identity.resolver import IdentityResolver

__all__ = ["IdentityModes", "IdentityResolver", "assign_device"]
