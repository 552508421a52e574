"""`edge-agent ota keygen|pack|publish`: sign model updates and push them to devices over MQTT."""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

EXIT_FAILED = 1
EXIT_USAGE = 2


def register(sub: Any) -> None:
    """Add the `ota` command group."""
    ota = sub.add_parser("ota", help="over-the-air model updates: keys, bundles, publishing")
    ota_sub = ota.add_subparsers(dest="ota_command", required=True)

    keygen = ota_sub.add_parser("keygen", help="create an ed25519 signing key pair")
    keygen.add_argument(
        "--out", type=Path, required=True, metavar="DIR", help="folder for the keys"
    )
    keygen.add_argument("--force", action="store_true", help="replace an existing key pair")
    keygen.set_defaults(handler=_keygen)

    pack = ota_sub.add_parser("pack", help="sign a model folder into an update bundle")
    pack.add_argument("model_dir", type=Path, help="model folder with its manifest.json")
    pack.add_argument("--key", type=Path, required=True, metavar="PRIVATE", help="private.pem")
    pack.add_argument("--out", type=Path, required=True, metavar="BUNDLE", help="bundle to write")
    pack.add_argument(
        "--serial", type=int, default=None, help="replay guard; default: now in nanoseconds"
    )
    pack.add_argument(
        "--allow-downgrade", action="store_true", help="devices may install it over a newer one"
    )
    pack.add_argument("--chunk-size", type=int, default=32 * 1024, help="bytes per MQTT chunk")
    pack.set_defaults(handler=_pack)

    pub = ota_sub.add_parser("publish", help="send a bundle to devices and follow them")
    pub.add_argument("bundle", type=Path, help="bundle written by `ota pack`")
    pub.add_argument("--broker", required=True, metavar="HOST:PORT", help="MQTT broker")
    who = pub.add_mutually_exclusive_group(required=True)
    who.add_argument("--device", metavar="ID", help="one device")
    who.add_argument("--group", metavar="G", help="every device of a group")
    who.add_argument("--all", action="store_true", help="every device")
    pub.add_argument("--expect", type=int, default=None, help="group/all: devices to wait for")
    pub.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        help="give up after this many seconds (default %(default)g); a note after "
        "--notice-after s says when no device has answered yet",
    )
    pub.add_argument(
        "--notice-after",
        type=float,
        default=5.0,
        metavar="S",
        help="say so when no device has answered after this many seconds (default %(default)g)",
    )
    pub.add_argument(
        "--settle", type=float, default=5.0, help="group/all without --expect: quiet time (s)"
    )
    pub.add_argument("--topic-root", default="edge", help="first topic level (mqtt.topic_root)")
    pub.add_argument("--username", default=None, help="broker user name")
    pub.add_argument("--password-file", type=Path, default=None, help="file with the password")
    pub.add_argument("--ca", type=Path, default=None, help="CA file: connect with TLS")
    pub.add_argument("--cert", type=Path, default=None, help="client certificate (mutual TLS)")
    pub.add_argument("--key", type=Path, default=None, help="client key (mutual TLS)")
    pub.add_argument(
        "--protocol", choices=("auto", "5", "3.1.1"), default="auto",
        help="MQTT version; auto tries 5, then 3.1.1 (NATS, RabbitMQ)",
    )  # fmt: skip
    pub.add_argument("--json", action="store_true", help="print only the final JSON result")
    pub.set_defaults(handler=_publish)


def _fail(message: str, code: int = EXIT_USAGE) -> int:
    print(f"edge-agent ota: {message}", file=sys.stderr)
    return code


def _keygen(args: argparse.Namespace) -> int:
    from agent.errors import ConfigError
    from agent.ota.keys import PRIVATE_FILE, PUBLIC_FILE, generate_keypair, key_id, load_public_key

    there = [p for p in (args.out / PRIVATE_FILE, args.out / PUBLIC_FILE) if p.exists()]
    if there and not args.force:
        return _fail(
            f"{there[0]} already exists: refusing to replace a key pair (devices that trust its "
            "public key would refuse updates signed with a new one); pass --force to replace it"
        )
    try:
        private, public = generate_keypair(args.out, overwrite=args.force)
    except ConfigError as exc:
        return _fail(str(exc))
    print(f"private key: {private} (mode 0600: keep it off devices)")
    print(f"public key:  {public} (list it in ota.trusted_keys on devices)")
    print(f"key id:      {key_id(load_public_key(public))}")
    return 0


def _pack(args: argparse.Namespace) -> int:
    from agent.errors import EdgeAgentError
    from agent.ota.bundle import pack_bundle
    from agent.ota.keys import load_private_key

    try:
        body = pack_bundle(
            args.model_dir,
            load_private_key(args.key),
            args.out,
            serial=args.serial,
            allow_downgrade=args.allow_downgrade,
            chunk_size=args.chunk_size,
        )
    except EdgeAgentError as exc:
        return _fail(str(exc))
    print(
        f"{args.out}: {body.model} {body.version}, serial {body.serial}, "
        f"{len(body.manifest.files)} files, {body.size} bytes in {body.chunks} chunks"
        + (", downgrade allowed" if body.allow_downgrade else "")
    )
    return 0


def _broker(args: argparse.Namespace) -> Any:
    from agent.ota.publisher import BrokerOptions

    host, sep, port = str(args.broker).rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"--broker must be HOST:PORT, got {args.broker!r}")
    password = None
    if args.password_file is not None:
        password = args.password_file.read_text().strip()
    return BrokerOptions(
        host=host,
        port=int(port),
        root=args.topic_root,
        username=args.username,
        password=password,
        ca_file=args.ca,
        cert_file=args.cert,
        key_file=args.key,
        protocol=args.protocol,
    )


def _publish(args: argparse.Namespace) -> int:
    from agent.errors import UpdateRejected
    from agent.ota.bundle import Bundle
    from agent.ota.publisher import DeviceProgress, Publisher, Target

    try:
        broker = _broker(args)
    except (ValueError, OSError) as exc:
        return _fail(str(exc))
    if args.device:
        target = Target("device", args.device)
    elif args.group:
        target = Target("group", args.group)
    else:
        target = Target("all")
    printer = _ProgressPrinter(quiet=args.json)

    def show(p: DeviceProgress) -> None:
        printer.show(p)

    def notice(text: str) -> None:
        print(f"edge-agent ota: {text}", file=sys.stderr, flush=True)

    try:
        with Bundle(args.bundle) as bundle:
            bundle.check()
            body = bundle.body
            if not args.json:
                print(f"publishing {body.model} {body.version} (serial {body.serial}) to {target}")
            publisher = Publisher(
                bundle,
                broker,
                target,
                expect=args.expect,
                timeout_s=args.timeout,
                settle_s=args.settle,
                quiet_s=args.notice_after,
                on_progress=show,
                on_notice=notice,
            )
            started = time.monotonic()
            devices = publisher.run()
            elapsed = time.monotonic() - started
            sent, size = publisher.bytes_sent, body.size
    except UpdateRejected as exc:
        return _fail(exc.reason)
    except (OSError, ConnectionError) as exc:
        return _fail(f"broker {args.broker}: {exc}", EXIT_FAILED)
    traffic = {"bytes_sent": sent, "bundle_bytes": size, "seconds": round(elapsed, 3)}
    return _final(devices, expect=publisher.expect, as_json=args.json, traffic=traffic)


def _final(
    devices: dict[str, Any], *, expect: int | None, as_json: bool, traffic: dict[str, Any]
) -> int:
    """Print the result (a table, or JSON) and return the exit code: 0 only if every device
    (and at least --expect of them) ended `active`."""
    result = {
        d.device: {"state": d.state, "version": d.version, "reason": d.reason, "code": d.code}
        for d in devices.values()
    }
    ok = bool(devices) and all(d.state == "active" for d in devices.values())
    if expect is not None and len(devices) < expect:
        ok = False
    if as_json:
        print(json.dumps({"ok": ok, "devices": result, **traffic}))
        return 0 if ok else EXIT_FAILED
    if not devices:
        print("no device answered")
    else:
        print(f"\n  {'device':<24} {'state':<12} {'version':<10} reason")
    for d in sorted(devices.values(), key=lambda d: (d.state == "active", d.device)):
        print(f"  {d.device:<24} {d.state:<12} {d.version or '-':<10} {d.reason}")
    counts: dict[str, int] = {}
    for d in devices.values():
        counts[d.state] = counts.get(d.state, 0) + 1
    summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
    ratio = traffic["bytes_sent"] / traffic["bundle_bytes"]
    print(
        f"{len(devices)} devices: {summary or 'none'}; sent {traffic['bytes_sent']} bytes "
        f"({ratio:.2f} x the bundle) in {traffic['seconds']:.1f} s"
    )
    if expect is not None and len(devices) < expect:
        print(f"only {len(devices)} of {expect} expected devices answered")
    return 0 if ok else EXIT_FAILED


class _ProgressPrinter:
    """Prints a device's progress when its state changes, or every second while receiving."""

    def __init__(self, *, quiet: bool) -> None:
        self.quiet = quiet
        self._last: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def show(self, p: Any) -> None:
        """Print `p` unless it repeats the last line of its device within a second."""
        if self.quiet:
            return
        now = time.monotonic()
        with self._lock:
            state, at = self._last.get(p.device, ("", 0.0))
            if p.state == state and now - at < 1.0:
                return
            self._last[p.device] = (p.state, now)
        print(p.line(), flush=True)
