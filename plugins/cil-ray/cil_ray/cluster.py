"""Getting onto a Ray cluster safely: a private local cluster, or a remote one with a token.

* :func:`start_local` — a local cluster for this process: token authentication with a fresh
  random token passed *by variable* (never written to disk; a plain ``ray.init()`` writes
  ``~/.ray/auth_token`` readable by every user), its files under a private ``0700`` folder that
  is removed at exit (Ray makes its own session folder ``0777``, so the private parent is what
  keeps logs and sockets away from other users).
* :func:`connect` — an existing cluster (``host:port`` of its head): the token comes from
  ``token=``, ``token_file=`` (must be ``0600``, owned by you), ``RAY_AUTH_TOKEN`` or
  ``RAY_AUTH_TOKEN_PATH``. Before ``ray.init`` the head is *probed* (one gRPC call with a
  deadline): a wrong or missing token is an :class:`~cil_ray.errors.AuthError` within seconds,
  an address where nothing answers a :class:`~cil_ray.errors.ClusterError` (Ray itself retries
  for ~20 s and then reports only "failed to connect").
* :func:`write_token_file` — a new random token in a ``0600`` file (``python -m cil_ray token PATH``).
* :func:`ensure_ray` — what the ``ray:`` backend calls: use the running connection, else connect
  to ``address`` (or ``RAY_ADDRESS``), else start a local cluster.
"""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import stat
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Any

from .errors import AuthError, ClusterError

#: the private folder of a local cluster this process started (removed at exit)
_LOCAL: dict[str, Any] = {}
_LOCK = threading.RLock()

LOCAL_ADDRESSES = (None, "", "local")


# ------------------------------------------------------------------------ tokens
def check_token_file(path: str | os.PathLike) -> Path:
    """Refuse a token file others could read (like ``ssh`` refuses a private key): it must be a
    regular file owned by you with no group/other permission bits."""
    p = Path(path).expanduser()
    try:
        st = p.stat()
    except FileNotFoundError:
        raise AuthError(f"token file {p} does not exist (create one with: python -m cil_ray token {p})") from None
    except OSError as exc:
        raise AuthError(f"cannot read token file {p}: {exc}") from exc
    if not stat.S_ISREG(st.st_mode):
        raise AuthError(f"token file {p} is not a regular file")
    if st.st_mode & 0o077:
        raise AuthError(f"token file {p} is readable by other users (mode {stat.S_IMODE(st.st_mode):04o}); "
                        f"run: chmod 600 {p}")
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        raise AuthError(f"token file {p} belongs to another user (uid {st.st_uid})")
    return p


def read_token_file(path: str | os.PathLike) -> str:
    p = check_token_file(path)
    token = p.read_text().strip()
    if not token:
        raise AuthError(f"token file {p} is empty")
    return token


def write_token_file(path: str | os.PathLike, token: str | None = None, *, force: bool = False) -> Path:
    """Write ``token`` (default: 32 random bytes, hex) to ``path`` with mode ``0600`` (its folder,
    if created, ``0700``). The file is created with that mode, never widened afterwards; an
    existing file is refused unless ``force``."""
    p = Path(path).expanduser()
    if not p.parent.exists():
        p.parent.mkdir(mode=0o700, parents=True)
    token = token or secrets.token_hex(32)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    try:
        fd = os.open(p, flags, 0o600)
    except FileExistsError:
        raise ClusterError(f"token file {p} exists; pass force=True (--force) to replace it") from None
    try:
        os.fchmod(fd, 0o600)  # an existing file replaced with force keeps no wider mode
        os.write(fd, (token + "\n").encode())
    finally:
        os.close(fd)
    return p


def _resolve_token(token: str | None, token_file: str | os.PathLike | None) -> tuple[str | None, str]:
    """The token to use and where it came from (for messages)."""
    if token is not None and token_file is not None:
        raise AuthError("give token or token_file, not both")
    if token is not None:
        return token, "the token= argument"
    if token_file is not None:
        return read_token_file(token_file), f"token file {token_file}"
    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"], "RAY_AUTH_TOKEN"
    if os.environ.get("RAY_AUTH_TOKEN_PATH"):
        path = os.environ["RAY_AUTH_TOKEN_PATH"]
        return read_token_file(path), f"RAY_AUTH_TOKEN_PATH ({path})"
    default = Path.home() / ".ray" / "auth_token"
    if default.exists():
        return read_token_file(default), str(default)
    return None, "no token"


# ------------------------------------------------------------------------ probing a head node
def _channel_credentials() -> Any:
    """TLS credentials when ``RAY_USE_TLS`` is set (the cluster's CA, client cert and key)."""
    if os.environ.get("RAY_USE_TLS", "0").lower() not in ("1", "true"):
        return None
    import grpc

    try:
        from ray._private.tls_utils import load_certs_from_env

        chain, key, ca = load_certs_from_env()
    except Exception as exc:  # missing or unreadable certificate files
        raise ClusterError(f"RAY_USE_TLS is set but the TLS files cannot be loaded: {exc} (set RAY_TLS_SERVER_CERT, "
                           "RAY_TLS_SERVER_KEY, RAY_TLS_CA_CERT)") from exc
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=chain)


def probe(address: str, token: str | None, timeout: float = 5.0) -> str:
    """Ask the head node at ``address`` (``host:port`` of its GCS) for its cluster id with
    ``token``; return the id. Raises :class:`AuthError` if the token is refused or missing,
    :class:`ClusterError` if nothing answers within ``timeout`` seconds."""
    import grpc

    try:
        from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc
    except ImportError:  # pragma: no cover - a Ray without these modules: nothing to probe with
        return ""
    creds = _channel_credentials()
    channel = grpc.secure_channel(address, creds) if creds is not None else grpc.insecure_channel(address)
    metadata = [("authorization", f"Bearer {token}")] if token else []
    try:
        stub = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel)
        reply = stub.GetClusterId(gcs_service_pb2.GetClusterIdRequest(), metadata=metadata, timeout=timeout)
        return reply.cluster_id.hex()
    except grpc.RpcError as exc:
        code = exc.code()
        if code == grpc.StatusCode.UNAUTHENTICATED:
            if token:
                raise AuthError(f"the Ray cluster at {address} refused the token ({exc.details()}); use the "
                                "token the cluster was started with (token_file= or RAY_AUTH_TOKEN_PATH, a 0600 "
                                "file)") from None
            raise AuthError(f"the Ray cluster at {address} requires a token and none was given: pass token_file= "
                            "(a 0600 file) or set RAY_AUTH_TOKEN_PATH") from None
        tls = "" if creds is not None else "; if the cluster uses TLS, set RAY_USE_TLS=1 and the certificate variables"
        raise ClusterError(f"no Ray head node answered at {address} within {timeout:g} s ({code.name}: "
                           f"{exc.details()}): is it running, is the SSH tunnel or VPN up{tls}?") from None
    finally:
        channel.close()


def _accepts_anyone(address: str, timeout: float) -> bool:
    """Whether the head at ``address`` answers a client that sends no token."""
    try:
        probe(address, None, timeout)
    except ClusterError:
        return False
    return True


def _refresh_auth_config() -> None:
    """Make an already imported Ray see changed ``RAY_AUTH_*`` variables."""
    try:
        from ray._raylet import AuthenticationTokenLoader, Config

        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()
    except Exception:  # pragma: no cover - private API moved: Ray reads the variables at init anyway
        pass


# ------------------------------------------------------------------------ connecting
def connect(address: str, *, token: str | None = None, token_file: str | os.PathLike | None = None,
            timeout: float = 5.0, namespace: str | None = None, **init_options: Any) -> dict[str, Any]:
    """Connect this process to the Ray cluster whose head is at ``address`` (``host:port``),
    after checking within ``timeout`` seconds that it answers and accepts the token."""
    import ray

    if ray.is_initialized():
        raise ClusterError("this process is already connected to a Ray cluster; call ray.shutdown() first")
    if address.startswith("ray://"):
        raise ClusterError("ray:// (Ray Client) addresses are not supported by cil-ray: connect to the head's GCS "
                           "address (host:6379, e.g. through an SSH tunnel) or submit a job with the Jobs API "
                           "(see docs/distributed.md)")
    tok, where = _resolve_token(token, token_file)
    cluster_id = probe(address, tok, timeout)
    if tok is None or _accepts_anyone(address, timeout):
        warnings.warn(f"the Ray cluster at {address} accepts clients without a token: anyone who can reach it can "
                      "run code on it (and drive its chips); start it with RAY_AUTH_MODE=token and "
                      "RAY_AUTH_TOKEN_PATH=<0600 file> (docs/distributed.md)", RuntimeWarning, stacklevel=2)
    if tok is not None:
        os.environ["RAY_AUTH_MODE"] = "token"
        if token_file is not None:
            os.environ["RAY_AUTH_TOKEN_PATH"] = str(Path(token_file).expanduser())
            os.environ.pop("RAY_AUTH_TOKEN", None)
        elif token is not None:
            os.environ["RAY_AUTH_TOKEN"] = tok
    _refresh_auth_config()
    try:
        ray.init(address=address, namespace=namespace, logging_level=init_options.pop("logging_level", "WARNING"),
                 **init_options)
    except Exception as exc:
        raise ClusterError(f"ray.init(address={address!r}) failed after the head node answered: {exc}") from exc
    return {"address": address, "cluster_id": cluster_id, "token_from": where}


#: objects up to this size travel inside the call's own message instead of through the shared-memory
#: object store (Ray's default is 100 KiB). A chip call's parameters and spike outputs are mostly
#: 0.1-1 MB: measured on 2 cores, a call sending 262 kB and returning 408 kB took 3.3 ms of Ray
#: transport at the default and 1.35 ms inlined. Set on every node of a cluster you start yourself
#: with ``RAY_max_direct_call_object_size=1048576`` (docs/distributed.md).
INLINE_BYTES = 1 << 20


def start_local(*, num_cpus: int | None = None, resources: dict[str, float] | None = None,
                namespace: str | None = None, **init_options: Any) -> dict[str, Any]:
    """Start a local Ray cluster owned by this process (see the module doc: token by variable,
    files under a private folder removed at exit). Objects up to :data:`INLINE_BYTES` travel
    inline with calls (``_system_config`` in ``init_options`` overrides it)."""
    import ray

    with _LOCK:
        if ray.is_initialized():
            raise ClusterError("this process is already connected to a Ray cluster")
        if "RAY_AUTH_MODE" not in os.environ and not os.environ.get("RAY_AUTH_TOKEN") \
                and not os.environ.get("RAY_AUTH_TOKEN_PATH"):
            # Ray >= 2.52 turns token auth on for a new local cluster and writes a 0644 token file;
            # a token by variable gives the same protection and writes nothing
            os.environ["RAY_AUTH_MODE"] = "token"
            os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
        _refresh_auth_config()  # Ray caches these variables at import: make it see the current ones
        parent = tempfile.mkdtemp(prefix="cil-ray-")  # 0700: Ray's own folder below it becomes 0777
        init_options.setdefault("include_dashboard", False)
        init_options.setdefault("logging_level", "WARNING")
        init_options.setdefault("_node_ip_address", "127.0.0.1")  # a local cluster listens on loopback only
        init_options["_system_config"] = {"max_direct_call_object_size": INLINE_BYTES,
                                          **(init_options.get("_system_config") or {})}
        try:
            ray.init(num_cpus=num_cpus, resources=resources, namespace=namespace,
                     _temp_dir=os.path.join(parent, "r"), **init_options)
        except Exception as exc:
            shutil.rmtree(parent, ignore_errors=True)
            raise ClusterError(f"cannot start a local Ray cluster: {exc}") from exc
        _LOCAL["dir"] = parent
        if not _LOCAL.get("atexit"):
            atexit.register(shutdown)
            _LOCAL["atexit"] = True
        return {"address": "local", "temp_dir": parent}


def shutdown() -> None:
    """Disconnect from Ray; if this process started the local cluster, stop it and remove its
    private folder."""
    with _LOCK:
        try:
            import ray

            if ray.is_initialized():
                ray.shutdown()
        finally:
            d = _LOCAL.pop("dir", None)
            if d:
                shutil.rmtree(d, ignore_errors=True)


def ensure_ray(address: str | None = None, *, token_file: str | os.PathLike | None = None,
               namespace: str | None = None) -> None:
    """Connected already: nothing to do (``address`` must then be left out). Else connect to
    ``address`` (or ``RAY_ADDRESS``), or start a local cluster."""
    import ray

    with _LOCK:
        if ray.is_initialized():
            return
        address = address if address is not None else os.environ.get("RAY_ADDRESS")
        if address in LOCAL_ADDRESSES:
            start_local(namespace=namespace)
        elif address == "auto":  # inside a Ray job or on a cluster node: Ray finds the head itself
            ray.init(address="auto", namespace=namespace, logging_level="WARNING")
        else:
            connect(address, token_file=token_file, namespace=namespace)


__all__ = ["connect", "start_local", "shutdown", "ensure_ray", "probe", "write_token_file", "read_token_file",
           "check_token_file"]
