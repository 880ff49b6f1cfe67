"""Token-bucket rate limits: a burst is allowed, then the caller waits for the refill; keys are separate."""

from __future__ import annotations

from gateway.ratelimit import RateLimiter


def test_a_burst_is_allowed_then_refused_until_tokens_refill() -> None:
    limiter = RateLimiter(per_minute=60, burst=3)
    assert [limiter.allow("ip:1", now=100.0) for _ in range(4)] == [True, True, True, False]
    assert not limiter.allow("ip:1", now=100.5)
    assert limiter.allow("ip:1", now=101.1), "one token a second at 60 per minute"


def test_callers_do_not_share_buckets() -> None:
    limiter = RateLimiter(per_minute=1, burst=1)
    assert limiter.allow("user:a", now=0.0)
    assert not limiter.allow("user:a", now=1.0)
    assert limiter.allow("user:b", now=1.0)


def test_memory_is_bounded_by_forgetting_the_least_recent_callers() -> None:
    limiter = RateLimiter(per_minute=1, burst=1, max_keys=2)
    for key in ("a", "b", "c"):
        limiter.allow(key, now=0.0)
    assert limiter.allow("a", now=0.0), "'a' was forgotten, so it starts with a full bucket again"
    assert limiter.retry_after_s() == 60


def test_uploads_past_the_limit_get_429_with_retry_after_before_any_work() -> None:
    from fastapi.testclient import TestClient

    from gateway.app import create_app
    from infra.settings import Settings

    app = create_app(Settings(rate_limit_uploads_per_min=2, _env_file=None))
    client = TestClient(app, raise_server_exceptions=False)  # no lifespan: the limit acts before any route
    statuses = [client.post("/avatar/register", headers={"x-forwarded-for": "ignored"}).status_code
                for _ in range(3)]
    assert statuses[:2] != [429, 429] and statuses[2] == 429
    refused = client.post("/avatar/register")
    assert refused.json()["code"] == "rate_limited" and int(refused.headers["retry-after"]) >= 1


def test_a_refused_post_carries_the_security_headers_and_other_requests_pass_the_limit() -> None:
    from fastapi.testclient import TestClient

    from gateway.app import create_app
    from gateway.post_limits import limited_kind
    from infra.settings import Settings

    client = TestClient(create_app(Settings(rate_limit_requests_per_min=1, _env_file=None)),
                        raise_server_exceptions=False)
    client.post("/avatar/process")
    refused = client.post("/avatar/process")
    assert refused.status_code == 429 and refused.headers["x-frame-options"] == "DENY"
    assert "content-security-policy" in refused.headers
    assert client.get("/avatar/process").status_code != 429, "only POSTs count"
    assert limited_kind({"type": "websocket", "path": "/avatar/process"}) is None
    assert limited_kind({"type": "http", "method": "POST", "path": "/webrtc/offer"}) == "connections"


def test_an_unknown_route_answers_in_the_uniform_error_format() -> None:
    from fastapi.testclient import TestClient

    from gateway.app import create_app
    from infra.settings import Settings

    response = TestClient(create_app(Settings(_env_file=None))).get("/no/such/page")
    assert response.status_code == 404 and response.json() == {"code": "http_404", "message": "Not Found"}
