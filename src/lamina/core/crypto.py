"""Encryption at rest for stored text (audit request/response text, feedback text).

Fernet (AES-128-CBC + HMAC-SHA256, from ``cryptography``) through ``MultiFernet``: the first key of
``security.encryption_keys`` encrypts, every key decrypts, so rotating is "put a new key first, run
``lamina audit rotate``, then drop the old key". Stored values carry a prefix, so text written
before encryption was turned on is still read (as plain text) and ``rotate`` encrypts it too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lamina.core.errors import ConfigError

PREFIX = "enc:v1:"


def new_key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


class TextCipher:
    def __init__(self, keys: Sequence[Any]) -> None:
        from cryptography.fernet import Fernet, MultiFernet

        secrets = [k.get_secret_value() if hasattr(k, "get_secret_value") else str(k) for k in keys]
        if not secrets:
            raise ConfigError("no encryption key is set", hint="add one: lamina audit new-key")
        try:
            self._fernet = MultiFernet([Fernet(s.encode()) for s in secrets])
        except (ValueError, TypeError) as exc:
            raise ConfigError(
                f"security.encryption_keys: a key is not a Fernet key ({exc})",
                hint="make one with: lamina audit new-key",
            ) from None

    def encrypt(self, text: str | None) -> str | None:
        if text is None:
            return None
        return PREFIX + self._fernet.encrypt(text.encode()).decode()

    def decrypt(self, stored: str | None) -> str | None:
        """Plain text for a stored value (values without the prefix were stored unencrypted)."""
        from cryptography.fernet import InvalidToken

        if stored is None or not stored.startswith(PREFIX):
            return stored
        try:
            return self._fernet.decrypt(stored[len(PREFIX) :].encode()).decode()
        except InvalidToken:
            raise ConfigError(
                "stored text was encrypted with a key that is no longer configured",
                hint="put the old key back in security.encryption_keys (after the new one)",
            ) from None

    def rotate(self, stored: str | None) -> str | None:
        """The value encrypted under the first key (plain values get encrypted)."""
        if stored is None:
            return None
        if not stored.startswith(PREFIX):
            return self.encrypt(stored)
        return self.encrypt(self.decrypt(stored))  # decrypt names the missing key in one line


def cipher_for(settings: Any) -> TextCipher | None:
    keys = list(getattr(getattr(settings, "security", None), "encryption_keys", []) or [])
    return TextCipher(keys) if keys else None
