"""core.encryption: values encrypted at rest (an MCP server's headers) with Fernet keys: the first configured key
encrypts, every one decrypts, and a key derived from SECRET_KEY always decrypts too."""
import pytest
from cryptography.fernet import Fernet

from core.encryption import SecretUndecryptable, secret_decrypt, secret_encrypt

SECRET = "Bearer tok-8d7c6b5a4f3e"


def test_a_value_round_trips_and_is_not_readable_at_rest(settings):
    settings.CHATTER_ENCRYPTION_KEYS = ()
    stored = secret_encrypt(SECRET)

    assert SECRET not in stored and stored != secret_encrypt(SECRET)  # a fresh IV each time
    assert secret_decrypt(stored) == SECRET


def test_keys_rotate_the_first_encrypts_and_each_decrypts(settings):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.CHATTER_ENCRYPTION_KEYS = ()
    before_keys = secret_encrypt(SECRET)  # the key SECRET_KEY gives
    settings.CHATTER_ENCRYPTION_KEYS = (old,)
    under_old = secret_encrypt(SECRET)
    settings.CHATTER_ENCRYPTION_KEYS = (new, old)

    assert secret_decrypt(before_keys) == SECRET and secret_decrypt(under_old) == SECRET
    assert Fernet(new.encode()).decrypt(secret_encrypt(SECRET).encode()).decode() == SECRET
    settings.CHATTER_ENCRYPTION_KEYS = (new,)
    with pytest.raises(SecretUndecryptable):
        secret_decrypt(under_old)  # its key was dropped


def test_another_secret_key_cannot_decrypt(settings):
    settings.CHATTER_ENCRYPTION_KEYS = ()
    stored = secret_encrypt(SECRET)
    settings.SECRET_KEY = "another-secret-key-entirely"

    with pytest.raises(SecretUndecryptable):
        secret_decrypt(stored)
