"""SDK-HMAC-SHA256 as the DLI gateway checks it: the signature rebuilt from the request received.

The simulator's own verifier, written from the published algorithm (Huawei Cloud SDK
``huaweicloudsdkcore/signer/signer.py``) and sharing no code with the function's signer, so a
mistake in that signer cannot hide behind the same mistake here. Tests feed it requests signed
by the official SDK and by the function's client.

Canonical request: six lines joined by ``\\n``: method; URI (percent-decoded, each segment
re-encoded with only ``A-Za-z0-9_.-~`` kept, a trailing ``/`` added); query pairs sorted and
encoded the same way; one ``name:value`` line per signed header (values trimmed) and an empty
line; the signed header names joined by ``;``; the body's SHA-256 (of ``b""`` for no body, or
the ``X-Sdk-Content-Sha256`` header's value when present). Signed: ``SDK-HMAC-SHA256``, the
``X-Sdk-Date`` value and the canonical request's SHA-256, one per line, HMAC-SHA256 with the
secret key.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping, Sequence
from urllib.parse import quote, unquote

ALGORITHM = "SDK-HMAC-SHA256"
DATE_FORMAT = "%Y%m%dT%H%M%SZ"
_EMPTY_BODY_SHA256 = hashlib.sha256(b"").hexdigest()


def canonical_request(
    method: str,
    raw_path: str,
    query_pairs: Iterable[tuple[str, str]],
    headers: Mapping[str, str],
    signed_names: Sequence[str],
    body: bytes,
) -> str:
    """``headers`` must look names up case-insensitively (the simulator's ``Headers``)."""
    header_lines = "".join(f"{name}:{headers[name].strip()}\n" for name in signed_names)
    return "\n".join(
        [
            method.upper(),
            _uri(raw_path),
            _query(query_pairs),
            header_lines,
            ";".join(signed_names),
            _payload_hash(body, headers.get("X-Sdk-Content-Sha256")),
        ]
    )


def sign(secret_key: str, sdk_date: str, canonical: str) -> str:
    """The hex signature of ``canonical`` for the ``X-Sdk-Date`` value ``sdk_date``."""
    digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    to_sign = f"{ALGORITHM}\n{sdk_date}\n{digest}"
    return hmac.new(secret_key.encode("utf-8"), to_sign.encode("utf-8"), "sha256").hexdigest()


def _encode(text: str) -> str:
    return quote(text, safe="~")


def _uri(raw_path: str) -> str:
    uri = "/".join(_encode(segment) for segment in unquote(raw_path).split("/"))
    return uri if uri.endswith("/") else uri + "/"


def _query(pairs: Iterable[tuple[str, str]]) -> str:
    return "&".join(f"{_encode(key)}={_encode(value)}" for key, value in sorted(pairs))


def _payload_hash(body: bytes, content_sha256: str | None) -> str:
    if not body:
        return _EMPTY_BODY_SHA256
    if content_sha256:
        return content_sha256
    return hashlib.sha256(body).hexdigest()
