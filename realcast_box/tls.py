"""TLS for RTMPS and HTTPS: check and load the configured certificate, make one.

The box serves RTMPS and HTTPS from one ``ssl.SSLContext`` built from
``tls_cert_file`` and ``tls_key_file``. Both files are parsed with
``cryptography`` first, so a wrong path, a passphrase-protected key or a key
of another certificate fails at start with the setting named, rather than
with OpenSSL's terse error codes.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import re
import ssl
from dataclasses import dataclass
from pathlib import Path

import idna
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import (
    PrivateKeyTypes,
    PublicKeyTypes,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from realcast_box.config import Config
from realcast_box.errors import ConfigError

logger = logging.getLogger(__name__)

# A DNS name as it may appear in a certificate's subjectAltName: ASCII
# labels of letters, digits and hyphens (internationalized names in their
# xn-- form), dot-separated, at most 253 characters.
DNS_NAME_PATTERN = re.compile(
    r"(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)"
    r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?"
)
# X.509 limits a commonName to 64 characters (RFC 5280, ub-common-name).
MAX_COMMON_NAME = 64
# Backdating the start of validity covers clients whose clocks run a little
# behind the box's clock.
VALIDITY_BACKDATE = datetime.timedelta(hours=1)


def server_context(config: Config) -> ssl.SSLContext | None:
    """Return the server context for RTMPS and HTTPS, or None without TLS settings.

    Raises ConfigError naming the setting when a file is missing, unreadable,
    not PEM, passphrase-protected, or when the key does not match the
    certificate.
    """
    if not config.tls_enabled:
        return None
    return load_server_context(config.tls_cert_file, config.tls_key_file)


def load_server_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """Check the PEM certificate and key files, then load them into a context."""
    cert_path = Path(cert_file).expanduser()
    key_path = Path(key_file).expanduser()
    certificates = _load_certificates(cert_path)
    key = _load_private_key(key_path)
    key_der = _public_key_der(key.public_key())
    if _public_key_der(certificates[0].public_key()) != key_der:
        for number, certificate in enumerate(certificates[1:], start=2):
            if _public_key_der(certificate.public_key()) == key_der:
                raise ConfigError(
                    f"tls_cert_file {cert_path} has the certificate of"
                    f" tls_key_file {key_path} as certificate {number}; put it"
                    " first, followed by its intermediate certificates"
                )
        raise ConfigError(
            f"tls_key_file {key_path} is not the private key of the certificate in"
            f" tls_cert_file {cert_path}; set tls_key_file to the key made with"
            " that certificate"
        )
    _warn_outside_validity(certificates[0], cert_path)

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert_path, key_path)
    except ssl.SSLError as exc:
        raise ConfigError(
            f"failed to load tls_cert_file {cert_path} and tls_key_file"
            f" {key_path} into OpenSSL: {exc}"
        ) from None
    return context


def _read_pem(path: Path, setting: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"{setting} {path} not found; correct the path, or make a self-signed"
            " certificate and key with `realcast-box cert --host NAME`"
        ) from None
    except IsADirectoryError:
        raise ConfigError(
            f"{setting} {path} is a directory; set it to the PEM file"
        ) from None
    except PermissionError:
        raise ConfigError(
            f"{setting} {path} is not readable (permission denied); let the user"
            " that runs the box read it"
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"failed to read {setting} {path}: {exc.strerror or exc}"
        ) from None


def _load_certificates(path: Path) -> list[x509.Certificate]:
    data = _read_pem(path, "tls_cert_file")
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError:
        if _is_der_certificate(data):
            raise ConfigError(
                f"tls_cert_file {path} is a DER certificate, but the box reads"
                " PEM; convert it with `openssl x509 -inform DER -in"
                f" {path} -out cert.pem` and set tls_cert_file to cert.pem"
            ) from None
        raise ConfigError(
            f"tls_cert_file {path} contains no valid PEM certificate (a block"
            " starting with -----BEGIN CERTIFICATE-----)"
        ) from None
    return certificates


def _is_der_certificate(data: bytes) -> bool:
    try:
        x509.load_der_x509_certificate(data)
    except ValueError:
        return False
    return True


def _load_private_key(path: Path) -> PrivateKeyTypes:
    data = _read_pem(path, "tls_key_file")
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError:
        # cryptography raises TypeError when the key needs a password.
        raise ConfigError(
            f"tls_key_file {path} is protected with a passphrase, which the box"
            " cannot prompt for; write an unencrypted copy with"
            " `openssl pkey -in ENCRYPTED.pem -out KEY.pem` and keep it mode 0600"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise ConfigError(
            f"tls_key_file {path} contains no valid PEM private key (a block"
            " starting with -----BEGIN PRIVATE KEY----- or similar)"
        ) from None


def _public_key_der(public_key: PublicKeyTypes) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER,
        serialization.PublicFormat.SubjectPublicKeyInfo,
    )


def _warn_outside_validity(certificate: x509.Certificate, path: Path) -> None:
    """Log a warning when the certificate has expired or is not valid yet.

    It is not an error, because the ffmpeg CLI skips certificate checks by
    default, and on a box without a battery-backed clock the clock itself
    may be what is wrong.
    """
    now = datetime.datetime.now(datetime.UTC)
    if certificate.not_valid_after_utc < now:
        logger.warning(
            "the certificate in %s expired on %s; clients that check it will"
            " reject the connection, so make a new one",
            path,
            certificate.not_valid_after_utc.isoformat(),
        )
    elif certificate.not_valid_before_utc > now:
        logger.warning(
            "the certificate in %s is valid only from %s; check the clock",
            path,
            certificate.not_valid_before_utc.isoformat(),
        )


def fingerprint(certificate_der: bytes) -> str:
    """Return the SHA-256 fingerprint as colon-separated upper-case hex pairs."""
    digest = hashes.Hash(hashes.SHA256())
    digest.update(certificate_der)
    return ":".join(f"{byte:02X}" for byte in digest.finalize())


def parse_host(host: str) -> x509.GeneralName:
    """Return the subjectAltName entry for an IP address or DNS name.

    An internationalized name is converted to its ASCII (xn--) form with
    IDNA 2008 and the UTS 46 mapping, as browsers do. Raises ValueError for
    anything else.
    """
    try:
        return x509.IPAddress(ipaddress.ip_address(host.strip("[]").rstrip(".")))
    except ValueError:
        pass
    if host.startswith("*."):
        raise ValueError(
            f"invalid host {host!r}: wildcard names are not supported; pass"
            " each name that clients use with its own --host"
        )
    name = host
    if not host.isascii():
        try:
            name = idna.encode(host, uts46=True).decode("ascii")
        except idna.IDNAError as exc:
            raise ValueError(
                f"invalid host {host!r}: not a valid internationalized name"
                f" ({exc}); pass the name in its ASCII form (xn--...)"
            ) from None
    if DNS_NAME_PATTERN.fullmatch(name) is None:
        raise ValueError(
            f"invalid host {host!r}: expected a DNS name such as box.local"
            " (labels of letters, digits and hyphens, each at most 63 characters,"
            " at most 253 characters in all) or an IP address such as"
            " 192.168.1.10"
        )
    return x509.DNSName(name.rstrip(".").lower())


@dataclass(frozen=True)
class SelfSignedCertificate:
    certificate_pem: bytes
    private_key_pem: bytes
    fingerprint: str
    not_valid_after: datetime.datetime


def make_self_signed(hosts: list[str], days: int) -> SelfSignedCertificate:
    """Make a self-signed ECDSA P-256 server certificate for ``hosts``.

    Every host goes into the subjectAltName (an IP address as an IP entry),
    the first one also into the commonName when it fits. Raises ValueError
    for an invalid host.
    """
    if not hosts:
        raise ValueError("at least one host is needed")
    names = [parse_host(host) for host in hosts]
    key = ec.generate_private_key(ec.SECP256R1())
    first = str(names[0].value)
    common_name = first if len(first) <= MAX_COMMON_NAME else "RealCast Box"
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    not_valid_before = datetime.datetime.now(datetime.UTC) - VALIDITY_BACKDATE
    # Counted from not_valid_before: Apple devices reject server certificates
    # whose NotBefore to NotAfter span exceeds 825 days ("Requirements for
    # trusted certificates in iOS 13 and macOS 10.15", support.apple.com/103769).
    not_valid_after = not_valid_before + datetime.timedelta(days=days)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_valid_before)
        .not_valid_after(not_valid_after)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        # Not a CA: Firefox rejects a CA certificate used as a server's own.
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    return SelfSignedCertificate(
        certificate_pem=certificate.public_bytes(serialization.Encoding.PEM),
        private_key_pem=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        fingerprint=fingerprint(certificate.public_bytes(serialization.Encoding.DER)),
        not_valid_after=certificate.not_valid_after_utc,
    )


CERT_FILE_NAME = "tls-cert.pem"
KEY_FILE_NAME = "tls-key.pem"


def write_pair(
    pair: SelfSignedCertificate, out_dir: Path, *, force: bool
) -> tuple[Path, Path]:
    """Write the certificate (mode 0644) and key (mode 0600) into ``out_dir``.

    Raises FileExistsError naming the file when either exists and ``force``
    is false, before anything is written. Each file is written to a
    temporary name and renamed, so an interrupted run leaves no half file.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    cert_path = (out_dir / CERT_FILE_NAME).absolute()
    key_path = (out_dir / KEY_FILE_NAME).absolute()
    if not force:
        for path in (cert_path, key_path):
            if path.exists():
                raise FileExistsError(path)
    _write_atomically(key_path, pair.private_key_pem, 0o600)
    _write_atomically(cert_path, pair.certificate_pem, 0o644)
    return cert_path, key_path


def _write_atomically(path: Path, data: bytes, mode: int) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.unlink(missing_ok=True)
    # Created with its final mode, so the key is never readable by others,
    # not even between creating and chmod.
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        # The umask may have cleared bits of ``mode``, so set it exactly.
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
