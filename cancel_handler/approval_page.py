"""The approval page (SPEC section 8): HTML built from a token alone, no store, no script.

Pure functions: a checked token -> the page; the results of an approval -> the answer page.
Every value that came from a token or a result passes through ``html.escape``. The pages load
nothing (``PAGE_HEADERS``: ``default-src 'none'``; the one inline style block is allowed by
its hash; forms may post only to this function), cannot be framed, and send no referrer, so
the token in the address never goes to another site. The form's cross-site forgery defence (the
``confirm`` field and the ``Origin`` / ``Sec-Fetch-Site`` check) is described in
docs/approval.md.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Collection, Sequence
from html import escape
from typing import Protocol

from cancel_handler.approvals import BudgetFigures, Proposal, TokenCheck, utc_text

TOKEN_FIELD = "approve"
PROOF_FIELD = "confirm"

_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:60rem;padding:0 1rem;"
    "color:#1b1b1b}"
    "h1{font-size:1.5rem}"
    "table{border-collapse:collapse;margin:1rem 0}"
    "th,td{border-bottom:1px solid #ddd;padding:.3rem .8rem;text-align:left;"
    "vertical-align:top}"
    "code{font-size:.9em}"
    ".status{padding:.8rem 1rem;border-radius:.3rem;margin:1rem 0}"
    ".valid{background:#e8f4ea;border:1px solid #7cb48a}"
    ".refused{background:#fbeaea;border:1px solid #d28b8b}"
    "button{font-size:1.1rem;padding:.6rem 1.4rem;background:#b3261e;color:#fff;border:0;"
    "border-radius:.3rem;cursor:pointer}"
)
_STYLE_HASH = base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()

CONTENT_SECURITY_POLICY = (
    f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; form-action 'self'; "
    "base-uri 'none'; frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "Content-Type": "text/html; charset=utf-8",
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",  # not no-referrer: its form posts say Origin: null
    "Cache-Control": "no-store",
}

_WHY = {
    "malformed": "This is not an approval link that this function issued (it cannot be read).",
    "unknown_key": (
        "This link was signed with a key this function does not hold: the key was rotated "
        "out, the link belongs to another deployment, or the link was changed."
    ),
    "tampered": "This link was changed after it was signed: it approves nothing.",
    "expired": "This approval has expired: ask for a new proposal (the next budget event).",
}


class ResultRow(Protocol):
    """What the answer page shows of a result event."""

    @property
    def job_id(self) -> str: ...
    @property
    def job_kind(self) -> str: ...
    @property
    def outcome(self) -> str: ...
    @property
    def message(self) -> str: ...


def approval_link(base_url: str, token: str) -> str:
    """The page's address for ``token`` (``APPROVAL_BASE_URL?approve=TOKEN``; base64url needs
    no escaping in a query). A base without a path gets ``/``: ``https://host/?approve=``."""
    path = base_url.split("://", 1)[-1].partition("/")[1]
    return f"{base_url}{'' if path else '/'}?{TOKEN_FIELD}={token}"


def render_approval_page(check: TokenCheck, *, token: str, proof: str | None, now: float) -> str:
    """The plan of ``check`` and, for a valid token with its form ``proof``, the Approve
    form; otherwise why the token approves nothing, and no form."""
    proposal = check.proposal
    if check.valid and proposal is not None:
        count = len(proposal.jobs)
        title = f"Approve cancelling {_jobs(count)}"
        status = (
            '<div class="status valid"><strong>Valid</strong> until '
            f"{_e(utc_text(proposal.expires_at))} ({_e(_span(proposal.expires_at - now))} "
            "from now).</div>"
        )
    else:
        title = "This approval link cannot be used"
        problem = check.refusal.problem if check.refusal else "malformed"
        detail = check.refusal.message if check.refusal else ""
        status = (
            f'<div class="status refused" id="refusal" data-problem="{_e(problem)}">'
            f"<strong>Not valid.</strong> {_e(_WHY[problem])}"
            f"<br><small>{_e(detail)}</small></div>"
        )
    parts = [f"<h1>{_e(title)}</h1>", status]
    if proposal is not None:
        parts += [_summary(proposal), _jobs_table(proposal)]
        if check.valid and proof:
            parts.append(_form(proposal, token, proof))
    return _document(title, "".join(parts))


def render_results_page(results: Sequence[ResultRow], *, dry_run: bool = False) -> str:
    """The answer to an approving POST: each job and what happened to it."""
    counts: dict[str, int] = {}
    for result in results:
        counts[result.outcome] = counts.get(result.outcome, 0) + 1
    summary = ", ".join(f"{n} {outcome}" for outcome, n in counts.items()) or "no result"
    title = "Approved (dry run)" if dry_run else "Approved"
    rows = "".join(
        f"<tr><td><code>{_e(r.job_id or '-')}</code></td><td>{_e(r.job_kind)}</td>"
        f'<td class="outcome">{_e(r.outcome)}</td><td>{_e(r.message)}</td></tr>'
        for r in results
    )
    body = (
        f'<h1>{_e(title)}</h1><p id="summary">{_e(summary)}</p>'
        '<table id="results"><thead><tr><th>Job</th><th>Kind</th><th>Outcome</th>'
        f"<th>Message</th></tr></thead><tbody>{rows}</tbody></table>"
    )
    return _document(title, body)


def render_refusal_page(message: str) -> str:
    """The answer to an approving POST that was not accepted (nothing was cancelled)."""
    title = "Approval not accepted"
    body = (
        f"<h1>{_e(title)}</h1>"
        f'<div class="status refused" id="refusal"><strong>Nothing was cancelled.</strong> '
        f"{_e(message)}</div>"
    )
    return _document(title, body)


def render_retry_page(why: str) -> str:
    """The answer when the approval could not be completed now; pressing again is safe."""
    title = "Try again later"
    body = (
        f"<h1>{_e(title)}</h1>"
        f'<div class="status refused" id="retry">{_e(why)} Approving again later is safe: '
        "jobs already cancelled are reported as already finished.</div>"
    )
    return _document(title, body)


def cross_site_refusal(
    origin: str | None, fetch_site: str | None, hosts: Collection[str]
) -> str | None:
    """Why a POST looks sent by a page of another site, or None.

    Browsers label every request with ``Sec-Fetch-Site`` and a POST with ``Origin``; a
    pipeline (Workflows, curl, Pub/Sub push) sends neither. So a POST whose ``Sec-Fetch-Site``
    is anything but ``same-origin`` or ``none`` (typed, bookmarked), or whose ``Origin`` names
    a host not in ``hosts`` (the ``Host`` it was sent to, and ``APPROVAL_BASE_URL``'s), came
    from another site's page and is refused.
    """
    site = (fetch_site or "").strip().lower()
    if site and site not in ("same-origin", "none"):
        return f"the request came from another site (Sec-Fetch-Site: {site[:20]})"
    if origin is not None and origin.strip():
        sent_from = _host_of(origin.strip())
        if sent_from is None or sent_from not in {h.strip().lower() for h in hosts}:
            return "the request came from another site (its Origin is not this function)"
    return None


def _host_of(origin: str) -> str | None:
    """``https://host:port`` -> ``host:port`` (lower case); None for ``null`` and the like."""
    scheme, sep, rest = origin.partition("://")
    if not sep or scheme.lower() not in ("http", "https") or not rest or "/" in rest:
        return None
    return rest.lower()


def _document(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="referrer" content="same-origin">'
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head>"
        f"<body>{body}</body></html>"
    )


def _summary(p: Proposal) -> str:
    rows = [
        ("Project", f"<code>{_e(p.project_id)}</code>"),
        ("Jobs", _e(str(len(p.jobs)))),
        ("Proposed", _e(utc_text(p.issued_at))),
        ("Expires", _e(utc_text(p.expires_at))),
        ("Source event", f"<code>{_e(p.source_event_id)}</code>"),
    ]
    if p.budget is not None:
        rows.append(("Budget", _e(_budget_text(p.budget))))
    if p.dry_run:
        rows.append(("Dry run", "yes: approving calls no cancel API"))
    cells = "".join(f"<tr><th>{name}</th><td>{value}</td></tr>" for name, value in rows)
    return f'<table id="plan">{cells}</table>'


def _jobs_table(p: Proposal) -> str:
    rows = "".join(
        f'<tr class="job"><td><code>{_e(job.job_id)}</code></td><td>{_e(job.kind)}</td>'
        f"<td>{_e(job.queue_name or '-')}</td>"
        f"<td>{_e(_span(job.runtime_s) if job.runtime_s is not None else '-')}</td></tr>"
        for job in p.jobs
    )
    return (
        '<table id="jobs"><thead><tr><th>Job</th><th>Kind</th><th>Queue</th>'
        f"<th>Had run (when proposed)</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def _form(p: Proposal, token: str, proof: str) -> str:
    label = f"Cancel {_jobs(len(p.jobs))}" + (" (dry run)" if p.dry_run else "")
    return (
        '<form method="post" id="approve-form">'
        f'<input type="hidden" name="{TOKEN_FIELD}" value="{_e(token)}">'
        f'<input type="hidden" name="{PROOF_FIELD}" value="{_e(proof)}">'
        f'<button type="submit" id="approve">{_e(label)}</button></form>'
    )


def _budget_text(b: BudgetFigures) -> str:
    currency = f" {b.currency}" if b.currency else ""
    parts = [b.name or "budget"]
    if b.cost is not None:
        parts.append(f"cost {_number(b.cost)}{currency}")
    if b.amount is not None:
        parts.append(f"of {_number(b.amount)}{currency}")
    if b.cost is not None and b.amount:
        parts.append(f"({b.cost / b.amount:.0%})")
    return " ".join(parts)


def _number(value: float) -> str:
    return f"{value:,.2f}".rstrip("0").rstrip(".")


def _span(seconds: float) -> str:
    """A duration for people: ``45 s``, ``12 min``, ``2 h 05 min``, ``3 d 4 h``."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def _jobs(count: int) -> str:
    return f"{count} DLI job" + ("" if count == 1 else "s")


def _e(text: str) -> str:
    return escape(text, quote=True)
