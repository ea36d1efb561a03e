"""Approval tokens (SPEC section 8): signing, every refusal, rotation, expiry, size; the page."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cancel_handler import approvals as a
from cancel_handler.approval_page import (
    CONTENT_SECURITY_POLICY,
    PAGE_HEADERS,
    approval_link,
    cross_site_refusal,
    render_approval_page,
    render_refusal_page,
    render_results_page,
)

PROJECT = "0123456789abcdef0123456789abcdef"
KEY_A = b"a" * 16 + b"first-approval-key-0123456789"
KEY_B = b"b" * 16 + b"second-approval-key-987654321"
RING = a.KeyRing.from_secrets([KEY_A])
NOW = 1_800_000_000.0
TTL = 86400
B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
MAX_BODY_BYTES = 65536


def ids(n: int, seed: int = 0) -> list[str]:
    digests = (hashlib.sha256(f"{seed}/{i}".encode()).digest()[:16] for i in range(n))
    return [str(uuid.UUID(bytes=d, version=4)) for d in digests]


def proposal(jobs: list[a.ProposedJob] | None = None, **changes: object) -> a.Proposal:
    fields: dict[str, object] = {
        "budget": a.BudgetFigures("dli-monthly", 1043.2, 1000.0, "EUR"),
        "dry_run": False,
    }
    fields.update(changes)
    return a.new_proposal(
        PROJECT,
        jobs if jobs is not None else [a.ProposedJob(i, "sql", "etl", 3700) for i in ids(3)],
        "1234567890",
        now=NOW,
        ttl_s=TTL,
        **fields,  # type: ignore[arg-type]
    )


TOKEN = a.sign(proposal(), RING)


def raw(token: str) -> bytearray:
    return bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))


def text(data: bytes) -> str:
    return base64.urlsafe_b64encode(bytes(data)).rstrip(b"=").decode()


def refused(token: str, ring: a.KeyRing = RING, now: float = NOW) -> a.ApprovalRefused:
    with pytest.raises(a.ApprovalRefused) as caught:
        a.verify(token, ring, now)
    return caught.value


# -- the plan survives its token --------------------------------------------------------------


def test_a_token_carries_the_whole_plan() -> None:
    jobs = [
        a.ProposedJob(ids(1)[0], "sql", "etl", 3700),
        a.ProposedJob(ids(1, 1)[0], "sql", None, None),
        a.ProposedJob(ids(1, 2)[0], "spark", "batch", 0),
        a.ProposedJob("9223372036854775807", "flink", "stream", 12),
        a.ProposedJob("7D1B4F60-2222-4333-8444-A55566667777", "spark"),  # kept as written
    ]
    plan = proposal(jobs, dry_run=True)
    assert a.verify(a.sign(plan, RING), RING, NOW) == plan
    assert plan.expires_at == int(NOW) + TTL


def test_a_plan_without_budget_figures() -> None:
    plan = proposal(budget=None)
    assert a.verify(a.sign(plan, RING), RING, NOW).budget is None


_job = st.builds(
    a.ProposedJob,
    job_id=st.uuids().map(str),
    kind=st.sampled_from(["sql", "spark"]),
    queue_name=st.one_of(st.none(), st.from_regex(r"[a-z][a-z0-9_]{0,20}", fullmatch=True)),
    runtime_s=st.one_of(st.none(), st.integers(0, 10**9)),
)
_flink_job = st.builds(
    a.ProposedJob,
    job_id=st.integers(1, 2**63 - 1).map(str),
    kind=st.just("flink"),
    queue_name=st.none(),
    runtime_s=st.none(),
)
_budget = st.one_of(
    st.none(),
    st.builds(
        a.BudgetFigures,
        name=st.one_of(st.none(), st.text(min_size=1, max_size=40)),
        cost=st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False)),
        amount=st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False)),
        currency=st.one_of(st.none(), st.sampled_from(["EUR", "USD", "CNY"])),
    ),
)


@settings(max_examples=150, deadline=None)
@given(
    jobs=st.lists(st.one_of(_job, _flink_job), min_size=1, max_size=30),
    budget=_budget,
    dry_run=st.booleans(),
    source=st.from_regex(r"[\x21-\x7e]{1,200}", fullmatch=True),
    ttl=st.integers(1, 10**7),
)
def test_any_plan_survives_signing(
    jobs: list[a.ProposedJob], budget: a.BudgetFigures | None, dry_run: bool, source: str, ttl: int
) -> None:
    plan = a.new_proposal(PROJECT, jobs, source, now=NOW, ttl_s=ttl, budget=budget, dry_run=dry_run)
    assert a.verify(a.sign(plan, RING), RING, NOW) == plan


def test_a_plan_that_cannot_be_signed_exactly_is_refused_at_signing() -> None:
    with pytest.raises(ValueError, match="at least one job"):
        a.sign(proposal([]), RING)
    with pytest.raises(ValueError, match="project_id"):
        a.sign(
            a.new_proposal(PROJECT.upper(), [a.ProposedJob(ids(1)[0])], "e", now=NOW, ttl_s=1), RING
        )
    with pytest.raises(ValueError, match="longer than 255"):
        a.sign(
            a.new_proposal(PROJECT, [a.ProposedJob(ids(1)[0])], "e" * 300, now=NOW, ttl_s=1), RING
        )


# -- every change is refused, and the refusal says which ----------------------------------------


def test_every_single_character_change_is_refused() -> None:
    """Exhaustive over one token: each character replaced by each other one, each removed,
    and each possible character inserted at each place."""
    small = a.sign(proposal([a.ProposedJob(ids(1)[0], "sql", "etl", 60)]), RING)
    variants: set[str] = set()
    for i in range(len(small)):
        variants.update(small[:i] + c + small[i + 1 :] for c in B64URL if c != small[i])
        variants.add(small[:i] + small[i + 1 :])
    for i in range(len(small) + 1):
        variants.update(small[:i] + c + small[i:] for c in B64URL + "=. ")
    variants.discard(small)
    accepted = []
    for variant in variants:
        try:
            a.verify(variant, RING, NOW)
        except a.ApprovalRefused:
            continue
        accepted.append(variant)
    assert accepted == []
    assert len(variants) > 20_000


_mutation = st.one_of(
    st.tuples(st.just("replace"), st.integers(0), st.characters()),
    st.tuples(st.just("delete"), st.integers(0), st.just("")),
    st.tuples(st.just("insert"), st.integers(0), st.characters()),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutations=st.lists(_mutation, min_size=1, max_size=6))
def test_any_mutation_of_a_valid_token_is_refused(mutations: list[tuple[str, int, str]]) -> None:
    token = TOKEN
    for op, where, char in mutations:
        i = where % (len(token) + (op == "insert"))
        if op == "replace":
            token = token[:i] + char + token[i + 1 :]
        elif op == "delete":
            token = token[:i] + token[i + 1 :]
        else:
            token = token[:i] + char + token[i:]
    if token == TOKEN:
        return  # the mutations undid each other
    with pytest.raises(a.ApprovalRefused):
        a.verify(token, RING, NOW)


@settings(max_examples=300, deadline=None)
@given(region=st.sampled_from(["version", "key_id", "plan", "signature"]), data=st.data())
def test_any_changed_byte_is_refused_with_its_reason(region: str, data: st.DataObject) -> None:
    """Changes of the signed bytes themselves (re-encoded as valid base64url text)."""
    blob = raw(TOKEN)
    spans = {
        "version": (0, 1),
        "key_id": (1, 9),
        "plan": (9, len(blob) - 32),
        "signature": (len(blob) - 32, len(blob)),
    }
    start, end = spans[region]
    i = data.draw(st.integers(start, end - 1))
    blob[i] ^= data.draw(st.integers(1, 255))
    problem = refused(text(blob)).problem
    expected = {
        "version": "malformed",
        "key_id": "unknown_key",
        "plan": "tampered",
        "signature": "tampered",
    }
    assert problem == expected[region]


def test_a_plan_changed_and_re_signed_with_another_key_is_refused() -> None:
    forged = a.sign(proposal([a.ProposedJob(ids(1, 9)[0])]), a.KeyRing.from_secrets([KEY_B]))
    error = refused(forged)
    assert isinstance(error, a.UnknownKey)
    assert a.key_id(KEY_B).hex() in error.message


def test_a_signature_from_another_key_under_the_right_key_id_is_tampered() -> None:
    blob = raw(a.sign(proposal(), a.KeyRing.from_secrets([KEY_B])))
    blob[1:9] = a.key_id(KEY_A)
    assert isinstance(refused(text(blob)), a.TokenTampered)


@pytest.mark.parametrize(
    ("token", "why"),
    [
        ("", "empty"),
        (TOKEN + "=", "not base64url"),
        (TOKEN + "==", "not base64url"),
        (" " + TOKEN, "not base64url"),
        (TOKEN.replace("-", "+").replace("_", "/"), "not base64url"),
        ("AQ", "too short"),
        (text(b"\x02" + bytes(raw(TOKEN))[1:]), "unknown token version 2"),
        ("A" * (a.MAX_TOKEN_CHARS + 1), "longer than"),
        (TOKEN + "é", "not base64url"),
    ],
)
def test_malformed_tokens_say_so(token: str, why: str) -> None:
    error = refused(token)
    assert isinstance(error, a.TokenMalformed)
    assert why in error.message


def test_another_spelling_of_the_same_bytes_is_refused() -> None:
    """The last character's unused low bits: base64 decoders ignore them, this one does not."""
    for source in ("e", "ee"):  # one of them leaves 4 bits, the other 2 bits unused
        plan = a.new_proposal(PROJECT, [a.ProposedJob(ids(1)[0])], source, now=NOW, ttl_s=TTL)
        token = a.sign(plan, RING)
        assert len(token) % 4 in (2, 3)
        last = B64URL.index(token[-1])
        assert last & 1 == 0
        other = token[:-1] + B64URL[last | 1]
        assert raw(other) == raw(token)  # a lenient decoder would accept it
        assert "canonical" in refused(other).message


def test_a_token_that_is_not_a_string_is_malformed() -> None:
    assert isinstance(refused(None), a.TokenMalformed)  # type: ignore[arg-type]


# -- expiry, with an injected clock --------------------------------------------------------------


def test_a_token_is_valid_until_its_expiry_and_not_a_second_longer() -> None:
    plan = a.verify(TOKEN, RING, NOW)
    assert a.verify(TOKEN, RING, plan.expires_at - 0.001) == plan
    error = refused(TOKEN, now=plan.expires_at)
    assert isinstance(error, a.TokenExpired)
    assert error.proposal == plan  # authentic: the page may show what it was
    assert "expired at 2027-01-16 08:00:00 UTC" in error.message


def test_ttl_bounds_the_life() -> None:
    plan = a.new_proposal(PROJECT, [a.ProposedJob(ids(1)[0])], "e", now=NOW, ttl_s=60)
    short = a.sign(plan, RING)
    a.verify(short, RING, NOW + 59)
    assert refused(short, now=NOW + 60).problem == "expired"


def test_an_expired_token_that_was_also_changed_is_tampered() -> None:
    blob = raw(TOKEN)
    blob[20] ^= 1
    assert refused(text(blob), now=NOW + 10 * TTL).problem == "tampered"


# -- keys and rotation ---------------------------------------------------------------------------


def test_rotation_keeps_old_tokens_valid_and_signs_with_the_new_key() -> None:
    rotated = a.parse_key_file(KEY_B + b"\n" + KEY_A + b"\n")
    assert a.verify(TOKEN, rotated, NOW) == a.verify(TOKEN, RING, NOW)
    fresh = a.sign(proposal(), rotated)
    assert bytes(raw(fresh)[1:9]) == a.key_id(KEY_B)
    assert a.token_key_id(fresh) == a.key_id(KEY_B).hex()
    a.verify(fresh, rotated, NOW)
    assert refused(fresh).problem == "unknown_key"  # the old ring never held KEY_B
    retired = a.parse_key_file(KEY_B + b"\n")
    assert refused(TOKEN, retired).problem == "unknown_key"


def test_key_file_lines_are_stripped_and_blank_lines_skipped() -> None:
    ring = a.parse_key_file(b"\n  " + KEY_B + b" \r\n\n\t" + KEY_A + b"\r\n\n")
    assert [k.secret for k in ring.keys] == [KEY_B, KEY_A]
    assert ring.signing.key_id == a.key_id(KEY_B)


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"", "holds no key"),
        (b"\n \n", "holds no key"),
        (b"x" * 31, "key 1 is 31 bytes long; at least 32 needed"),
        (KEY_A + b"\n" + b"short-key\n", "key 2 is 9 bytes long"),
    ],
)
def test_malformed_key_files_are_refused_without_showing_a_key(content: bytes, why: str) -> None:
    with pytest.raises(a.KeyFileError) as caught:
        a.parse_key_file(content)
    assert why in str(caught.value)
    assert "short-key" not in str(caught.value) and KEY_A.decode() not in str(caught.value)


def test_load_key_file_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(a.KeyFileError, match=f"APPROVAL_KEY_FILE {missing} unreadable"):
        a.load_key_file(str(missing))
    short = tmp_path / "short"
    short.write_bytes(b"tiny\n")
    with pytest.raises(a.KeyFileError, match=f"APPROVAL_KEY_FILE {short} key 1 is 4 bytes"):
        a.load_key_file(str(short))


def test_key_file_is_read_again_after_a_rotation(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_bytes(KEY_A + b"\n")
    keys = a.KeyFile(str(path))
    first = keys.ring()
    assert keys.ring() is first  # unchanged file: not read again
    path.write_bytes(KEY_B + b"\n" + KEY_A + b"\n")
    os.utime(path, ns=(10**18, 10**18))  # a different mtime even on a coarse clock
    assert keys.ring().signing.key_id == a.key_id(KEY_B)
    path.unlink()
    with pytest.raises(a.KeyFileError, match="unreadable"):
        keys.ring()


def test_keys_never_show_their_secret() -> None:
    shown = repr(RING) + str(RING.signing) + repr(RING.keys)
    assert KEY_A.decode() not in shown and "**********" in shown


def test_key_ids_are_short_and_distinct() -> None:
    assert len(a.key_id(KEY_A)) == 8 and a.key_id(KEY_A) != a.key_id(KEY_B)


# -- size ----------------------------------------------------------------------------------------


def test_a_plan_of_1000_jobs_approves_in_one_message() -> None:
    jobs = [a.ProposedJob(i, "sql", f"queue_{n % 7}", 3600 + n) for n, i in enumerate(ids(1000))]
    token = a.sign(proposal(jobs), RING)
    body = json.dumps({"event_type": "budget-exceeded", "approve": token}).encode()
    assert len(body) < MAX_BODY_BYTES // 2  # 16 bytes per UUID, not 36 characters
    assert a.verify(token, RING, NOW).jobs == tuple(jobs)


def test_upper_case_uuids_are_packed_too() -> None:
    lower = a.sign(proposal([a.ProposedJob(i) for i in ids(10)]), RING)
    upper = a.sign(proposal([a.ProposedJob(i.upper()) for i in ids(10)]), RING)
    assert len(upper) == len(lower)
    assert a.verify(upper, RING, NOW).jobs[0].job_id == ids(1)[0].upper()


def test_a_plan_of_1000_jobs_with_text_ids_still_fits() -> None:
    """The least compact case: ids in mixed case are stored as text (upper-case UUIDs still
    take 16 bytes); 20 queues with the longest names DLI allows."""
    jobs = [
        a.ProposedJob("A" + i[1:].lower(), "spark", f"q{n % 20:02}" + "q" * 125)
        for n, i in enumerate(ids(1000))
    ]
    assert all(a._pack_id(job)[0] == a._TEXT for job in jobs)
    token = a.sign(proposal(jobs), RING)
    body = json.dumps({"event_type": "budget-exceeded", "approve": token}).encode()
    assert len(body) < MAX_BODY_BYTES
    assert a.verify(token, RING, NOW).jobs == tuple(jobs)


# -- the form proof ------------------------------------------------------------------------------


def test_the_form_proof_belongs_to_one_token_and_its_key() -> None:
    proof = a.form_proof(TOKEN, RING)
    assert proof is not None and a.check_form_proof(TOKEN, proof, RING)
    other = a.sign(proposal([a.ProposedJob(ids(1, 5)[0])]), RING)
    assert not a.check_form_proof(other, proof, RING)
    assert not a.check_form_proof(TOKEN, proof[:-1] + ("A" if proof[-1] != "A" else "B"), RING)
    assert not a.check_form_proof(TOKEN, "", RING)
    assert proof != a.form_proof(TOKEN, a.parse_key_file(KEY_A + b"x"))  # other key, other proof
    assert a.form_proof("garbage", RING) is None
    assert a.form_proof(TOKEN, a.parse_key_file(KEY_B)) is None  # unknown key: no form at all
    assert proof not in TOKEN


# -- the page ------------------------------------------------------------------------------------


def page(token: str, now: float = NOW, ring: a.KeyRing = RING) -> str:
    return render_approval_page(
        a.check(token, ring, now), token=token, proof=a.form_proof(token, ring), now=now
    )


def test_the_page_of_a_valid_token_shows_the_plan_and_the_form() -> None:
    jobs = [
        a.ProposedJob(ids(1)[0], "sql", "etl", 7500),
        a.ProposedJob("42", "flink", None, None),
    ]
    token = a.sign(proposal(jobs), RING)
    html = page(token, now=NOW + 3600)
    assert "Approve cancelling 2 DLI jobs" in html
    assert PROJECT in html and "1234567890" in html
    assert f"<code>{ids(1)[0]}</code></td><td>sql</td><td>etl</td><td>2 h 05 min</td>" in html
    assert "<code>42</code></td><td>flink</td><td>-</td><td>-</td>" in html
    assert "dli-monthly cost 1,043.2 EUR of 1,000 EUR (104%)" in html
    assert "Valid</strong> until 2027-01-16 08:00:00 UTC (23 h 00 min from now)" in html
    assert '<form method="post" id="approve-form">' in html
    assert f'name="approve" value="{token}"' in html
    assert f'name="confirm" value="{a.form_proof(token, RING)}"' in html
    assert ">Cancel 2 DLI jobs</button>" in html


@pytest.mark.parametrize(
    ("mangle", "problem", "shows_plan"),
    [
        (lambda t: t[:40] + ("A" if t[40] != "A" else "B") + t[41:], "tampered", False),
        (lambda t: "not a token", "malformed", False),
        (lambda t: a.sign(proposal(), a.parse_key_file(KEY_B)), "unknown_key", False),
    ],
)
def test_the_page_of_a_refused_token_says_why_and_has_no_button(
    mangle: object, problem: str, shows_plan: bool
) -> None:
    token = mangle(TOKEN)  # type: ignore[operator]
    html = page(token)
    assert f'data-problem="{problem}"' in html
    assert "<form" not in html and "<button" not in html and "confirm" not in html
    assert (PROJECT in html) is shows_plan
    assert "This approval link cannot be used" in html


def test_the_page_of_an_expired_token_shows_the_plan_but_no_button() -> None:
    html = page(TOKEN, now=NOW + TTL)
    assert 'data-problem="expired"' in html and "has expired" in html
    assert PROJECT in html and ids(3)[0] in html
    assert "<form" not in html and "<button" not in html


def test_the_page_of_a_dry_run_proposal_says_so() -> None:
    html = page(a.sign(proposal(dry_run=True), RING))
    assert "approving calls no cancel API" in html and "(dry run)</button>" in html


def test_every_value_on_the_page_is_escaped() -> None:
    hostile = '<script>alert("x")</script>&"\''
    plan = a.new_proposal(
        PROJECT,
        [a.ProposedJob('"><img src=x onerror=alert(1)>', "spark", None, 5)],
        "e",
        now=NOW,
        ttl_s=TTL,
        budget=a.BudgetFigures(hostile, 1.0, 2.0, hostile),
    )
    html = page(a.sign(plan, RING))
    assert "<script" not in html and "<img" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&quot;&#x27;" in html
    assert "&quot;&gt;&lt;img src=x onerror=alert(1)&gt;" in html
    results = render_results_page(
        [_Row(hostile, "sql", "cancelled", hostile)]  # type: ignore[list-item]
    )
    assert "<script" not in results
    assert "<script" not in render_refusal_page(hostile)


class _Row:
    def __init__(self, job_id: str, job_kind: str, outcome: str, message: str) -> None:
        self.job_id, self.job_kind, self.outcome, self.message = job_id, job_kind, outcome, message


def test_the_results_page_lists_each_job_and_counts_outcomes() -> None:
    rows = [
        _Row("j1", "sql", "cancelled", ""),
        _Row("j2", "sql", "cancelled", ""),
        _Row("j3", "sql", "already_finished", "job is FINISHED"),
    ]
    html = render_results_page(rows)  # type: ignore[arg-type]
    assert '<p id="summary">2 cancelled, 1 already_finished</p>' in html
    assert html.count('class="outcome"') == 3


def test_the_pages_load_nothing_and_their_only_style_is_allowed_by_hash() -> None:
    assert PAGE_HEADERS["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert "default-src 'none'" in CONTENT_SECURITY_POLICY
    assert "form-action 'self'" in CONTENT_SECURITY_POLICY
    assert "frame-ancestors 'none'" in CONTENT_SECURITY_POLICY
    assert PAGE_HEADERS["Referrer-Policy"] == "same-origin"
    for html in (page(TOKEN), page("x"), render_refusal_page("no"), render_results_page([])):
        styles = re.findall(r"<style>(.*?)</style>", html, re.DOTALL)
        assert len(styles) == 1
        digest = base64.b64encode(hashlib.sha256(styles[0].encode()).digest()).decode()
        assert f"style-src 'sha256-{digest}'" in CONTENT_SECURITY_POLICY
        assert "<script" not in html and "src=" not in html and "href=" not in html
        assert " style=" not in html  # inline attributes would need 'unsafe-inline'


def test_the_link_is_the_base_url_with_the_token_in_its_query() -> None:
    assert approval_link("https://x.run.app", "AQ") == "https://x.run.app/?approve=AQ"
    assert approval_link("https://h/fn", "AQ") == "https://h/fn?approve=AQ"
    assert approval_link("http://127.0.0.1:8080/", "AQ") == "http://127.0.0.1:8080/?approve=AQ"


# -- cross-site requests -------------------------------------------------------------------------

HOSTS = ["fn-abc.a.run.app"]


@pytest.mark.parametrize(
    ("origin", "fetch_site"),
    [
        (None, None),  # Workflows, curl, Pub/Sub push
        ("https://fn-abc.a.run.app", "same-origin"),
        ("https://FN-abc.a.run.app", None),
        (None, "none"),
    ],
)
def test_same_origin_and_non_browser_posts_pass(origin: str | None, fetch_site: str | None) -> None:
    assert cross_site_refusal(origin, fetch_site, HOSTS) is None


@pytest.mark.parametrize(
    ("origin", "fetch_site"),
    [
        ("https://evil.example", None),
        ("https://evil.example", "cross-site"),
        (None, "cross-site"),
        (None, "same-site"),
        ("null", None),
        ("https://fn-abc.a.run.app.evil.example", "same-origin"),
        ("https://fn-abc.a.run.app/path", None),
    ],
)
def test_posts_from_other_sites_are_refused(origin: str | None, fetch_site: str | None) -> None:
    assert "another site" in (cross_site_refusal(origin, fetch_site, HOSTS) or "")
