"""The ``infisical`` source: the API client and reading (:mod:`.source`), the ``auth``
options and the token kept for a source (:mod:`.auth`), and what each login method sends
(:mod:`.logins`)."""

from syncd.connectors._http import WALL_CLOCK_KEY
from syncd.connectors.sources.infisical.auth import InfisicalAuth, TokenKeeper
from syncd.connectors.sources.infisical.source import (
    CLOCK_KEY,
    InfisicalSource,
    InfisicalSourceConfig,
    config_warnings,
    normalize_folder,
)

__all__ = [
    "CLOCK_KEY",
    "WALL_CLOCK_KEY",
    "InfisicalAuth",
    "InfisicalSource",
    "InfisicalSourceConfig",
    "TokenKeeper",
    "config_warnings",
    "normalize_folder",
]
