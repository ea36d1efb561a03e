"""The simulator's own SDK-HMAC-SHA256 verifier (``dli_simulator/signature.py``), in process:
it accepts what the official SDK signer and the function's client sign, and refuses a request
changed after signing. The requests reach it as the simulator's HTTP server hands them over
(the raw path, the query parsed from the wire)."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from types import SimpleNamespace
from urllib.parse import parse_qsl, quote, urlencode

import pytest

from cancel_handler.config import Secret
from cancel_handler.dli.auth import AkSkAuth, Call, EnvCredentials
from dli_simulator import signature
from dli_simulator.auth import AkSkVerifier, SignedRequest
from dli_simulator.model import ApiError, Headers

AK, SK = "SIGNATURETESTAK0001", "signature-test-secret-key"
PID = "0123456789abcdef0123456789abcdef"
HOST = "127.0.0.1:8999"
JOB = "5a3a2c2e-1111-4222-8333-944455556666"


@dataclass(frozen=True)
class Case:
    method: str
    path: str  # as sent on the wire (path parameters already percent-encoded)
    query: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    content_type: str = "application/json"


CASES = {
    "delete a job": Case("DELETE", f"/v1.0/{PID}/jobs/{JOB}"),
    "list with a query": Case(
        "GET", f"/v1.0/{PID}/jobs", (("queue_name", "etl"), ("page-size", "100"))
    ),
    "awkward query values": Case(
        "GET", f"/v2.0/{PID}/batches", (("b", "2"), ("a", "x y+z=,*~"), ("a", "1"), ("c", "ü"))
    ),
    "encoded path parameter": Case("DELETE", f"/v1.0/{PID}/jobs/a%3Ab%40c%20d"),
    "json body": Case("POST", f"/v1.0/{PID}/streaming/jobs/stop", body=b'{"job_ids": [7, 9]}'),
    "unsigned payload": Case(
        "POST", f"/v1.0/{PID}/jobs/submit-job", body=b"SELECT 1", content_type="text/plain"
    ),
}

Signer = Callable[[Case, str | None], SignedRequest]


def received(case: Case, headers: dict[str, str]) -> SignedRequest:
    """What the simulator's server hands the verifier: the query as parsed from the wire."""
    wire_query = urlencode(sorted(case.query), quote_via=quote, safe="~")
    pairs = parse_qsl(wire_query, keep_blank_values=True)
    return SignedRequest(case.method, case.path, pairs, Headers(headers), case.body)


@pytest.fixture(scope="module")
def sdk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    """The official signer (test-only); it writes ``$HOME/.huaweicloud`` when imported."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOME", str(tmp_path_factory.mktemp("sdk-home")))
        from huaweicloudsdkcore.auth.credentials import BasicCredentials
        from huaweicloudsdkcore.sdk_request import SdkRequest

        yield SimpleNamespace(BasicCredentials=BasicCredentials, SdkRequest=SdkRequest)


def official(sdk: SimpleNamespace) -> Signer:
    def sign(case: Case, security_token: str | None) -> SignedRequest:
        request = sdk.SdkRequest(
            method=case.method,
            schema="http",
            host=HOST,
            resource_path=case.path,
            query_params=copy.deepcopy(list(case.query)),
            header_params={"Content-Type": case.content_type},
            body=case.body or None,
        )
        credentials = sdk.BasicCredentials(AK, SK, PID)
        if security_token is not None:
            credentials.with_security_token(security_token)
        credentials.sign_request(request)
        return received(case, {k: str(v) for k, v in request.header_params.items()})

    return sign


def ours(case: Case, security_token: str | None) -> SignedRequest:
    token = Secret(security_token) if security_token is not None else None
    auth = AkSkAuth(EnvCredentials(Secret(AK), Secret(SK), token))
    call = Call(case.method, case.path, PID, query=case.query, body=case.body)
    return received(case, auth.headers(call, HOST))


@pytest.fixture(params=["official SDK", "our client"])
def signer(request: pytest.FixtureRequest, sdk: SimpleNamespace) -> Signer:
    chosen: Signer = official(sdk) if request.param == "official SDK" else ours
    return chosen


def verify(request: SignedRequest, tokens: set[str] | None = None) -> str:
    return AkSkVerifier({AK: SK}, tokens, clock_skew_s=900).verify(request, PID)


@pytest.mark.parametrize("case", CASES.values(), ids=list(CASES))
def test_a_signed_request_is_accepted(signer: Signer, case: Case) -> None:
    assert verify(signer(case, None)) == AK


def test_a_signed_security_token_is_accepted(signer: Signer) -> None:
    request = signer(CASES["delete a job"], "session-token")

    assert "x-security-token" in request.headers["Authorization"]
    assert verify(request, {"session-token"}) == AK


TAMPERINGS: dict[str, Callable[[SignedRequest], SignedRequest]] = {
    "another job": lambda r: replace(r, raw_path=r.raw_path.rsplit("/", 1)[0] + "/other-job"),
    "another method": lambda r: replace(r, method="GET" if r.method != "GET" else "DELETE"),
    "a query value": lambda r: replace(r, query_pairs=[("queue_name", "other"), *r.query_pairs]),
    "the body": lambda r: replace(r, body=r.body + b" "),
    "a signed header": lambda r: replace(r, headers=Headers({**r.headers, "Host": "elsewhere"})),
    "the signature": lambda r: replace(
        r,
        headers=Headers({**r.headers, "Authorization": r.headers["Authorization"][:-4] + "0000"}),
    ),
}


@pytest.mark.parametrize("tamper", TAMPERINGS.values(), ids=list(TAMPERINGS))
def test_a_request_changed_after_signing_is_refused(
    signer: Signer, tamper: Callable[[SignedRequest], SignedRequest]
) -> None:
    request = signer(CASES["json body"], None)
    assert verify(request) == AK

    with pytest.raises(ApiError, match="signature does not match") as refused:
        verify(tamper(request))

    assert refused.value.status == 401 and refused.value.code == "DLI.0014"


def test_another_secret_key_is_refused(signer: Signer) -> None:
    request = signer(CASES["list with a query"], None)

    with pytest.raises(ApiError, match="signature does not match"):
        AkSkVerifier({AK: "another-secret"}, None, clock_skew_s=900).verify(request, PID)


def test_the_reference_vector() -> None:
    """Vector A of the DLI API notes, produced by the official signer (huaweicloudsdkcore
    3.1.219): only ``X-Sdk-Date`` and the ``Host`` the signer adds are signed."""
    headers = Headers({"Host": "dli.eu-de.otc.t-systems.com", "X-Sdk-Date": "20261128T120000Z"})
    canonical = signature.canonical_request(
        "DELETE", f"/v1.0/{PID}/jobs/{JOB}", [], headers, ["host", "x-sdk-date"], b""
    )

    assert canonical == (
        f"DELETE\n/v1.0/{PID}/jobs/{JOB}/\n\nhost:dli.eu-de.otc.t-systems.com\n"
        "x-sdk-date:20261128T120000Z\n\nhost;x-sdk-date\n"
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )
    assert signature.sign("SK_EXAMPLE", "20261128T120000Z", canonical) == (
        "3bf5d1d6ccc3e02400db75c8549d07ee71b9140f3d88c420bf2c346f2716f6d5"
    )
