"""Signed, expiring plans for ``BUDGET_ACTION=propose`` (SPEC section 8).

A proposal is the plan of one budget event, handed to a person instead of being cancelled:
the project, its jobs (with kind, and the queue and runtime where the listing gave them, for
the approval page), the source event, the budget figures and an expiry. The token carries the
whole plan, so approving needs no store: whoever holds a valid token can approve exactly the
jobs in it, and nothing else.

Token (version 1), base64url without padding::

    version (1 byte) | key id (8) | body | HMAC-SHA256(key, DOMAIN | version | key id | body)

The key id is a hash of the key (``key_id``), so verification picks the key out of
``APPROVAL_KEY_FILE`` directly; the MAC covers every byte before it. The body is a packed
binary layout (``_encode_body``): SQL and Spark UUIDs take 16 bytes, Flink ids 8, consecutive
jobs of one kind and queue share one header. A plan of 1,000 jobs is a token of about 27 KB,
well under ``MAX_BODY_BYTES``. Only the standard library's ``hmac``/``hashlib`` is used; the
MAC is compared with ``hmac.compare_digest`` before any byte of the body is interpreted.

Any change to a token is refused: the text must be canonical base64url (no padding, no
alternative spelling of the same bytes), so a changed character always changes the signed
bytes, and the MAC catches every change of the signed bytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import os
import struct
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

Kind = Literal["sql", "spark", "flink"]
Problem = Literal["malformed", "unknown_key", "tampered", "expired"]

VERSION = 1
KEY_ID_BYTES = 8
MAC_BYTES = 32
MIN_KEY_BYTES = 32
MAX_TOKEN_CHARS = 200_000
MAX_TEXT_BYTES = 255
MAX_JOBS = 65_535
UNKNOWN_RUNTIME = 0xFFFF_FFFF

_DOMAIN = b"dli-cancel approval token\x00"
_FORM_DOMAIN = b"dli-cancel approval form\x00"
_KEY_ID_DOMAIN = b"dli-cancel approval key id\x00"
_B64URL = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
_KINDS: tuple[Kind, ...] = ("sql", "spark", "flink")
_FLAG_DRY_RUN = 0x01
_FLAG_BUDGET = 0x02
_FLAG_COST = 0x04
_FLAG_AMOUNT = 0x08
_KNOWN_FLAGS = _FLAG_DRY_RUN | _FLAG_BUDGET | _FLAG_COST | _FLAG_AMOUNT
_HEADER = struct.Struct(">BQQ16s")  # flags, issued_at, expires_at, project id
_JOB = struct.Struct(">BH")  # kind index | id form << 4, queue number
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_F64 = struct.Struct(">d")
_LOWER_HEX = frozenset("0123456789abcdef")


# -- the plan ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProposedJob:
    job_id: str
    kind: Kind = "sql"
    queue_name: str | None = None
    runtime_s: int | None = None  # how long it had run when proposed, where known


@dataclass(frozen=True)
class BudgetFigures:
    """What the approval page shows of the budget (each part where the event gave it)."""

    name: str | None = None
    cost: float | None = None
    amount: float | None = None
    currency: str | None = None


@dataclass(frozen=True)
class Proposal:
    project_id: str  # 32 lower-case hex characters
    jobs: tuple[ProposedJob, ...]
    source_event_id: str
    issued_at: int  # Unix seconds
    expires_at: int
    budget: BudgetFigures | None = None
    dry_run: bool = False


def new_proposal(
    project_id: str,
    jobs: Iterable[ProposedJob],
    source_event_id: str,
    *,
    now: float,
    ttl_s: int,
    budget: BudgetFigures | None = None,
    dry_run: bool = False,
) -> Proposal:
    """A proposal issued at ``now`` that expires ``ttl_s`` seconds later. Budget text is cut
    to what a token holds; non-finite figures are dropped."""
    issued = int(now)
    return Proposal(
        project_id=project_id,
        jobs=tuple(_fit_job(job) for job in jobs),
        source_event_id=source_event_id,
        issued_at=issued,
        expires_at=issued + ttl_s,
        budget=_fit_budget(budget) if budget else None,
        dry_run=dry_run,
    )


# -- keys -------------------------------------------------------------------------------------


class KeyFileError(ValueError):
    """``APPROVAL_KEY_FILE`` is missing, unreadable or malformed (the message shows no key)."""


@dataclass(frozen=True)
class ApprovalKey:
    key_id: bytes
    secret: bytes

    def __repr__(self) -> str:
        return f"ApprovalKey(key_id={self.key_id.hex()!r}, secret=**********)"

    __str__ = __repr__


def key_id(secret: bytes) -> bytes:
    """A short public name of a key: enough to find it, nothing to learn from it."""
    return hashlib.sha256(_KEY_ID_DOMAIN + secret).digest()[:KEY_ID_BYTES]


@dataclass(frozen=True)
class KeyRing:
    """The keys of ``APPROVAL_KEY_FILE`` in file order: the first signs, every one verifies."""

    keys: tuple[ApprovalKey, ...]

    @classmethod
    def from_secrets(cls, secrets: Sequence[bytes]) -> KeyRing:
        if not secrets:
            raise KeyFileError("holds no key")
        for number, secret in enumerate(secrets, start=1):
            if len(secret) < MIN_KEY_BYTES:
                raise KeyFileError(
                    f"key {number} is {len(secret)} bytes long; at least {MIN_KEY_BYTES} needed"
                )
        return cls(tuple(ApprovalKey(key_id(s), s) for s in secrets))

    @property
    def signing(self) -> ApprovalKey:
        return self.keys[0]

    def find(self, wanted: bytes) -> ApprovalKey | None:
        for key in self.keys:
            if hmac.compare_digest(key.key_id, wanted):
                return key
        return None


def parse_key_file(content: bytes) -> KeyRing:
    """One key per line, surrounding whitespace stripped; blank lines are skipped."""
    secrets = [line.strip() for line in content.split(b"\n")]
    return KeyRing.from_secrets([s for s in secrets if s])


def load_key_file(path: str) -> KeyRing:
    try:
        with open(path, "rb") as handle:
            content = handle.read()
    except OSError as error:
        raise KeyFileError(f"APPROVAL_KEY_FILE {path} unreadable: {error.strerror}") from None
    try:
        return parse_key_file(content)
    except KeyFileError as error:
        raise KeyFileError(f"APPROVAL_KEY_FILE {path} {error}") from None


class KeyFile:
    """The key ring of a mounted secret, read again when the file changes (a rotation)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._seen: tuple[int, int, int, int] | None = None
        self._ring: KeyRing | None = None

    def ring(self) -> KeyRing:
        """Raises ``KeyFileError`` while the file is missing or malformed."""
        try:
            info = os.stat(self.path)
        except OSError as error:
            raise KeyFileError(
                f"APPROVAL_KEY_FILE {self.path} unreadable: {error.strerror}"
            ) from None
        signature = (info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
        with self._lock:
            if self._ring is None or signature != self._seen:
                self._ring = load_key_file(self.path)
                self._seen = signature
            return self._ring


# -- refusals ---------------------------------------------------------------------------------


class ApprovalRefused(ValueError):
    """A token that approves nothing. ``problem`` says which of the four reasons; an expired
    token still carries its (authentic) ``proposal``, so the page can show what it was."""

    problem: Problem = "malformed"

    def __init__(self, message: str, proposal: Proposal | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.proposal = proposal


class TokenMalformed(ApprovalRefused):
    problem: Problem = "malformed"


class UnknownKey(ApprovalRefused):
    problem: Problem = "unknown_key"


class TokenTampered(ApprovalRefused):
    problem: Problem = "tampered"


class TokenExpired(ApprovalRefused):
    problem: Problem = "expired"


# -- signing and verifying --------------------------------------------------------------------


def sign(proposal: Proposal, ring: KeyRing) -> str:
    key = ring.signing
    signed = bytes([VERSION]) + key.key_id + _encode_body(proposal)
    return _b64encode(signed + _mac(key.secret, signed))


def verify(token: str, ring: KeyRing, now: float) -> Proposal:
    """The proposal of a valid, unexpired token; else ``ApprovalRefused`` saying why."""
    key, signed, mac = _split(token, ring)
    if not hmac.compare_digest(_mac(key.secret, signed), mac):
        raise TokenTampered(
            "approve: the token's signature does not match its content: "
            "the token was changed after it was signed"
        )
    try:
        proposal = _decode_body(signed[1 + KEY_ID_BYTES :])
    except _Truncated:
        raise TokenMalformed("approve: the signed plan cannot be read") from None
    if now >= proposal.expires_at:
        raise TokenExpired(
            f"approve: the token expired at {utc_text(proposal.expires_at)} "
            f"(issued {utc_text(proposal.issued_at)})",
            proposal,
        )
    return proposal


@dataclass(frozen=True)
class TokenCheck:
    """``verify``'s answer as data, for the approval page."""

    proposal: Proposal | None
    refusal: ApprovalRefused | None

    @property
    def valid(self) -> bool:
        return self.refusal is None and self.proposal is not None


def check(token: str, ring: KeyRing, now: float) -> TokenCheck:
    try:
        return TokenCheck(verify(token, ring, now), None)
    except ApprovalRefused as refused:
        return TokenCheck(refused.proposal, refused)


def form_proof(token: str, ring: KeyRing) -> str | None:
    """The value the approval page's form carries beside the token: a MAC of the token under
    the key that signed it. Only a page served by this function shows it, so a form on
    another site that knows a token still cannot post a valid approval (docs/approval.md)."""
    try:
        key, _, _ = _split(token, ring)
    except ApprovalRefused:
        return None
    return _b64encode(hmac.new(key.secret, _FORM_DOMAIN + token.encode(), "sha256").digest())


def check_form_proof(token: str, proof: str, ring: KeyRing) -> bool:
    expected = form_proof(token, ring)
    return expected is not None and hmac.compare_digest(expected.encode(), proof.encode())


def token_key_id(token: str) -> str | None:
    """The hex key id a token names (unverified), for logs; None when it cannot be read."""
    try:
        raw = _b64decode(token)
    except TokenMalformed:
        return None
    return raw[1 : 1 + KEY_ID_BYTES].hex() if len(raw) > KEY_ID_BYTES else None


def utc_text(seconds: int) -> str:
    try:
        moment = datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        return f"{seconds} (Unix time)"
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _mac(secret: bytes, signed: bytes) -> bytes:
    return hmac.new(secret, _DOMAIN + signed, "sha256").digest()


def _split(token: str, ring: KeyRing) -> tuple[ApprovalKey, bytes, bytes]:
    raw = _b64decode(token)
    if len(raw) < 1 + KEY_ID_BYTES + MAC_BYTES:
        raise TokenMalformed(f"approve: the token is too short to be signed ({len(raw)} bytes)")
    if raw[0] != VERSION:
        raise TokenMalformed(f"approve: unknown token version {raw[0]} (this function reads 1)")
    wanted = raw[1 : 1 + KEY_ID_BYTES]
    key = ring.find(wanted)
    if key is None:
        raise UnknownKey(
            f"approve: the token was signed with key {wanted.hex()}, which APPROVAL_KEY_FILE "
            "does not hold (a key rotated out, another deployment's key, or a changed token)"
        )
    return key, raw[:-MAC_BYTES], raw[-MAC_BYTES:]


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(token: str) -> bytes:
    """Strict base64url without padding: the alphabet only, and the one spelling that
    ``_b64encode`` gives (unused low bits of the last character zero)."""
    if not isinstance(token, str) or not token:
        raise TokenMalformed("approve: the token is empty or not a string")
    if len(token) > MAX_TOKEN_CHARS:
        raise TokenMalformed(f"approve: the token is longer than {MAX_TOKEN_CHARS} characters")
    encoded = token.encode("ascii", "replace")
    if not _B64URL.issuperset(encoded) or len(encoded) % 4 == 1:
        raise TokenMalformed("approve: the token is not base64url text")
    try:
        raw = base64.urlsafe_b64decode(encoded + b"=" * (-len(encoded) % 4))
    except (binascii.Error, ValueError):
        raise TokenMalformed("approve: the token is not base64url text") from None
    if _b64encode(raw) != token:
        raise TokenMalformed("approve: the token is not in its canonical base64url form")
    return raw


# -- the body layout --------------------------------------------------------------------------
#
#   header   flags u8 | issued_at u64 | expires_at u64 | project id 16 bytes (its 32 hex chars)
#   text     source event id
#   budget   (flag) name text | currency text | cost f64 (flag) | amount f64 (flag)
#   queues   count u16 | count x text (each queue name once)
#   jobs     count u16 | per job: form u8 (kind index | id form << 4) | queue u16 (0: unknown,
#            else 1 + its index) | id | runtime u32 (0xFFFFFFFF: unknown)
#   id       a 16-byte UUID (lower or upper case), a u64 Flink id, or text: whichever reads
#            back as exactly the same characters
#   text     length u8 | UTF-8 bytes

_LOWER_UUID, _UPPER_UUID, _NUMBER, _TEXT = range(4)


class _Truncated(Exception):
    pass


def _encode_body(p: Proposal) -> bytes:
    if not p.jobs:
        raise ValueError("a proposal needs at least one job")
    if len(p.jobs) > MAX_JOBS:
        raise ValueError(f"a proposal holds at most {MAX_JOBS} jobs")
    if len(p.project_id) != 32 or not _LOWER_HEX.issuperset(p.project_id):
        raise ValueError("project_id must be 32 lower-case hex characters")
    budget = p.budget
    flags = _FLAG_DRY_RUN if p.dry_run else 0
    if budget is not None:
        flags |= _FLAG_BUDGET
        flags |= _FLAG_COST if budget.cost is not None else 0
        flags |= _FLAG_AMOUNT if budget.amount is not None else 0
    parts = [
        _HEADER.pack(flags, p.issued_at, p.expires_at, bytes.fromhex(p.project_id)),
        _text(p.source_event_id),
    ]
    if budget is not None:
        parts += [_text(budget.name or ""), _text(budget.currency or "")]
        parts += [_F64.pack(_finite(v)) for v in (budget.cost, budget.amount) if v is not None]
    queues = list(dict.fromkeys(j.queue_name for j in p.jobs if j.queue_name is not None))
    number = {name: i + 1 for i, name in enumerate(queues)}
    parts.append(_U16.pack(len(queues)))
    parts += [_text(name) for name in queues]
    parts.append(_U16.pack(len(p.jobs)))
    parts += [_encode_job(job, number.get(job.queue_name or "", 0)) for job in p.jobs]
    body = b"".join(parts)
    if _decode_body(body) != p:
        raise ValueError("the proposal does not survive its encoding")
    return body


def _encode_job(job: ProposedJob, queue: int) -> bytes:
    if job.runtime_s is not None and not 0 <= job.runtime_s < UNKNOWN_RUNTIME:
        raise ValueError(f"runtime_s out of range: {job.runtime_s}")
    form, packed = _pack_id(job)
    runtime = UNKNOWN_RUNTIME if job.runtime_s is None else job.runtime_s
    head = _JOB.pack(_KINDS.index(job.kind) | form << 4, queue)
    return head + packed + _U32.pack(runtime)


def _pack_id(job: ProposedJob) -> tuple[int, bytes]:
    """The most compact form of the id that reads back as exactly the same text."""
    text = job.job_id
    if job.kind == "flink":
        if text.isascii() and text.isdigit() and str(int(text)) == text and int(text) < 2**64:
            return _NUMBER, _U64.pack(int(text))
    elif len(text) == 36 and [i for i, ch in enumerate(text) if ch == "-"] == [8, 13, 18, 23]:
        digits = text.replace("-", "")
        if _LOWER_HEX.issuperset(digits):
            return _LOWER_UUID, bytes.fromhex(digits)
        if _LOWER_HEX.issuperset(digits.lower()) and digits == digits.upper():
            return _UPPER_UUID, bytes.fromhex(digits)
    return _TEXT, _text(text)


def _read_id(r: _Reader, form: int) -> str:
    if form == _NUMBER:
        return str(r.u64())
    if form == _TEXT:
        return r.text()
    h = r.take(16).hex()
    text = f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
    return text.upper() if form == _UPPER_UUID else text


def _text(value: str) -> bytes:
    data = value.encode("utf-8")
    if len(data) > MAX_TEXT_BYTES:
        raise ValueError(f"text longer than {MAX_TEXT_BYTES} bytes: {value[:40]!r}...")
    return bytes([len(data)]) + data


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError("budget figures must be finite")
    return value


def _fit_job(job: ProposedJob) -> ProposedJob:
    if job.runtime_s is None or 0 <= job.runtime_s < UNKNOWN_RUNTIME:
        return job
    runtime = min(max(job.runtime_s, 0), UNKNOWN_RUNTIME - 1)
    return ProposedJob(job.job_id, job.kind, job.queue_name, runtime)


def _fit_budget(budget: BudgetFigures) -> BudgetFigures:
    def fit(text: str | None) -> str | None:
        if text is None:
            return None
        data = text.encode("utf-8")[:MAX_TEXT_BYTES]
        return data.decode("utf-8", "ignore")

    def finite(value: float | None) -> float | None:
        return value if value is not None and math.isfinite(value) else None

    return BudgetFigures(
        name=fit(budget.name) or None,
        cost=finite(budget.cost),
        amount=finite(budget.amount),
        currency=fit(budget.currency) or None,
    )


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0

    def take(self, size: int) -> bytes:
        end = self.at + size
        if end > len(self.data):
            raise _Truncated
        chunk = self.data[self.at : end]
        self.at = end
        return chunk

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def u32(self) -> int:
        return int.from_bytes(self.take(4), "big")

    def u64(self) -> int:
        return int.from_bytes(self.take(8), "big")

    def f64(self) -> float:
        value: float = _F64.unpack(self.take(8))[0]
        return value

    def text(self) -> str:
        try:
            return self.take(self.u8()).decode("utf-8")
        except UnicodeDecodeError:
            raise _Truncated from None


def _decode_body(body: bytes) -> Proposal:
    """Raises ``_Truncated`` for bytes that are not a body ``_encode_body`` wrote."""
    r = _Reader(body)
    flags, issued, expires, project = r.u8(), r.u64(), r.u64(), r.take(16)
    if flags & ~_KNOWN_FLAGS:
        raise _Truncated
    source = r.text()
    budget = None
    if flags & _FLAG_BUDGET:
        name, currency = r.text(), r.text()
        cost = r.f64() if flags & _FLAG_COST else None
        amount = r.f64() if flags & _FLAG_AMOUNT else None
        budget = BudgetFigures(name or None, cost, amount, currency or None)
    queues = [r.text() for _ in range(r.u16())]
    jobs = [_decode_job(r, queues) for _ in range(r.u16())]
    if r.at != len(body) or not jobs:
        raise _Truncated
    return Proposal(
        project_id=project.hex(),
        jobs=tuple(jobs),
        source_event_id=source,
        issued_at=issued,
        expires_at=expires,
        budget=budget,
        dry_run=bool(flags & _FLAG_DRY_RUN),
    )


def _decode_job(r: _Reader, queues: list[str]) -> ProposedJob:
    code, queue = r.u8(), r.u16()
    kind, form = code & 0x0F, code >> 4
    if kind >= len(_KINDS) or form > _TEXT or queue > len(queues):
        raise _Truncated
    job_id = _read_id(r, form)
    runtime = r.u32()
    return ProposedJob(
        job_id,
        _KINDS[kind],
        queues[queue - 1] if queue else None,
        None if runtime == UNKNOWN_RUNTIME else runtime,
    )
