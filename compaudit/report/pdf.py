"""Optional PDF: print the HTML report with headless Chromium (``--print-to-pdf``).

Chromium is an optional system tool, found on ``PATH`` (``chromium``,
``chromium-browser``, ``google-chrome``...) or named by ``$COMPAUDIT_CHROMIUM``. It runs
with a fresh profile and with networking features off; the page itself allows no
requests (its Content-Security-Policy), so printing never touches the network.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from compaudit._atomic import atomic_path
from compaudit.errors import AuditInputError

__all__ = ["CHROMIUM_FLAGS", "find_chromium", "print_pdf"]

#: Flags for a sandbox-free, network-quiet, one-shot headless run (containers, CI).
CHROMIUM_FLAGS: tuple[str, ...] = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage",
)
_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


def find_chromium() -> str:
    """Path of a Chromium executable; :class:`AuditInputError` with the fix when none."""
    configured = os.environ.get("COMPAUDIT_CHROMIUM")
    if configured:
        if shutil.which(configured) is None:
            raise AuditInputError(f"$COMPAUDIT_CHROMIUM={configured}: not an executable; "
                                  "expected the path of a Chromium or Chrome binary")
        return configured
    for name in _NAMES:
        found = shutil.which(name)
        if found:
            return found
    raise AuditInputError("--pdf: no Chromium found on PATH (looked for "
                          f"{', '.join(_NAMES)}); install it (e.g. 'apt-get install chromium') "
                          "or set $COMPAUDIT_CHROMIUM to its path, or leave out --pdf")


def print_pdf(html_path: str | Path, pdf_path: str | Path, *, chromium: str | None = None,
              timeout: float = 180.0) -> Path:
    """Print ``html_path`` to ``pdf_path`` (written atomically) with headless Chromium.

    Parameters
    ----------
    html_path
        The report file.
    pdf_path
        Where the PDF goes.
    chromium
        Executable to use; found with :func:`find_chromium` when ``None``.
    timeout
        Seconds before Chromium is stopped.
    """
    exe = chromium or find_chromium()
    source = Path(html_path).resolve()
    with tempfile.TemporaryDirectory(prefix="compaudit-chromium-") as profile, \
            atomic_path(pdf_path) as tmp:
        cmd = [exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--no-pdf-header-footer",
               f"--print-to-pdf={tmp}", source.as_uri()]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                                  check=False)
        except subprocess.TimeoutExpired as err:
            raise RuntimeError(f"Chromium did not finish printing {source} within "
                               f"{timeout:g} s") from err
        head = tmp.read_bytes()[:5] if tmp.is_file() else b""
        if proc.returncode != 0 or head != b"%PDF-":
            tail = "\n".join((proc.stderr or "").strip().splitlines()[-8:])
            raise RuntimeError(f"Chromium failed to print {source} to PDF (exit "
                               f"{proc.returncode}):\n{tail}")
    return Path(pdf_path)
