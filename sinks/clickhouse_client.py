"""ClickHouse client factory: one DSN, embedded chDB or a server.

``chdb:///<dir>`` opens the embedded engine (in-process, on disk); ``http(s)://`` talks
to a ClickHouse server. chDB allows one engine per process, so clients for the same
embedded DSN are shared within a process.
"""

from __future__ import annotations

import threading
from pathlib import Path
from urllib.parse import urlsplit

import clickhouse_connect
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError as DriverError

from streams.errors import ClickHouseError
from streams.settings import check_clickhouse_dsn

_embedded: dict[str, Client] = {}
_lock = threading.Lock()


def is_embedded(dsn: str) -> bool:
    return urlsplit(dsn).scheme == "chdb"


def connect(dsn: str) -> Client:
    """A client for ``dsn``; raises ClickHouseError with one clear line if unreachable."""
    check_clickhouse_dsn(dsn)
    try:
        if is_embedded(dsn):
            with _lock:
                client = _embedded.get(dsn)
                if client is None:
                    Path(urlsplit(dsn).path).mkdir(parents=True, exist_ok=True)
                    client = clickhouse_connect.get_client(dsn=dsn)
                    _embedded[dsn] = client
                return client
        return clickhouse_connect.get_client(dsn=dsn, connect_timeout=5,
                                             send_receive_timeout=60)
    except DriverError as exc:
        where = urlsplit(dsn)
        raise ClickHouseError(f"ClickHouse at {where.scheme}://{where.hostname or ''}"
                              f"{where.path if is_embedded(dsn) else ''} is not reachable: "
                              f"{str(exc).splitlines()[0]}") from None
