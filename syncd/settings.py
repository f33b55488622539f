"""Process settings from the environment (``SYNCD_*``), overridden by CLI flags."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic_settings import BaseSettings, SettingsConfigDict


def default_state_dir() -> Path:
    xdg = os.environ.get("XDG_STATE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "state"
    return base / "syncd"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SYNCD_", extra="ignore")

    config: Path = Path("syncd.yaml")
    state_dir: Path | None = None
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "console", "auto"] = "auto"
    fingerprint_key_file: Path | None = None

    def resolved_state_dir(self) -> Path:
        if self.state_dir is not None:
            return self.state_dir
        # systemd's StateDirectory= exports STATE_DIRECTORY
        sd = os.environ.get("STATE_DIRECTORY")
        return Path(sd.split(":")[0]) if sd else default_state_dir()

    def resolved_key_file(self) -> Path:
        return self.fingerprint_key_file or self.resolved_state_dir() / "fingerprint.key"
