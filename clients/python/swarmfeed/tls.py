"""TLS for ``https://`` servers: which certificate authorities are trusted, and how a
certificate failure is told apart from a server that is down.

The system's roots by default; a CA file given as ``ca_file=`` (or
``SWARMFEED_CA_FILE``, like the command line's ``--ca-file``) for a server whose
certificate a private CA signed; or a whole :class:`ssl.SSLContext` given as
``context=``. A certificate that does not verify is :class:`TlsError`: waiting
would not fix it, so it is reported, not retried as an outage.
"""

from __future__ import annotations

import os
import ssl
from typing import Optional

#: The environment variable read when no ``ca_file`` is given.
CA_FILE_ENV = "SWARMFEED_CA_FILE"


class TlsError(Exception):
    """The server's certificate was not trusted (or the CA file could not be used)."""


def context_for(url: str, ca_file: Optional[str] = None, context: Optional[ssl.SSLContext] = None) -> Optional[ssl.SSLContext]:
    """The TLS context for ``url``: None for ``http://``; ``context`` if given; else
    one that trusts ``ca_file`` (or ``$SWARMFEED_CA_FILE``), else the system's roots.
    Raises :class:`TlsError` naming a CA file that cannot be read or is not PEM."""
    if not url.lower().startswith("https://"):
        return None
    if context is not None:
        return context
    path = ca_file if ca_file is not None else os.environ.get(CA_FILE_ENV) or None
    if path is None:
        return ssl.create_default_context()
    try:
        return ssl.create_default_context(cafile=os.fspath(path))
    except (OSError, ssl.SSLError) as e:
        raise TlsError("the CA file {} cannot be used: {}".format(path, e)) from e


def certificate_problem(error: BaseException) -> Optional[str]:
    """What is wrong with the server's certificate, if ``error`` (or what it wraps,
    as urllib does) is a failed verification; else None."""
    seen = 0
    while error is not None and seen < 4:
        if isinstance(error, ssl.SSLCertVerificationError):
            return "{} (trust its CA with ca_file= or {})".format(
                error.verify_message or error.reason or error, CA_FILE_ENV
            )
        error = getattr(error, "reason", None) if not isinstance(getattr(error, "reason", None), str) else None
        seen += 1
    return None
