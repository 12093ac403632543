"""A database URL as it may be shown: DATABASE_URL can hold a password, which no log line, error,
health answer or metric may carry."""

from __future__ import annotations

from sqlalchemy.engine import URL, make_url


def parse(url: str | URL) -> URL:
    return url if isinstance(url, URL) else make_url(url)


def shown(url: str | URL) -> str:
    """The URL with its password replaced by ***."""
    return parse(url).render_as_string(hide_password=True)


def scrub(text: str, url: str | URL) -> str:
    """`text` (an error message, say) with the URL's password, and the URL written in full,
    replaced: a driver may quote either back."""
    parsed = parse(url)
    secret = parsed.password
    if secret:
        text = text.replace(parsed.render_as_string(hide_password=False), shown(parsed))
        text = text.replace(str(secret), "***")
    return text
