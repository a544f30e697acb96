"""A job's secret environment: sealed by the API, opened only by the runner that starts it.

The event log is the source of truth and every service reads it, so a secret in JobSubmitted
would be readable by anyone who can read the stream or any service's database. The API seals
each value with FREIGHT_SECRET_KEY (Fernet: AES-128-CBC with an HMAC-SHA256, so a value cannot
be read or altered without the key) and the log holds only the sealed text; runners, which share
the key, open it when they create the container. The API shows the names, never the values.
"""

from __future__ import annotations

from collections.abc import Mapping

from cryptography.fernet import Fernet, InvalidToken

from freight_server.shared.config import ConfigError, Settings

MASK = "***"


class SecretUnavailable(ValueError):
    """A sealed value cannot be opened here: no key, or not the key it was sealed with."""


class SecretBox:
    def __init__(self, key: str):
        try:
            self._fernet = Fernet(key.encode())
        except ValueError:
            raise ConfigError(
                "FREIGHT_SECRET_KEY must be 32 url-safe base64-encoded bytes, as "
                "`python -c 'from cryptography.fernet import Fernet; "
                "print(Fernet.generate_key().decode())'` prints"
            ) from None

    @classmethod
    def from_settings(cls, settings: Settings) -> SecretBox | None:
        return cls(settings.secret_key) if settings.secret_key else None

    def seal(self, env: Mapping[str, str]) -> dict[str, str]:
        return {name: self._fernet.encrypt(value.encode()).decode() for name, value in env.items()}

    def open(self, sealed: Mapping[str, str]) -> dict[str, str]:
        try:
            return {
                name: self._fernet.decrypt(value.encode()).decode()
                for name, value in sealed.items()
            }
        except (InvalidToken, UnicodeError):
            raise SecretUnavailable(
                "the job's secret_env was sealed with another FREIGHT_SECRET_KEY than this runner's"
            ) from None


def open_secret_env(box: SecretBox | None, sealed: Mapping[str, str]) -> dict[str, str]:
    """The plain values a container is given; raises SecretUnavailable."""
    if not sealed:
        return {}
    if box is None:
        raise SecretUnavailable(
            "the job has secret_env but this runner has no FREIGHT_SECRET_KEY to open it"
        )
    return box.open(sealed)


def masked(sealed: Mapping[str, str]) -> dict[str, str]:
    """What users see of a secret environment: its names."""
    return dict.fromkeys(sealed, MASK)
