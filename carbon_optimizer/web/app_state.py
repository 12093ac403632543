"""What every request reads from its app: the settings, the engine, the clock."""

from __future__ import annotations

from datetime import datetime

from flask import current_app

from carbon_optimizer.engine import CarbonEngine
from carbon_optimizer.settings import Settings


def now() -> datetime:
    return current_app.config["CLOCK"]()


def engine() -> CarbonEngine:
    return current_app.extensions["carbon_engine"]


def settings() -> Settings:
    return current_app.extensions["carbon_settings"]
