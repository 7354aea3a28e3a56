"""Schemathesis hooks for relay-control: TC3-HMAC-SHA256-sign every request.

Loaded by `scripts/schemathesis` through SCHEMATHESIS_HOOKS. Credentials come from
EDGERELAY_SECRET_ID / EDGERELAY_SECRET_KEY (and EDGERELAY_SERVICE, default "trtc").

The signature is computed on the final prepared request (a `requests` auth object runs after
the body is serialized), over exactly the path, query, Host and body that are sent. Like
`control::client`, it also signs a random X-TC-Nonce header so that two identical
requests in the same second are not refused as replays.

On import the signer checks itself against Tencent's documented example signature
(72e494ea...); a mismatch aborts the run. `python3 schemathesis_hooks.py` runs only that
self-test (schemathesis need not be installed).
"""

import datetime
import hashlib
import hmac
import os
import secrets
import time
import urllib.parse

ALGORITHM = "TC3-HMAC-SHA256"
NONCE_HEADER = "X-TC-Nonce"
DEFAULT_SERVICE = "trtc"


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode("utf-8"), hashlib.sha256).digest()


def utc_date(timestamp: int) -> str:
    return datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc).strftime("%Y-%m-%d")


def tc3_sign(secret_id, secret_key, service, timestamp, method, path, query, headers, payload, signed):
    """Returns (signature hex, Authorization value).

    `headers` maps lowercase names to values; `signed` is the sorted list of lowercase names
    to sign. Values are trimmed and lowercased, as control::tc3 does.
    """
    canonical_headers = "".join(f"{name}:{headers[name].strip().lower()}\n" for name in signed)
    signed_headers = ";".join(signed)
    canonical_request = "\n".join(
        [method, path, query, canonical_headers, signed_headers, hashlib.sha256(payload).hexdigest()]
    )
    date = utc_date(timestamp)
    scope = f"{date}/{service}/tc3_request"
    string_to_sign = "\n".join(
        [ALGORITHM, str(timestamp), scope, hashlib.sha256(canonical_request.encode("utf-8")).hexdigest()]
    )
    k_date = _hmac(("TC3" + secret_key).encode("utf-8"), date)
    k_service = hmac.new(k_date, service.encode("utf-8"), hashlib.sha256).digest()
    k_signing = hmac.new(k_service, b"tc3_request", hashlib.sha256).digest()
    signature = hmac.new(k_signing, string_to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
    authorization = (
        f"{ALGORITHM} Credential={secret_id}/{scope}, SignedHeaders={signed_headers}, Signature={signature}"
    )
    return signature, authorization


def self_test():
    """Tencent Cloud API v3's documented example (the same vector control::tc3 tests)."""
    body = '{"Limit": 1, "Filters": [{"Values": ["\\u672a\\u547d\\u540d"], "Name": "instance-name"}]}'
    want = "72e494ea809ad7a8c8f7a4507b9bddcbaa8e581f516e8da2f66e2c5a96525168"
    sig, auth = tc3_sign(
        "AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE",
        "Gu5t9xGARNpq86cd98joQYCN3EXAMPLE",
        "cvm",
        1551113065,
        "POST",
        "/",
        "",
        {"content-type": "application/json; charset=utf-8", "host": "cvm.tencentcloudapi.com"},
        body.encode("utf-8"),
        ["content-type", "host"],
    )
    if sig != want:
        raise AssertionError(f"TC3 self-test failed: got {sig}, want {want}")
    expected_auth = (
        "TC3-HMAC-SHA256 Credential=AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE/2019-02-25/cvm/tc3_request, "
        f"SignedHeaders=content-type;host, Signature={want}"
    )
    if auth != expected_auth:
        raise AssertionError(f"TC3 self-test: Authorization {auth!r}")
    # A changed body must change the signature (the check can fail).
    other, _ = tc3_sign(
        "AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE", "Gu5t9xGARNpq86cd98joQYCN3EXAMPLE", "cvm", 1551113065,
        "POST", "/", "",
        {"content-type": "application/json; charset=utf-8", "host": "cvm.tencentcloudapi.com"},
        body.encode("utf-8") + b" ", ["content-type", "host"],
    )
    if other == want:
        raise AssertionError("TC3 self-test: the body is not signed")


class Tc3Auth:
    """A `requests` auth callable: signs the prepared request in place."""

    def __init__(self, secret_id, secret_key, service):
        self.secret_id = secret_id
        self.secret_key = secret_key
        self.service = service

    def __call__(self, request):
        parts = urllib.parse.urlsplit(request.url)
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode("utf-8")
        # Send exactly what we sign: explicit Host, a content type even without a body.
        request.headers["Host"] = parts.netloc
        if "Content-Type" not in request.headers:
            request.headers["Content-Type"] = "application/json"
        request.headers[NONCE_HEADER] = secrets.token_hex(8)
        timestamp = int(time.time())
        request.headers["X-TC-Timestamp"] = str(timestamp)
        headers = {k.lower(): v for k, v in request.headers.items()}
        _, authorization = tc3_sign(
            self.secret_id, self.secret_key, self.service, timestamp, request.method,
            parts.path or "/", parts.query, headers, body,
            ["content-type", "host", NONCE_HEADER.lower()],
        )
        request.headers["Authorization"] = authorization
        return request


self_test()

try:
    import schemathesis
except ImportError:  # the standalone self-test
    schemathesis = None

if schemathesis is not None:
    _AUTH = Tc3Auth(
        os.environ["EDGERELAY_SECRET_ID"],
        os.environ["EDGERELAY_SECRET_KEY"],
        os.environ.get("EDGERELAY_SERVICE", DEFAULT_SERVICE),
    )

    # A SecretId that is well-formed but never issued (relay-control mints 36 characters).
    _STAND_IN_SECRET_ID = "AKID" + "0" * 32

    @schemathesis.hook
    def before_call(context, case, kwargs):
        """Signs the request, after keeping the run's own key out of its path.

        Schemathesis reuses values seen in responses, so it finds our own SecretId in
        GET /v1/keys and would revoke or rotate the key that signs the run (revoking is
        allowed once it has created another admin key), turning every later request into
        a 401. A `filter_path_parameters` hook is not applied in every phase (the coverage
        phase revoked the key in CI), so the case's path parameter is replaced here, just
        before the request is sent, in every phase. Other keys (which it creates) remain
        fair game.
        """
        params = case.path_parameters
        if params and params.get("secret_id") == _AUTH.secret_id:
            params["secret_id"] = _STAND_IN_SECRET_ID
        kwargs["auth"] = _AUTH

    @schemathesis.check
    def signed_request_accepted(ctx, response, case):
        """Every request is correctly signed: a 401 means the signing (ours or the server's
        verification) is wrong, and the operation was not really tested."""
        if response.status_code == 401:
            request = response.request
            raise AssertionError(
                f"a correctly signed request was refused: {response.text} "
                f"(sent {request.method} {request.url} with {dict(request.headers)})"
            )


if __name__ == "__main__":
    print("TC3 self-test passed")
