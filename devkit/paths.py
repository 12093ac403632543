"""Where the repository is: the checkout this package belongs to."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
