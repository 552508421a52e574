"""TLS and credentials for the broker connection, from the `mqtt` config section."""

from __future__ import annotations

import ssl

from agent.config.sections import MqttConfig


def tls_context(cfg: MqttConfig) -> ssl.SSLContext | None:
    """An SSL context from `mqtt.tls`, or None for plain TCP."""
    tls = cfg.tls
    if tls is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(tls.ca_file))
    if tls.cert_file is not None and tls.key_file is not None:
        ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    if not tls.verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def read_password(cfg: MqttConfig) -> str | None:
    """The broker password from `password_file` or the systemd credential, if configured."""
    if cfg.password_file is None and cfg.password_credential is None:
        return None
    from agent.config.loader import read_mqtt_password

    return read_mqtt_password(cfg)
