"""A throwaway PostgreSQL server on loopback for the tests (Debian's `postgresql` package)."""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path


from browser import free_port
from conftest import missing


def postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


@contextmanager
def postgres_server():
    """initdb + pg_ctl in a fresh folder, trust authentication on 127.0.0.1; yields a SQLAlchemy URL."""
    with tempfile.TemporaryDirectory(prefix="bear-pg-") as tmp:  # not under pytest's root-only folder
        yield from _run(Path(tmp))


def _run(tmp: Path):
    bin_dir = postgres_bin()
    if bin_dir is None:
        missing("PostgreSQL", "sudo apt-get install postgresql")
    # PostgreSQL refuses to run as root: as root, run it as the `postgres` user the package creates.
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    data = tmp / "pgdata"
    data.mkdir()
    if as_user:
        shutil.chown(tmp, "postgres")
        shutil.chown(data, "postgres")
    port = free_port()
    subprocess.run([*as_user, str(bin_dir / "initdb"), "-D", str(data), "-U", "bear", "--auth=trust"],
                   check=True, capture_output=True)
    subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-w", "-l", str(tmp / "pg.log"), "-o",
                    f"-p {port} -k {tmp} -c listen_addresses=127.0.0.1", "start"], check=True, capture_output=True)
    try:
        yield f"postgresql+psycopg://bear@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"], capture_output=True)
