"""How one process reaches S3: the server, the region and the credentials, and the client.

:class:`S3Config` is the one configuration object of ``s3://`` locations (endpoint,
profile, region, CA bundle, threads, timeouts).  :class:`S3Access` resolves it the way
boto3 would, but cheaply where the answer needs no configuration file: the endpoint from
the argument or ``AWS_ENDPOINT_URL_S3``/``AWS_ENDPOINT_URL``, the region from the argument
or ``AWS_DEFAULT_REGION``, and the key pair from ``AWS_ACCESS_KEY_ID``/
``AWS_SECRET_ACCESS_KEY`` (the first place botocore looks, unless a profile is named).
Anything else (profiles, shared files, SSO, instance roles, endpoints set in a profile) is
left to botocore's own resolution, imported only then.

The botocore client is made on first use only (:attr:`S3Access.client`): importing botocore
and building an S3 client costs 0.3-0.4 s of CPU per process, and a worker whose requests
all succeed on the direct path (:mod:`taurus_tools.transfer.s3_direct`) never needs it.
:func:`make_client` builds a client with the settings that bite on S3-compatible servers
(checked 2026-12):

* path-style addressing for any endpoint that is not AWS (virtual-host style needs DNS
  names per bucket, which ``127.0.0.1`` and most on-premise servers do not have);
* ``request_checksum_calculation`` and ``response_checksum_validation`` set to
  ``"when_required"`` for such endpoints: boto3 >= 1.36 sends CRC32 trailers by default, which
  some servers store inside the object or refuse;
* ``max_pool_connections`` covers the worker's threads (below it: "Connection pool is full");
* timeouts and a bounded retry count, so an unreachable endpoint fails in bounded time and a
  wrong secret is refused at once (``InvalidAccessKeyId``/``SignatureDoesNotMatch`` are not
  retried by botocore).

Credentials never pass through this module's arguments, messages or reprs.
"""

from __future__ import annotations

import os
import threading
import urllib.parse
from dataclasses import dataclass
from typing import Any, NamedTuple, Optional, Tuple

from ..errors import ConfigurationError
from .s3_direct import DirectRequests, usable

__all__ = ["S3Access", "S3Config", "make_client"]


@dataclass(frozen=True)
class S3Config:
    """How to reach S3: one object for the endpoint, the profile and the concurrency.

    Parameters
    ----------
    endpoint_url : str, optional
        The server, e.g. ``https://s3.example.org``; default: boto3's own resolution
        (``AWS_ENDPOINT_URL_S3``, ``AWS_ENDPOINT_URL``, the profile's ``endpoint_url``, else AWS).
    profile : str, optional
        A profile of ``~/.aws/config``/``credentials``; default: boto3's (``AWS_PROFILE``).
    region : str, optional
        The region requests are signed for; default: boto3's (``AWS_DEFAULT_REGION``, the
        profile's ``region``), else ``us-east-1``.
    ca_bundle : str, optional
        A file of CA certificates for an ``https`` endpoint; default: boto3's
        (``AWS_CA_BUNDLE``, the profile's ``ca_bundle``, else the bundled one).
    threads : int
        Concurrent transfers per worker process (1 to 256).
    connect_timeout_s, read_timeout_s : float
        Per request; an unreachable endpoint fails after about ``connect_timeout_s`` times
        the attempts.
    max_attempts : int
        Attempts per request (botocore's "standard" retry mode; 1 = no retry).
    """

    endpoint_url: Optional[str] = None
    profile: Optional[str] = None
    threads: int = 8
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 60.0
    max_attempts: int = 3
    region: Optional[str] = None
    ca_bundle: Optional[str] = None

    def __post_init__(self) -> None:
        if self.endpoint_url is not None:
            parsed = urllib.parse.urlsplit(self.endpoint_url)
            if parsed.scheme not in ("http", "https") or not parsed.netloc:
                raise ConfigurationError(
                    f"endpoint_url must be http(s)://HOST[:PORT], got {self.endpoint_url!r}"
                )
        if isinstance(self.threads, bool) or not isinstance(self.threads, int) or not 1 <= self.threads <= 256:
            raise ConfigurationError(f"threads must be an int from 1 to 256, got {self.threads!r}")
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int) or self.max_attempts < 1:
            raise ConfigurationError(f"max_attempts must be an int >= 1, got {self.max_attempts!r}")
        for name in ("connect_timeout_s", "read_timeout_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ConfigurationError(f"{name} must be a number of seconds > 0, got {value!r}")
        for name in ("region", "ca_bundle"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ConfigurationError(f"{name} must be a non-empty str or None, got {value!r}")


def _is_aws(endpoint: Optional[str]) -> bool:
    if endpoint is None:
        return True
    host = urllib.parse.urlsplit(endpoint).hostname or ""
    return host == "amazonaws.com" or host.endswith(".amazonaws.com") or host.endswith(".amazonaws.com.cn")


class _KeyPair(NamedTuple):
    """Credentials as botocore's frozen ones (the fields the signer reads)."""

    access_key: str
    secret_key: str
    token: Optional[str]

    def __repr__(self) -> str:  # never the secret, should one end up in a traceback
        return f"_KeyPair(access_key={self.access_key!r}, secret_key=<hidden>, token=<hidden>)"


def _env_key_pair(config: S3Config) -> Optional[_KeyPair]:
    """The key pair of the environment where botocore would take it from there first (no
    profile named, no expiry: refreshable variables are botocore's business), else None."""
    env = os.environ
    access, secret = env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")
    if config.profile is not None or not access or not secret or env.get("AWS_CREDENTIAL_EXPIRATION"):
        return None
    return _KeyPair(access, secret, env.get("AWS_SESSION_TOKEN") or env.get("AWS_SECURITY_TOKEN") or None)


def _env_endpoint() -> Optional[str]:
    """The endpoint the environment sets for S3 (what botocore takes before any file)."""
    env = os.environ
    if env.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "").strip().lower() == "true":
        return None
    return env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or None


class S3Access:
    """The server, region and credentials of one :class:`S3Config`, and its client on first use.

    Attributes
    ----------
    endpoint : str or None
        The server (None: AWS, as botocore resolves it).
    region : str
    """

    def __init__(self, config: Optional[S3Config] = None) -> None:
        self.config = config if config is not None else S3Config()
        self._lock = threading.Lock()
        self._session: Any = None
        self._client: Any = None
        self._key_pair = _env_key_pair(self.config)
        if self.config.profile is not None:
            self.session  # a profile that does not exist is refused here, before any request
        endpoint = self.config.endpoint_url or _env_endpoint()
        region = self.config.region or os.environ.get("AWS_DEFAULT_REGION") or None
        if region is None:
            region = self.session.get_config_variable("region") or "us-east-1"
        if endpoint is None:
            # botocore resolves the profile's endpoint_url (and its services section)
            # itself: ask it, so that the settings below follow the server actually used.
            import botocore.config

            probe = self.session.create_client("s3", config=botocore.config.Config(region_name=region))
            endpoint = None if _is_aws(probe.meta.endpoint_url) else probe.meta.endpoint_url
        self.endpoint: Optional[str] = endpoint
        self.region: str = region

    def __repr__(self) -> str:
        return f"S3Access(endpoint={self.endpoint or 'AWS'}, region={self.region}, profile={self.config.profile})"

    @property
    def session(self) -> Any:
        """botocore's session for this profile (imported and made on first use)."""
        if self._session is None:
            import botocore.exceptions
            import botocore.session

            session = botocore.session.Session(profile=self.config.profile)
            try:
                session.get_scoped_config()  # reads the profile (named, or AWS_PROFILE): a missing one fails here
            except botocore.exceptions.ProfileNotFound:
                raise ConfigurationError(
                    _no_such_profile(self.config.profile or os.environ.get("AWS_PROFILE", ""))
                ) from None
            self._session = session
        return self._session

    @property
    def client(self) -> Any:
        """The botocore S3 client (made on first use; thread-safe)."""
        with self._lock:
            if self._client is None:
                self._client = self._make_client()
            return self._client

    def _make_client(self) -> Any:
        import botocore.config

        config = self.config
        options: Any = dict(
            region_name=self.region,
            max_pool_connections=max(10, config.threads + 2),
            connect_timeout=config.connect_timeout_s,
            read_timeout=config.read_timeout_s,
            retries={"mode": "standard", "max_attempts": config.max_attempts},
        )
        if not _is_aws(self.endpoint):
            options.update(
                s3={"addressing_style": "path"},
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            )
        return self.session.create_client(
            "s3", endpoint_url=self.endpoint, verify=config.ca_bundle, config=botocore.config.Config(**options)
        )

    def credentials(self) -> Optional[Any]:
        """The credentials to sign with now (access_key, secret_key, token), None if there are none."""
        if self._key_pair is not None:
            return self._key_pair
        found = self.session.get_credentials()
        return None if found is None else found.get_frozen_credentials()

    def ca_certs(self) -> Optional[str]:
        """The CA bundle botocore would verify an https endpoint with (None for http)."""
        if urllib.parse.urlsplit(self.endpoint or "").scheme != "https":
            return None
        chosen = (
            self.config.ca_bundle or os.environ.get("AWS_CA_BUNDLE") or self.session.get_config_variable("ca_bundle")
        )
        if chosen:
            return str(chosen)
        from botocore.httpsession import get_cert_path

        return str(get_cert_path(True))

    def direct(self, threads: int) -> Optional[DirectRequests]:
        """The direct path to this server (see :mod:`taurus_tools.transfer.s3_direct`), or
        None where it may not be used (AWS, a proxy, ``TAURUS_TOOLS_S3_DIRECT=0``, no
        credentials: everything then goes through the client, which says why)."""
        if not usable(self.endpoint) or os.environ.get("TAURUS_TOOLS_S3_DIRECT", "1") == "0":
            return None
        try:
            if self.credentials() is None:
                return None
        except Exception:  # (a failing credential_process, say): the client will say what is wrong
            return None
        assert self.endpoint is not None  # usable() checked it
        return DirectRequests(
            self.endpoint,
            self.region,
            self.credentials,
            threads=threads,
            connect_timeout=self.config.connect_timeout_s,
            read_timeout=self.config.read_timeout_s,
            ca_certs=self.ca_certs(),
        )


def make_client(config: S3Config = S3Config()) -> Tuple[Any, Optional[str]]:
    """A botocore S3 client for ``config``, and the endpoint it talks to (None: AWS).

    boto3's session is not used (it would import s3transfer and boto3's resource layer,
    0.1-0.3 s that a listing or a small-object worker does not need); the client, its
    credentials and its endpoint resolution are botocore's either way.
    """
    access = S3Access(config)
    return access.client, access.endpoint


def _no_such_profile(name: str) -> str:
    """Where a profile was looked for, and which profiles are there."""
    import botocore.session

    files = [
        os.environ.get("AWS_CONFIG_FILE", "~/.aws/config"),
        os.environ.get("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials"),
    ]
    try:
        known = sorted(botocore.session.Session().available_profiles)
    except Exception:  # an unreadable file: its own error comes with the next call
        known = []
    there = f"profiles there: {', '.join(known)}" if known else "no profile is defined there"
    return f"the AWS profile {name!r} is in neither {files[0]} nor {files[1]}; {there}"
