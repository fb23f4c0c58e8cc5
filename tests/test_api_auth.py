"""Tests for /api/auth: register, login, me, bearer tokens and the signing secret."""

from __future__ import annotations

import re
import stat
from datetime import timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from argon2 import PasswordHasher

from realcast_box.api.security import (
    ACCESS_TOKEN_AUDIENCE,
    SecretFileError,
    create_access_token,
    load_or_create_secret,
)
from realcast_box.appkeys import JWT_SECRET
from realcast_box.config import Config
from realcast_box.live.hub import Hub
from realcast_box.store import users as user_store
from realcast_box.store.db import Database
from realcast_box.store.ids import utc_now

TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
REGISTRATION = {
    "email": "developer@example.com",
    "password": "SecurePass123!",
    "full_name": "John Developer",
}


async def register(client: TestClient, **fields: Any) -> Any:
    return await client.post("/api/auth/register", json={**REGISTRATION, **fields})


async def get_me(client: TestClient, token: str) -> Any:
    return await client.get(
        "/api/auth/me", headers={"Authorization": f"Bearer {token}"}
    )


async def test_register_returns_user(api_client: TestClient) -> None:
    response = await register(api_client)
    body = await response.json()
    assert response.status == 201
    assert set(body) == {"id", "email", "full_name", "created_at"}
    assert body["id"].startswith("user_")
    assert body["email"] == "developer@example.com"
    assert body["full_name"] == "John Developer"
    assert TIMESTAMP.fullmatch(body["created_at"])


async def test_register_full_name_optional(api_client: TestClient) -> None:
    response = await api_client.post(
        "/api/auth/register", json={"email": "a@example.com", "password": "12345678"}
    )
    body = await response.json()
    assert response.status == 201
    assert body["full_name"] == ""


async def test_register_stores_argon2id_hash(
    api_client: TestClient, database: Database
) -> None:
    await register(api_client)
    user = await user_store.get_user_by_email(database, "developer@example.com")
    assert user is not None
    assert user["password_hash"].startswith("$argon2id$")
    assert REGISTRATION["password"] not in user["password_hash"]


async def test_register_duplicate_email_conflict(api_client: TestClient) -> None:
    await register(api_client)
    response = await register(api_client, email="Developer@EXAMPLE.com")
    body = await response.json()
    assert response.status == 409
    assert body["status_code"] == 409
    assert "already registered" in body["detail"]


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"email": "plainaddress"}, "email: invalid email address"),
        ({"email": "a@b"}, "email: invalid email address"),
        ({"email": "a b@example.com"}, "email: invalid email address"),
        ({"email": "@example.com"}, "email: invalid email address"),
        ({"email": "a@example..com"}, "email: invalid email address"),
        ({"email": 42}, "email: must be a string"),
        ({"email": "a" * 250 + "@example.com"}, "email: must be at most 254"),
        ({"password": "short"}, "password: must be at least 8 characters"),
        ({"password": "x" * 1025}, "password: must be at most 1024 characters"),
        ({"password": None}, "password: must be a string"),
        ({"full_name": "n" * 201}, "full_name: must be at most 200 characters"),
        ({"full_name": ["x"]}, "full_name: must be a string"),
        ({"is_admin": True}, "is_admin: unknown field"),
    ],
)
async def test_register_invalid_field_rejected(
    api_client: TestClient, fields: dict, expected: str
) -> None:
    response = await register(api_client, **fields)
    body = await response.json()
    assert response.status == 400
    assert body["detail"].startswith(expected)


@pytest.mark.parametrize("missing", ["email", "password"])
async def test_register_missing_field_rejected(
    api_client: TestClient, missing: str
) -> None:
    fields = {key: value for key, value in REGISTRATION.items() if key != missing}
    response = await api_client.post("/api/auth/register", json=fields)
    body = await response.json()
    assert response.status == 400
    assert body["detail"] == f"{missing}: field required"


@pytest.mark.parametrize("length", [8, 1024])
async def test_register_password_length_bounds_accepted(
    api_client: TestClient, length: int
) -> None:
    response = await register(api_client, password="p" * length)
    assert response.status == 201


async def test_login_returns_token_and_user(api_client: TestClient) -> None:
    registered = await (await register(api_client)).json()
    response = await api_client.post(
        "/api/auth/login",
        json={"email": "DEVELOPER@example.com", "password": "SecurePass123!"},
    )
    body = await response.json()
    assert response.status == 200
    assert body["token_type"] == "bearer"
    assert body["user"] == {
        "id": registered["id"],
        "email": "developer@example.com",
        "full_name": "John Developer",
    }
    assert body["access_token"].count(".") == 2


async def test_login_token_has_configured_expiry(
    api_client: TestClient, api_app: web.Application, config: Config
) -> None:
    await register(api_client)
    response = await api_client.post(
        "/api/auth/login", json={k: REGISTRATION[k] for k in ("email", "password")}
    )
    token = (await response.json())["access_token"]
    claims = jwt.decode(
        token,
        api_app[JWT_SECRET],
        algorithms=["HS256"],
        audience=ACCESS_TOKEN_AUDIENCE,
    )
    assert claims["exp"] - claims["iat"] == config.token_expiry_minutes * 60


async def test_login_wrong_password_and_unknown_email_same(
    api_client: TestClient,
) -> None:
    await register(api_client)
    wrong_password = await api_client.post(
        "/api/auth/login",
        json={"email": "developer@example.com", "password": "not the password"},
    )
    unknown_email = await api_client.post(
        "/api/auth/login",
        json={"email": "nobody@example.com", "password": "SecurePass123!"},
    )
    assert wrong_password.status == 401
    assert unknown_email.status == 401
    assert await wrong_password.json() == await unknown_email.json()
    assert wrong_password.headers["WWW-Authenticate"].startswith("Bearer")


class CountingHasher(PasswordHasher):
    """A cheap PasswordHasher that counts verify() calls."""

    def __init__(self) -> None:
        super().__init__(time_cost=1, memory_cost=8, parallelism=1)
        self.verify_calls = 0

    def verify(self, hash: str | bytes, password: str | bytes) -> bool:
        self.verify_calls += 1
        return super().verify(hash, password)


async def test_login_unknown_email_still_verifies(
    aiohttp_client, build_app, config, database
):
    hasher = CountingHasher()
    client = await aiohttp_client(build_app(config, database, password_hasher=hasher))
    response = await client.post(
        "/api/auth/login",
        json={"email": "nobody@example.com", "password": "SecurePass123!"},
    )
    assert response.status == 401
    assert hasher.verify_calls == 1


async def test_login_missing_password_rejected(api_client: TestClient) -> None:
    response = await api_client.post(
        "/api/auth/login", json={"email": "developer@example.com"}
    )
    body = await response.json()
    assert response.status == 400
    assert body["detail"] == "password: field required"


async def test_login_rehashes_with_new_parameters(
    api_client: TestClient,
    aiohttp_client: Any,
    build_app: Any,
    config: Config,
    database: Database,
    hub: Hub,
) -> None:
    await register(api_client)
    stronger = PasswordHasher(time_cost=2, memory_cost=16, parallelism=1)
    client = await aiohttp_client(
        build_app(config, database, hub, password_hasher=stronger)
    )
    response = await client.post(
        "/api/auth/login", json={k: REGISTRATION[k] for k in ("email", "password")}
    )
    user = await user_store.get_user_by_email(database, "developer@example.com")
    assert response.status == 200
    assert user is not None
    assert "m=16,t=2,p=1" in user["password_hash"]


async def test_me_returns_current_user(make_user: Any) -> None:
    user = await make_user("me@example.com")
    response = await get_me(user.client, user.token)
    body = await response.json()
    assert response.status == 200
    assert body["id"] == user.id
    assert body["email"] == "me@example.com"
    assert body["full_name"] == "Test User"
    assert TIMESTAMP.fullmatch(body["created_at"])


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": ""},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer   "},
        {"Authorization": "Bearer not-a-jwt"},
    ],
    ids=["missing", "empty", "no-token", "blank-token", "garbage"],
)
async def test_me_bad_authorization_header_unauthorized(
    api_client: TestClient, headers: dict
) -> None:
    response = await api_client.get("/api/auth/me", headers=headers)
    body = await response.json()
    assert response.status == 401
    assert body["status_code"] == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


async def test_me_unknown_basic_credentials_unauthorized(
    api_client: TestClient,
) -> None:
    response = await api_client.get(
        "/api/auth/me", headers={"Authorization": "Basic dXNlcjpwYXNz"}
    )
    body = await response.json()
    assert response.status == 401
    assert body["detail"] == "invalid API key or secret"
    assert response.headers["WWW-Authenticate"].startswith("Basic")


def claims_for(user_id: str, **changes: Any) -> dict[str, Any]:
    now = utc_now()
    claims = {
        "sub": user_id,
        "aud": ACCESS_TOKEN_AUDIENCE,
        "iat": now,
        "exp": now + timedelta(minutes=5),
    }
    claims.update(changes)
    return {key: value for key, value in claims.items() if value is not None}


async def test_me_expired_token_unauthorized(
    make_user: Any, api_app: web.Application
) -> None:
    user = await make_user()
    token = create_access_token(
        user.id,
        api_app[JWT_SECRET],
        expiry_minutes=1,
        now=utc_now() - timedelta(hours=1),
    )
    response = await get_me(user.client, token)
    body = await response.json()
    assert response.status == 401
    assert "expired" in body["detail"]
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


async def test_me_tampered_token_unauthorized(make_user: Any) -> None:
    victim = await make_user()
    attacker = await make_user()
    header, _payload, signature = attacker.token.split(".")
    _header, victim_payload, _signature = victim.token.split(".")
    tampered = f"{header}.{victim_payload}.{signature[::-1]}"
    swapped = f"{header}.{victim_payload}.{signature}"
    for token in (tampered, swapped):
        response = await get_me(attacker.client, token)
        assert response.status == 401


async def test_me_alg_none_token_unauthorized(make_user: Any) -> None:
    user = await make_user()
    token = jwt.encode(claims_for(user.id), None, algorithm="none")
    response = await get_me(user.client, token)
    assert response.status == 401


async def test_me_other_secret_unauthorized(make_user: Any) -> None:
    user = await make_user()
    token = jwt.encode(claims_for(user.id), b"k" * 32, algorithm="HS256")
    response = await get_me(user.client, token)
    assert response.status == 401


@pytest.mark.parametrize(
    "changes",
    [{"aud": "another-service"}, {"aud": None}, {"exp": None}, {"sub": None}],
    ids=["wrong-audience", "no-audience", "no-expiry", "no-subject"],
)
async def test_me_incomplete_claims_unauthorized(
    make_user: Any, api_app: web.Application, changes: dict
) -> None:
    user = await make_user()
    token = jwt.encode(
        claims_for(user.id, **changes), api_app[JWT_SECRET], algorithm="HS256"
    )
    response = await get_me(user.client, token)
    assert response.status == 401


async def test_me_deleted_user_unauthorized(make_user: Any, database: Database) -> None:
    user = await make_user()
    await user_store.delete_user(database, user.id)
    response = await get_me(user.client, user.token)
    body = await response.json()
    assert response.status == 401
    assert "no longer exists" in body["detail"]


def test_secret_created_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "secrets" / "jwt_secret"
    secret = load_or_create_secret(path)
    mode = stat.S_IMODE(path.stat().st_mode)
    assert len(secret) == 32
    assert mode == 0o600
    assert path.read_bytes() == secret


def test_secret_reused_on_second_load(tmp_path: Path) -> None:
    path = tmp_path / "jwt_secret"
    first = load_or_create_secret(path)
    second = load_or_create_secret(path)
    assert first == second


def test_secret_leaves_no_temporary_files(tmp_path: Path) -> None:
    load_or_create_secret(tmp_path / "jwt_secret")
    assert [entry.name for entry in tmp_path.iterdir()] == ["jwt_secret"]


def test_secret_short_file_rejected(tmp_path: Path) -> None:
    path = tmp_path / "jwt_secret"
    path.write_bytes(b"")
    with pytest.raises(SecretFileError, match="delete it to create a new one"):
        load_or_create_secret(path)


async def test_token_valid_after_restart(
    make_user: Any,
    aiohttp_client: Any,
    build_app: Any,
    config: Config,
    database: Database,
) -> None:
    user = await make_user("restart@example.com")
    await database.close()

    reopened = await Database.open(database.path)
    try:
        client = await aiohttp_client(build_app(config, reopened))
        me = await get_me(client, user.token)
        login = await client.post(
            "/api/auth/login",
            json={"email": "restart@example.com", "password": user.password},
        )
    finally:
        await reopened.close()
    assert me.status == 200
    assert login.status == 200
